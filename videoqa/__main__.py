"""``python -m videoqa``: the same as the ``videoqa`` command."""

import sys

from .cli import main

sys.exit(main())
