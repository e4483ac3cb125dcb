"""``python -m scardio``: the command line (see scardio.cli)."""

import sys

from .cli import main

sys.exit(main())
