"""`python -m xmod_explorer`: the same as the `xmod-explorer` command."""

import sys

from xmod_explorer.cli import main

sys.exit(main())
