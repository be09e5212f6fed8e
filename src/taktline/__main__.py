"""`python -m taktline`."""

from taktline.cli import main

raise SystemExit(main())
