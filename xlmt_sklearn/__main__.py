"""``python -m xlmt_sklearn``: the ``xlmt-sklearn`` command line (see :mod:`xlmt_sklearn.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
