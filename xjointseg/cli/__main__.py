"""``python -m xjointseg.cli``: the ``xjointseg`` command."""

import sys

from .commands import main

sys.exit(main())
