"""What flows between the stages, defined once: the ISA map's codes, the Sentinel-2 band
table, period keys, and the checks every stage applies at its boundary.

An ISA map (what ``segment`` returns, what ``to_zarr`` stores, what the analyses read):

* ``uint8``, values ``0`` not ISA, ``1`` ISA, ``255`` nodata (nothing else);
* dims ``(y, x)`` or ``(period, y, x)`` on a regular, axis-aligned grid whose CRS is
  projected (the analyses turn pixels into km² from the grid's linear unit);
* attrs naming the model (``model``, ``model_sha256``) and, where known, the Sentinel-2
  items it was made from (``source_items``: a JSON mapping of period label to item ids);
* coordinate ``isa_fingerprint`` along the period dimension (or scalar): what defines each
  period's computation (input identity, model, tile, halo), so that writing the same map
  again, with any chunking, is recognised as the same period.

This module imports no torch and no other xjointseg module except :mod:`errors`.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import xarray as xr

from .errors import BandError, CRSError, CubeInputError, FingerprintError, OptionError

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox

NOT_ISA = 0
ISA = 1
NEVER = 254  # first_period: valid in some period, ISA in none
NODATA = 255
FLAG_VALUES = (NOT_ISA, ISA)
FLAG_MEANINGS = "not_impervious impervious"
MAP_VALUES = (NOT_ISA, ISA, NODATA)

INPUT_RESOLUTION = 10.0  # metres: what the networks were built for
FINGERPRINT_COORD = "isa_fingerprint"

# Sentinel-2 band names and the names archives also use for them (odc-stac / Earth Search
# common names and asset keys).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B01": ("coastal",),
    "B02": ("blue",),
    "B03": ("green",),
    "B04": ("red",),
    "B05": ("rededge1", "rededge"),
    "B06": ("rededge2",),
    "B07": ("rededge3",),
    "B08": ("nir", "nir08"),
    "B8A": ("nir08", "rededge4", "narrow_nir"),
    "B09": ("nir09", "watervapor"),
    "B11": ("swir16",),
    "B12": ("swir22",),
}


def band_names(band: str) -> tuple[str, ...]:
    """``band`` and every alias archives use for it (``B04`` -> ``B04, red``)."""
    return (band, *BAND_ALIASES.get(band.upper(), ()))


def find_band(band: str, available: Sequence[Hashable]) -> Hashable | None:
    """The one name in ``available`` that holds ``band``; None if none does.

    Raises :class:`BandError` when several do (``B04`` and ``red``): picking one silently
    could feed the network a band the user did not mean.
    """
    lookup: dict[str, list[Hashable]] = {}
    for a in available:
        lookup.setdefault(str(a).lower(), []).append(a)
    found = [a for name in band_names(band) for a in lookup.get(name.lower(), [])]
    found = list(dict.fromkeys(found))
    if len(found) > 1:
        names = ", ".join(repr(str(f)) for f in found)
        raise BandError(
            f"band {band} is there more than once ({names}): keep one, e.g. "
            f"ds.drop_vars({str(found[1])!r}) or ds.drop_vars({str(found[0])!r})"
        )
    return found[0] if found else None


# --- units --------------------------------------------------------------------------------


def metres_per_unit(crs: Any, what: str = "the input") -> float:
    """Metres in one unit of a projected CRS's axes; :class:`CRSError` for degrees or none.

    Examples
    --------
    >>> metres_per_unit("EPSG:32633"), round(metres_per_unit("EPSG:2263"), 6)
    (1.0, 0.304801)
    """
    from odc.geo.crs import CRS

    if crs is None:
        raise CRSError(f"{what} has no CRS: attach it, e.g. obj.odc.assign_crs('EPSG:32633')")
    crs = CRS(crs) if not isinstance(crs, CRS) else crs
    if crs.geographic:
        raise CRSError(
            f"{what} is in {crs} (degrees): pixel sizes and areas need a projected CRS in "
            "metres. Reproject first, e.g. obj.odc.reproject('utm') (odc-geo)"
        )
    factors = {a.unit_conversion_factor for a in crs.proj.axis_info[:2]}
    if len(factors) != 1:
        raise CRSError(f"{what} is in {crs}, whose two axes have different units: reproject it")
    return float(factors.pop())


#: How far a CRS's pixels may be from their nominal size on the ground at the scene's
#: centre: UTM stays within 0.1 % in its zone, Web Mercator is 1.6x at 52 N.
SCALE_TOLERANCE = {"linear": 0.05, "areal": 0.01}


def check_ground_scale(gbox: Any, what: str, kind: str = "linear") -> None:
    """Refuse a grid whose pixels are not their nominal size on the ground.

    ``kind="linear"``: a pixel's side (what a 10 m network needs), ``"areal"``: its area
    (what ``area`` and ``growth`` count; an equal-area CRS passes anywhere). Measured at the
    grid's centre with PROJ's scale factors (``pyproj.Proj.get_factors``).
    """
    from pyproj import Proj, Transformer

    crs = gbox.crs
    cx, cy = gbox.extent.centroid.coords[0]
    lon, lat = Transformer.from_crs(crs.proj, "EPSG:4326", always_xy=True).transform(cx, cy)
    try:
        factors = Proj(crs.proj).get_factors(lon, lat)
    except Exception:  # noqa: BLE001 - a CRS PROJ cannot differentiate: nothing to check
        return
    scale = (
        factors.areal_scale
        if kind == "areal"
        else max(factors.meridional_scale, factors.parallel_scale)
    )
    if not np.isfinite(scale) or abs(scale - 1) <= SCALE_TOLERANCE[kind]:
        return
    size = "areas" if kind == "areal" else "pixel sides"
    name = f"EPSG:{crs.epsg}" if crs.epsg else crs.proj.name
    raise CRSError(
        f"{what} is in {name}, whose {size} at the grid's centre ({lat:.1f}, {lon:.1f}) are "
        f"{scale:.2f} x their size on the ground (a Mercator-like projection?): reproject to "
        "the local UTM zone, e.g. obj.odc.reproject('utm', resolution=...) (odc-geo), or an "
        "equal-area CRS for areas"
    )


# --- grids --------------------------------------------------------------------------------


def checked_geobox(
    obj: xr.DataArray,
    error: type[Exception],
    no_grid: str,
    *,
    rotated: str | None = None,
    not_north_up: str | None = None,
) -> GeoBox:
    """The GeoBox of ``obj``; else ``error`` with the caller's message: ``no_grid`` when it
    has none (coordinates that give no affine grid, ground control points), ``rotated``
    (default ``no_grid``) when odc-geo finds it rotated or sheared, and ``not_north_up``, if
    given, when y increases or x decreases."""
    from odc.geo.geobox import GeoBox

    gbox = obj.odc.geobox
    if not isinstance(gbox, GeoBox):
        raise error(no_grid)
    if not gbox.axis_aligned:
        raise error(rotated or no_grid)
    if not_north_up is not None and (gbox.affine.e > 0 or gbox.affine.a < 0):
        raise error(not_north_up)
    return gbox


# --- periods ------------------------------------------------------------------------------


def _check_period_labels(labels: np.ndarray, pdim: Any) -> None:
    """Period labels a cube can key and order: no missing label, no time zone (xarray
    keeps a zone-aware time as objects, which would be stored as text)."""
    import pandas as pd

    missing = [i for i, v in enumerate(labels.tolist()) if v is None or pd.isna(v)]
    if missing:
        raise CubeInputError(
            f"period {missing[0]} along {pdim!r} has no label (NaT, NaN or None): give every "
            "period its date or name"
        )
    if any(isinstance(v, pd.Timestamp | datetime.datetime) and v.tzinfo for v in labels):
        _refuse_zoned(pdim)
    if labels.dtype.kind == "m" or any(isinstance(v, datetime.timedelta) for v in labels.tolist()):
        raise CubeInputError(
            f"the period labels along {pdim!r} are durations: label each period by its date "
            "(e.g. 2017-06-01), its year or a name"
        )


def _refuse_zoned(pdim: Any) -> NoReturn:
    raise CubeInputError(
        f"the period labels along {pdim!r} carry a time zone: cubes store times in UTC "
        f"without one, e.g. cube.assign_coords({pdim}=cube.indexes[{str(pdim)!r}]."
        "tz_convert(None))"
    )


_MISSING = {"datetime": "NaT", "int": "-1", "float": "nan", "str": ""}


def period_kind(values: np.ndarray) -> str:
    """How period labels are keyed: ``datetime``, ``int``, ``float`` or ``str``."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return "datetime"
    if np.issubdtype(values.dtype, np.integer):
        return "int"
    if np.issubdtype(values.dtype, np.floating):
        return "float"
    return "str"


def period_key(value: Any, kind: str) -> str:
    """A stable text key for a period coordinate value (what cube records use)."""
    if kind == "datetime":
        return str(np.datetime64(value, "ns"))
    if kind == "int":
        return str(int(value))
    if kind == "float":
        return repr(float(value))
    return str(value)


def key_value(key: str | None, kind: str) -> Any:
    """The coordinate value of a period key (inverse of :func:`period_key`)."""
    key = _MISSING[kind] if key is None else key
    if kind == "datetime":
        return np.datetime64(key, "ns")
    if kind == "int":
        return int(key)
    if kind == "float":
        return float(key)
    return key


# --- identity of a period's data ---------------------------------------------------------


def in_memory(data: Any) -> bool:
    """True for numpy data, and for dask arrays that only cut in-memory arrays into chunks
    (``.chunk()`` of loaded data): reading them runs no task of anyone's."""
    import dask.array as da

    if not isinstance(data, da.Array):
        return True
    graph = data.__dask_graph__()
    return all(isinstance(getattr(v, "value", v), np.ndarray) for v in graph.values())


#: Lazy arrays whose values a recipe fixes (load_sentinel2: the items, grid and options of
#: each period), by dask array name: one digest per period. Dask names an array by its
#: graph, so a known name is that load untouched; the same load chunked otherwise has
#: another name and the same digests.
_RECIPES: dict[str, tuple[str, ...]] = {}


def remember_recipe(data: Any, period_digests: Sequence[str]) -> None:
    """Record that the dask array ``data`` holds what ``period_digests`` describe."""
    name = getattr(data, "name", None)
    if isinstance(name, str):
        _RECIPES[name] = tuple(period_digests)


def recipe_digests(arrays: Sequence[Any]) -> list[str] | None:
    """Per period, one digest of the recipes that made ``arrays`` (in their order), when
    every one of them is an untouched array :func:`remember_recipe` saw; else None."""
    found: list[tuple[str, ...]] = []
    for a in arrays:
        digests = _RECIPES.get(str(getattr(a, "name", "")))
        if digests is None or (found and len(digests) != len(found[0])):
            return None
        found.append(digests)
    if not found:
        return None
    periods = zip(*found, strict=True)
    return ["recipe:" + hashlib.sha256("\n".join(p).encode()).hexdigest() for p in periods]


def period_digest(data: Any, t: int, values_in_memory: bool | None = None) -> str:
    """What identifies ``data[t]``, whatever the chunking and the other periods.

    In-memory values: their sha256. Other lazy data: dask's deterministic token of the
    slice (the same for the same lazy computation; it changes with the input's chunking).
    ``values_in_memory`` tells when ``data`` was stacked from in-memory sources.
    """
    import dask
    from dask.base import tokenize

    if in_memory(data) if values_in_memory is None else values_in_memory:
        values = np.ascontiguousarray(np.asarray(data[t]))
        return "sha256:" + hashlib.sha256(values.tobytes()).hexdigest()
    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return "dask:" + tokenize(data[t])
    except (RuntimeError, TypeError) as err:  # what tokenize raises when it cannot
        raise FingerprintError(
            "cannot fingerprint the computation deterministically "
            f"({type(err).__name__}: {err}); pass fingerprint='...' to to_zarr, naming the "
            "inputs and settings (the same string on every run of the same computation)"
        ) from err


# --- the ISA map --------------------------------------------------------------------------


def check_isa_map(
    isa: Any, what: str = "isa", *, periods: bool = True, dtype: bool = True
) -> xr.DataArray:
    """Check that ``isa`` is an ISA map (see the module docstring); return it.

    A 2-D map with a scalar period coordinate (``time`` after ``isel(time=0)``) becomes a
    one-period map when ``periods`` is required. Values are checked where they are cheap to
    see (in memory); lazily held values are checked block by block as they are written
    (:func:`check_isa_values`).

    Raises
    ------
    CubeInputError
        Not a DataArray, no CRS, a CRS not in metres, not a regular north-up grid, wrong
        dims, period labels missing or repeated, a dtype other than uint8, values other than
        0, 1 and 255.
    """
    _check_georeferenced(isa, what)
    checked_geobox(
        isa,
        CubeInputError,
        f"{what} is not on a regular, axis-aligned grid",
        not_north_up=(
            f"{what} is not north-up (y must decrease, x increase): reverse the axis that "
            f"runs the other way, {what}.isel(y=slice(None, None, -1)) or "
            f"{what}.isel(x=slice(None, None, -1))"
        ),
    )
    if periods:
        isa = _as_periods(isa, what)
    if dtype:
        _check_isa_dtype(isa, what)
    return isa


def _check_georeferenced(isa: Any, what: str) -> None:
    """A DataArray with a CRS in metres (not the Dataset that holds it)."""
    if isinstance(isa, xr.Dataset):
        raise CubeInputError(
            f"{what} must be the DataArray that segment() returns, not a Dataset: "
            "write ds.isa.segment(...).isa.to_zarr(store), or pass ds['isa']"
        )
    if not isinstance(isa, xr.DataArray):
        raise CubeInputError(f"{what} must be an xarray DataArray, not {type(isa).__name__}")
    if isa.odc.crs is None:
        raise CubeInputError(
            f"{what} has no CRS: attach it with {what}.odc.assign_crs(...) (segment() sets it)"
        )
    try:
        metres_per_unit(isa.odc.crs, what)
    except CRSError as err:
        raise CubeInputError(str(err)) from None


def _as_periods(isa: xr.DataArray, what: str) -> xr.DataArray:
    """``isa`` as a ``(period, y, x)`` map, a scalar period coordinate made a dimension."""
    if isa.ndim == 2:
        dims = [n for n in ("time", "period", "year") if n in isa.coords and isa[n].ndim == 0]
        if not dims:
            raise CubeInputError(
                f"{what} has no period dimension: a cube holds periods. Add one, e.g. "
                f"{what}.expand_dims(time=[np.datetime64('2023-07-01')])"
            )
        isa = _expand_scalar_period(isa, dims[0])
    ydim, xdim = isa.odc.spatial_dims
    if isa.ndim != 3 or isa.dims[1:] != (ydim, xdim):
        raise CubeInputError(
            f"{what} must have dims (period, y, x) as segment() returns them; got {isa.dims}"
        )
    _check_period_coord(isa, what)
    return isa


def _check_period_coord(isa: xr.DataArray, what: str) -> None:
    """One unique label per period along the first dimension."""
    pdim = isa.dims[0]
    if pdim not in isa.coords:
        raise CubeInputError(f"the period dimension {pdim!r} needs coordinate labels")
    if getattr(isa[pdim].dtype, "tz", None) is not None:  # pandas' datetime64[ns, UTC]
        _refuse_zoned(pdim)  # before .values, which would drop the zone (pandas warns)
    labels = np.atleast_1d(np.asarray(isa[pdim].values))
    if isa[pdim].dims != (pdim,) or labels.size != isa.sizes[pdim]:
        raise CubeInputError(
            f"the period coordinate {pdim!r} must hold one label per period, e.g. "
            f"{what}.assign_coords({pdim}=[...])"
        )
    if len(set(labels.tolist())) != labels.size:  # the coordinate may carry no index
        raise CubeInputError(f"the period labels along {pdim!r} repeat: each must be unique")
    _check_period_labels(labels, pdim)


def _check_isa_dtype(isa: xr.DataArray, what: str) -> None:
    """The uint8 mask; its values too when they are in memory."""
    if isa.dtype != np.uint8:
        hint = (
            " For probabilities, pass the mask as isa and the float map as probability=."
            if isa.dtype.kind == "f"
            else ""
        )
        raise CubeInputError(
            f"{what} must be the uint8 mask (0 not ISA, 1 ISA, 255 nodata) that segment() "
            f"returns, not {isa.dtype}.{hint}"
        )
    if isa.chunks is None:  # not lazy: the values are read anyway, check them now
        check_isa_values(isa.values, what)
        check_255_declared(isa, what)


def check_255_declared(isa: xr.DataArray, what: str) -> None:
    """A map of 0 and 255 alone, with 255 not declared nodata, is a 0/255 mask whose 255
    means ISA (a common way to store a mask as an image), not a map without any ISA."""
    names = ("nodata", "_FillValue", "missing_value", "fill_value")
    declared = [isa.attrs.get(n) for n in names] + [isa.encoding.get("_FillValue")]
    if any(v is not None and np.all(np.asarray(v) == NODATA) for v in declared):
        return
    values = isa.values
    only_0_255 = ((values == NODATA) | (values == NOT_ISA)).all()
    if only_0_255 and (values == NODATA).any() and (values == NOT_ISA).any():
        raise CubeInputError(
            f"{what} holds only 0 and 255 and does not declare 255 as nodata: if 255 means "
            f"ISA, recode it, e.g. xr.where({what} == 255, 1, 0).astype('uint8'); if it "
            f"marks missing pixels, declare it: {what}.attrs['nodata'] = 255"
        )


def isa_map_of(obj: Any, what: str = "cube") -> xr.DataArray:
    """The checked ISA map of a cube: the DataArray itself, or a Dataset's ``isa`` variable.

    The analyses read their maps through it: a lazy map's values are checked block by block
    when they are computed, so a map holding other codes fails instead of counting as "not ISA".
    """
    if isinstance(obj, xr.Dataset):
        if "isa" not in obj.data_vars:
            raise CubeInputError(
                "the Dataset has no 'isa' variable: pass the cube from xjointseg.open_cube()"
            )
        obj = obj["isa"]
    isa = check_isa_map(obj, what)
    if isa.chunks is not None:  # lazy: each block's values are checked as it is computed
        isa = isa.copy(data=isa.data.map_blocks(_checked_block, what=what, dtype=isa.dtype))
    return isa


def _checked_block(block: np.ndarray, what: str) -> np.ndarray:
    check_isa_values(block, what)
    return block


def period_labels(isa: xr.DataArray) -> list:
    """The period labels of a (period, y, x) map as Python values (Timestamps for dates)."""
    import pandas as pd

    values = isa[isa.dims[0]].values
    if np.issubdtype(values.dtype, np.datetime64):
        return [pd.Timestamp(v) for v in values]
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def time_key(label: Any) -> tuple[str, float] | None:
    """A label's place in time, to compare labels of one kind: ("t", ns) for a date or a
    string that reads as one (an interval "a/b" by its start), ("n", value) for a number;
    None when the label does not tell the time."""
    import pandas as pd

    if isinstance(label, bool | np.bool_):
        return None
    if isinstance(label, int | float | np.number):
        return ("n", float(label))
    if isinstance(label, str):
        try:
            label = pd.Timestamp(label.split("/")[0].strip())
        except (ValueError, TypeError):
            return None
    if isinstance(label, pd.Timestamp | np.datetime64):
        ts = pd.Timestamp(label)
        return None if ts is pd.NaT else ("t", float(ts.value))
    return None


def check_period_order(isa: xr.DataArray, who: str) -> None:
    """Refuse a ``(period, y, x)`` map whose periods are not in time order where their
    labels tell the time (dates, numbers, strings that read as dates; other labels are
    taken in the order given)."""
    pdim = isa.dims[0]
    if pdim not in isa.coords:
        return
    keys = [time_key(v) for v in period_labels(isa)]
    if any(k is None for k in keys) or len({k[0] for k in keys if k}) > 1:
        return
    values = [k[1] for k in keys if k]
    if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise OptionError(
            f"{who} needs the periods in time order; {pdim!r} is not increasing "
            f"({[str(v)[:10] for v in isa[pdim].values]}): sort them first, "
            f"cube.sortby({pdim!r})"
        )


def select_period(isa: xr.DataArray, period: Any) -> xr.DataArray:
    """The ``(y, x)`` map of one period of a ``(period, y, x)`` map: ``period`` is a position
    (``-1`` is the last) or a label (a partial date such as ``"2017"`` picks the one period it
    matches)."""
    import pandas as pd

    pdim = isa.dims[0]
    if isinstance(period, bool | np.bool_):
        raise OptionError(f"period must be a position or a label, not {period!r}")
    if isinstance(period, int | np.integer):
        try:
            return isa.isel({pdim: int(period)})
        except IndexError:
            raise OptionError(
                f"period={period} is out of range: the map has {isa.sizes[pdim]} periods"
            ) from None
    try:
        one = isa.sel({pdim: period})
    except (KeyError, TypeError, ValueError, pd.errors.InvalidIndexError):
        raise OptionError(
            f"no period {period!r} along {pdim!r}; it has {[str(v)[:10] for v in isa[pdim].values]}"
        ) from None
    if one.ndim == 3 and one.sizes[pdim] == 1:  # a partial date such as "2017"
        return one.isel({pdim: 0})
    if one.ndim != 2:
        raise OptionError(
            f"period={period!r} matches {one.sizes[pdim]} periods "
            f"{[str(v)[:10] for v in one[pdim].values]}: pick one (a position or a "
            "full label)"
        )
    return one


def _expand_scalar_period(isa: xr.DataArray, name: Hashable) -> xr.DataArray:
    """A 2-D map with a scalar period coordinate as a one-period 3-D map."""
    along = [n for n, c in isa.coords.items() if c.ndim == 0 and n not in (name, "spatial_ref")]
    out = isa.expand_dims(name)
    # other scalar period coordinates (period label, start, end, fingerprint) follow it
    return out.assign_coords({n: (name, [out[n].values.item()]) for n in along if n in out.coords})


def check_isa_values(values: np.ndarray, what: str = "isa") -> None:
    """Raise :class:`CubeInputError` if ``values`` hold anything but 0, 1 and 255."""
    values = np.asarray(values)
    bad = ~((values == NOT_ISA) | (values == ISA) | (values == NODATA))
    if bad.any():
        odd = np.unique(values[bad])[:5].tolist()
        raise CubeInputError(
            f"{what} holds values {odd}, which an ISA map never has (0 not ISA, 1 ISA, "
            "255 nodata): write the mask that segment() returns, or recode it, e.g. "
            "xr.where(m > 0, 1, 0).astype('uint8')"
        )


#: What ``segment`` returns: a uint8 mask or a float32 ISA probability.
OUTPUT_KINDS = ("mask", "probability")
#: Arithmetic of the network: ``"auto"`` picks bf16 where the device computes it natively.
PRECISIONS = ("auto", "fp32", "bf16")

__all__ = [
    "BAND_ALIASES",
    "FLAG_MEANINGS",
    "FLAG_VALUES",
    "INPUT_RESOLUTION",
    "ISA",
    "MAP_VALUES",
    "NEVER",
    "NODATA",
    "NOT_ISA",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "band_names",
    "check_isa_map",
    "check_255_declared",
    "check_isa_values",
    "checked_geobox",
    "find_band",
    "in_memory",
    "period_digest",
    "isa_map_of",
    "period_labels",
    "key_value",
    "metres_per_unit",
    "period_key",
    "period_kind",
    "select_period",
]
