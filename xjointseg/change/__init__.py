"""Urban change from ISA maps and cubes.

* :mod:`.tables`: ISA area per period and region, growth between consecutive periods;
* :mod:`.maps`: the period in which each pixel first became ISA, ISA fractions on a coarser
  grid;
* :mod:`.evidence`: new ISA between two dates from spectral evidence and built-up context;
* :mod:`.temporal`: an optional temporal rule over a cube's periods (ISA does not revert);
* :mod:`.reference`: 10 m reference products (ESA WorldCover) on a cube's grid;
* :mod:`._zonal`: the per-block, per-region counts the tables are made of.

Everything works block by block on the maps' dask chunks, so no 1 m scene is ever held in
memory whole: tables come from per-block pixel counts summed in a tree, maps stay lazy.
"""

from ..schema import NEVER
from .evidence import (
    DEFAULT_RULE,
    F1_RULE,
    NIR_RULE,
    RGB_RULE,
    ChangeRule,
    change_evidence,
    new_isa,
    new_isa_between,
)
from .maps import first_period, fraction
from .reference import read_worldcover
from .tables import DEFAULT_CLASSES, area, growth
from .temporal import consistent

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_RULE",
    "F1_RULE",
    "ChangeRule",
    "NEVER",
    "NIR_RULE",
    "RGB_RULE",
    "area",
    "change_evidence",
    "consistent",
    "first_period",
    "fraction",
    "growth",
    "new_isa",
    "new_isa_between",
    "read_worldcover",
]
