"""``python -m taktline_simulators``: the same as ``taktline-sim``."""

import sys

from taktline_simulators.cli import main

sys.exit(main())
