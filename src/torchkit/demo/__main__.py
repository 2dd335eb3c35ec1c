"""``python -m torchkit.demo``: see :mod:`torchkit.demo`."""

import sys

from torchkit.demo import main

if __name__ == "__main__":
    sys.exit(main())
