"""``python -m explorer``: the ``observer-explorer`` command line."""

import sys

from explorer.cli import main

sys.exit(main())
