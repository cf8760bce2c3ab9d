"""xjointseg: 1 m impervious-surface maps from 10 m Sentinel-2, lazily, with xarray and Dask.

``import xjointseg`` registers the ``.isa`` accessor on xarray Datasets and DataArrays. It
does not import torch: the models (``Model``, ``load_model``, ``save_model``) load on first
use, so loading data, cubes and the analysis stay light.
"""

from . import accessor as _accessor  # noqa: F401  (registers .isa)
from . import metrics  # noqa: F401  (xjointseg.metrics.scores)
from ._version import __version__
from .change import new_isa
from .cube import open_cube
from .engine import segment
from .errors import XJointSegError
from .sentinel2 import load_sentinel2

_LAZY = {"Model", "load_model", "save_model"}  # from .models, which imports torch


def __getattr__(name: str):
    if name in _LAZY:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'xjointseg' has no attribute {name!r}")


__all__ = [
    "Model",
    "XJointSegError",
    "__version__",
    "load_model",
    "load_sentinel2",
    "new_isa",
    "open_cube",
    "save_model",
    "segment",
]
