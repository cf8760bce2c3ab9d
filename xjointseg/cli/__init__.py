"""The command line (``xjointseg demo | map | train | info``): the parser and one function
per subcommand (:mod:`.commands`), the demo (:mod:`.demo`) and the resumable step that writes
a map into a cube, shared by ``demo`` and ``map`` (:mod:`.pipeline`)."""

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
