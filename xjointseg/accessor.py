"""The ``.isa`` accessor on Dataset and DataArray: stateless, each method a pure function.

Methods are the module-level functions bound to the object, with their real signatures and
docstrings (``functools.wraps``), so Jupyter's Shift-Tab shows every parameter.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import xarray as xr

from .change import area, consistent, first_period, fraction, growth, new_isa_between
from .cube import to_zarr
from .engine import segment
from .export import to_cog
from .plots import plot_first_period, plot_map


def _bind(func: Callable) -> Callable:
    """Make ``func(obj, ...)`` a method whose visible signature drops ``obj``."""

    @functools.wraps(func)
    def method(self, *args, **kwargs):
        return func(self._obj, *args, **kwargs)

    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    # functools.wraps' result type does not declare __signature__, which inspect reads
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[params[0].replace(name="self"), *params[1:]]
    )
    return method


class _ISAAccessor:
    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    segment = _bind(segment)
    to_zarr = _bind(to_zarr)
    to_cog = _bind(to_cog)
    area = _bind(area)
    growth = _bind(growth)
    first_period = _bind(first_period)
    fraction = _bind(fraction)
    consistent = _bind(consistent)
    new_isa = _bind(new_isa_between)
    plot_map = _bind(plot_map)
    plot_first_period = _bind(plot_first_period)


@xr.register_dataset_accessor("isa")
class ISADatasetAccessor(_ISAAccessor):
    """``ds.isa``: impervious-surface mapping on a Dataset of Sentinel-2 bands."""


@xr.register_dataarray_accessor("isa")
class ISADataArrayAccessor(_ISAAccessor):
    """``da.isa``: impervious-surface mapping on a DataArray (bands, or an ISA map)."""
