"""Every keyword option of the public entry points, given values of the wrong kind: each
call either works or raises an XJointSegError — never a bare ValueError, TypeError,
KeyError or AttributeError from deep inside (the census of test_user_mistakes.py, made
exhaustive over options)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import xjointseg
from xjointseg import errors, segment
from xjointseg.change import area, consistent, first_period, fraction, growth, new_isa
from xjointseg.cube import open_cube, to_zarr
from xjointseg.data import demo_item_path
from xjointseg.export import to_cog
from xjointseg.testing import synthetic_scene, toy_model

MODEL = toy_model()
ITEM = str(demo_item_path())
DS = synthetic_scene(16, 16, times=1)
ISA = segment(DS, MODEL).compute()
IMAGES = (DS.isel(time=0), synthetic_scene(16, 16, seed=1))
ISA2 = xr.concat([ISA, ISA.assign_coords(time=ISA.time + np.timedelta64(365, "D"))], "time")

#: values of every wrong kind: text, negative, zero, fractional, not a number, infinite,
#: containers, None, a bool, an arbitrary object
JUNK = ["x", -1, 0, 2.5, math.nan, math.inf, [], {}, (1, 2), None, True, object()]


def _calls(tmp_path):
    store = tmp_path / "c.zarr"
    return {
        "segment": (lambda **kw: segment(DS, MODEL, **kw).compute(), segment),
        "to_zarr": (lambda **kw: to_zarr(ISA, tmp_path / "new.zarr", **kw), to_zarr),
        "open_cube": (lambda **kw: open_cube(_cube(store), **kw), open_cube),
        "area": (lambda **kw: area(ISA, **kw), area),
        "growth": (lambda **kw: growth(ISA2, **kw), growth),
        "first_period": (lambda **kw: first_period(ISA2, **kw), first_period),
        "fraction": (lambda **kw: fraction(ISA, **kw), fraction),
        "new_isa": (
            lambda **kw: new_isa(ISA2.isel(time=[0]), ISA2.isel(time=[1]), images=IMAGES, **kw),
            new_isa,
        ),
        "consistent": (lambda **kw: consistent(ISA2, **kw), consistent),
        "load_model": (lambda **kw: xjointseg.load_model("jointseg", **kw), xjointseg.load_model),
        "load_sentinel2": (
            lambda **kw: xjointseg.load_sentinel2(ITEM, **{"periods": 2017, **kw}),
            xjointseg.load_sentinel2,
        ),
        "to_cog": (lambda **kw: to_cog(ISA, tmp_path / "new.tif", **kw), to_cog),
    }


def _cube(store):
    if not store.exists():
        to_zarr(ISA, store)
    return store


# the data arguments themselves are covered by the census; here: every option
SKIP = {
    "obj",
    "model",
    "isa",
    "store",  # also load_sentinel2's staging store: junk text would be a folder here
    "cube",
    "before",
    "after",
    "images",
    "name_or_path",
    "regions",
    "catalog_or_items",
    "path",
}
# built, not computed: computing reads every pixel of the scene for each of the many calls
LAZY_ONLY = {"load_sentinel2"}
ENTRY_POINTS = [
    "segment",
    "to_zarr",
    "open_cube",
    "area",
    "growth",
    "first_period",
    "fraction",
    "new_isa",
    "consistent",
    "load_model",
    "load_sentinel2",
    "to_cog",
]


@pytest.mark.filterwarnings("ignore::xjointseg.sentinel2.Sentinel2Warning")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_options_raise_xjointseg_errors_only(tmp_path, entry):
    import inspect
    import shutil

    call, func = _calls(tmp_path)[entry]
    bare = []
    for name in inspect.signature(func).parameters:
        if name in SKIP:
            continue
        for value in JUNK:
            try:
                result = call(**{name: value})
                if hasattr(result, "compute") and entry not in LAZY_ONLY:
                    result.compute()
            except errors.XJointSegError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                bare.append(f"{entry}({name}={value!r}): {type(exc).__name__}: {exc}"[:200])
            shutil.rmtree(tmp_path / "new.zarr", ignore_errors=True)
            (tmp_path / "new.tif").unlink(missing_ok=True)
    assert not bare, "\n".join(bare)


#: data arguments of every kind a user might pass by mistake
JUNK_DATA = {
    "text": "x",
    "int": 5,
    "nan": math.nan,
    "None": None,
    "list": [1, 2],
    "dict": {},
    "ndarray": np.zeros((4, 4)),
    "1-D DataArray": xr.DataArray(np.zeros(4)),
    "empty Dataset": xr.Dataset(),
    "bool": True,
    "bytes": b"x",
}


def _public_functions():
    import inspect

    import xjointseg.change
    import xjointseg.cube
    import xjointseg.export
    import xjointseg.metrics
    import xjointseg.plots

    seen = set()
    for module in (xjointseg, xjointseg.change, xjointseg.cube, xjointseg.export):
        yield from _functions(module, seen, inspect)
    for module in (xjointseg.metrics, xjointseg.plots):
        yield from _functions(module, seen, inspect)


def _functions(module, seen, inspect):
    for name in getattr(module, "__all__", []):
        func = getattr(module, name)
        if callable(func) and not inspect.isclass(func) and id(func) not in seen:
            seen.add(id(func))
            yield f"{module.__name__}.{name}", func


@pytest.mark.filterwarnings("ignore::xjointseg.sentinel2.Sentinel2Warning")
def test_every_public_function_refuses_junk_data_with_xjointseg_errors(tmp_path, monkeypatch):
    """The CI step on bare tracebacks: every public function, given junk for each of its
    required arguments (the others valid), works or raises an XJointSegError."""
    import inspect

    monkeypatch.chdir(tmp_path)  # junk text as a store or a path is written here

    bare, tried = [], 0
    for qualname, func in _public_functions():
        params = inspect.signature(func).parameters.values()
        positional = [
            p for p in params if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        keywords = {
            p.name: None for p in params if p.default is p.empty and p.kind is p.KEYWORD_ONLY
        }
        for i in range(len(positional)):
            for label, junk in JUNK_DATA.items():
                args = [ISA] * len(positional)
                args[i] = junk
                tried += 1
                try:
                    result = func(*args, **keywords)
                    if hasattr(result, "compute"):
                        result.compute()
                except errors.XJointSegError:
                    pass
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    name = positional[i].name
                    bare.append(f"{qualname}({name}={label}): {type(exc).__name__}: {exc}"[:200])
    assert tried > 300
    assert not bare, "\n".join(bare)
