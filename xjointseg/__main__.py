"""``python -m xjointseg``: the ``xjointseg`` command."""

import sys

from .cli.commands import main

sys.exit(main())
