"""``python -m taktline_edge`` is ``taktline-edge``."""

import sys

from taktline_edge.cli import main

sys.exit(main())
