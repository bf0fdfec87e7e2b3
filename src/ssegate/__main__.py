"""``python -m ssegate``: the same as the ``ssegate`` command."""

import sys

from ssegate.cli import main

sys.exit(main())
