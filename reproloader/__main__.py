"""``python -m reproloader``: the same as the ``reproloader`` command."""

import sys

from reproloader.cli import main

sys.exit(main())
