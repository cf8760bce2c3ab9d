"""xjointseg: 1 m impervious-surface maps from 10 m Sentinel-2, lazily, with xarray and Dask.

``import xjointseg`` registers the ``.isa`` accessor on xarray Datasets and DataArrays. It
does not import torch: the models (``Model``, ``load_model``, ``save_model``) load on first
use, so loading data, cubes and the analysis stay light.
"""

__version__ = "0.1.0"

from . import accessor as _accessor  # noqa: E402,F401  (registers .isa)
from . import metrics  # noqa: E402,F401  (xjointseg.metrics.scores)
from .change import new_isa  # noqa: E402
from .cube import open_cube  # noqa: E402
from .errors import XJointSegError  # noqa: E402
from .segment import segment  # noqa: E402
from .sentinel2 import load_sentinel2  # noqa: E402

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
