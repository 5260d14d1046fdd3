"""``python -m refprune COMMAND``: the command line of :mod:`refprune.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
