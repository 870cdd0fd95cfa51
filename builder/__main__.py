"""Entry point for ``python3 -m builder``."""

import sys

from builder.cli import main

sys.exit(main())
