"""``python -m iclnb`` = the ``iclnb`` command."""

import sys

from .cli import main

sys.exit(main())
