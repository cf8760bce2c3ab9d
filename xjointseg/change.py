"""Urban change from an ISA cube: area per period and region, growth between periods, the
period in which each pixel first became ISA, and ISA fractions on a coarser grid.

Everything works block by block on the cube's dask chunks, so no 1 m scene is ever held in
memory whole: tables come from per-block pixel counts summed in a tree, maps stay lazy.
Polygons are rasterised per block with ``odc.geo.xr.rasterize`` on the block's GeoBox, a
slice of the cube's own 1 m grid (a pixel is in a polygon when its centre is), which gives
exactly the mask of one whole-scene rasterisation.

Counting rules, the same everywhere: a pixel is ISA when it is 1, valid when it is not 255;
shares are taken over valid pixels only, and a change between two periods only over pixels
valid in both (the share of such pixels is reported with it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from .errors import (
    FactorError,
    NotEnoughPeriodsError,
    OptionError,
    ReferenceRasterError,
    RegionCRSError,
    RegionError,
    RegionOutsideError,
)
from .schema import NEVER, NODATA, isa_map_of, metres_per_unit, period_labels

ANALYSIS_BLOCK = 2048  # largest block side when an analysis has to chunk the input itself

#: Expansion classes of :func:`growth`: the first class whose threshold the annual growth rate
#: reaches (rate >= threshold). Rates are fractions per year (0.03 = 3 %/year).
DEFAULT_CLASSES: tuple[tuple[str, float], ...] = (
    ("rapid", 0.03),
    ("moderate", 0.01),
    ("saturated", -0.01),
    ("declining", -math.inf),
)

__all__ = [
    "DEFAULT_CLASSES",
    "area",
    "first_period",
    "fraction",
    "growth",
    "read_worldcover",
]


# --- input --------------------------------------------------------------------------------


def _isa(cube: xr.DataArray | xr.Dataset) -> xr.DataArray:
    return isa_map_of(cube, "cube")


def _dask(cube: xr.DataArray) -> da.Array:
    data = cube.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, ANALYSIS_BLOCK, ANALYSIS_BLOCK))
    # all periods of a block together: one read of the block serves every period and pair
    return data.rechunk({0: -1})


def _pixel_km2(gbox: GeoBox) -> float:
    """km² of one pixel: the resolution in CRS units times the units' length in metres."""
    res = gbox.resolution
    unit = metres_per_unit(gbox.crs, "the cube")
    return abs(res.x * res.y) * unit**2 / 1e6


# --- regions ------------------------------------------------------------------------------


@dataclass
class _Regions:
    kind: Literal["all", "polygons", "labels"]
    names: list = None  # type: ignore[assignment]
    geoms: list = None  # type: ignore[assignment]
    tree: Any = None
    labels: da.Array | None = None


def _prepare_regions(
    regions: Any, cube: xr.DataArray, data: da.Array, name_column: str | None
) -> _Regions:
    if regions is None:
        return _Regions("all", names=["all"])
    if isinstance(regions, xr.DataArray):
        return _label_regions(regions, cube, data)
    try:
        import geopandas as gpd
    except ImportError as err:  # pragma: no cover - geopandas is a dependency
        raise RegionError("polygon regions need geopandas: pip install geopandas") from err
    if isinstance(regions, gpd.GeoSeries):
        regions = gpd.GeoDataFrame(geometry=regions)
    if not isinstance(regions, gpd.GeoDataFrame):
        raise RegionError(
            "regions must be a GeoDataFrame/GeoSeries of polygons or a label DataArray on the "
            f"cube's grid, not {type(regions).__name__}"
        )
    if regions.crs is None:
        raise RegionCRSError(
            "the regions have no CRS, so they cannot be placed on the cube: set it, e.g. "
            "regions.set_crs('EPSG:4326') (what the coordinates are in)"
        )
    if len(regions) == 0:
        raise RegionError("regions is empty")
    geom_types = set(regions.geom_type.dropna())
    if not geom_types <= {"Polygon", "MultiPolygon"}:
        raise RegionError(
            f"regions must be polygons, got {sorted(geom_types)}: buffer points and lines "
            "first (e.g. regions.buffer(100)) if an area around them is meant"
        )
    if name_column is not None:
        if name_column not in regions.columns:
            raise RegionError(
                f"no column {name_column!r} in regions; columns: {list(regions.columns)}"
            )
        names = regions[name_column].tolist()
    elif "name" in regions.columns and regions["name"].notna().all() and regions["name"].is_unique:
        names = regions["name"].tolist()
    else:
        names = regions.index.tolist()
    gbox = cube.odc.geobox
    local = regions.to_crs(gbox.crs.to_wkt())
    from shapely import STRtree, box

    footprint = box(*gbox.extent.boundingbox)
    geoms = list(local.geometry)
    if not any(g is not None and g.intersects(footprint) for g in geoms):
        lon_lat = regions.to_crs("EPSG:4326").total_bounds.round(4).tolist()
        cube_ll = gbox.extent.to_crs("EPSG:4326").boundingbox
        raise RegionOutsideError(
            f"no region overlaps the cube: regions span lon/lat {lon_lat}, the cube "
            f"{[round(v, 4) for v in cube_ll]}. Check their CRS (set_crs vs to_crs)."
        )
    return _Regions("polygons", names=names, geoms=geoms, tree=STRtree(geoms))


def _label_regions(labels: xr.DataArray, cube: xr.DataArray, data: da.Array) -> _Regions:
    if labels.dtype.kind not in "iu":
        raise RegionError(f"a label raster must hold integers, not {labels.dtype}")
    gbox = cube.odc.geobox
    lbox = labels.odc.geobox if labels.odc.crs is not None else None
    if labels.ndim != 2 or labels.shape != tuple(gbox.shape):
        raise RegionError(
            f"the label raster must be (y, x) on the cube's grid {tuple(gbox.shape)}, got "
            f"{labels.shape}: reproject it first, e.g. "
            "labels.odc.reproject(cube.odc.geobox, resampling='nearest')"
        )
    if lbox is not None and lbox != gbox:
        raise RegionError(
            "the label raster is not on the cube's grid: reproject it with "
            "labels.odc.reproject(cube.odc.geobox, resampling='nearest')"
        )
    arr = labels.data
    if not isinstance(arr, da.Array):
        arr = da.from_array(np.asarray(arr), chunks=data.chunks[1:])
    return _Regions("labels", labels=arr.rechunk(data.chunks[1:]))


# --- per-block counts ---------------------------------------------------------------------


def _stat_len(nt: int) -> int:
    # region pixels; per period: ISA, valid; per consecutive pair: valid in both, ISA before,
    # ISA after, gained (0 -> 1), lost (1 -> 0)
    return 1 + 2 * nt + 5 * (nt - 1)


def _counts(sub: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Counts for one region: its window ``(periods, h, w)`` of a block and its pixel mask.

    One period at a time, with ``count_nonzero`` over whole 2-D masks (numpy's fast path):
    temporaries stay a few 2-D masks, whatever the number of periods.
    """
    nt = sub.shape[0]
    out = np.zeros(_stat_len(nt), dtype=np.int64)
    out[0] = sub[0].size if mask is None else np.count_nonzero(mask)
    prev = None
    for t in range(nt):
        isa, valid = sub[t] == 1, sub[t] != NODATA
        if mask is not None:
            isa &= mask
            valid &= mask
        out[1 + t] = np.count_nonzero(isa)
        out[1 + nt + t] = np.count_nonzero(valid)
        if prev is not None:
            both = prev[1] & valid
            a = np.count_nonzero(prev[0] & both)
            b = np.count_nonzero(isa & both)
            kept = np.count_nonzero(prev[0] & isa & both)
            k = 1 + 2 * nt + 5 * (t - 1)
            out[k : k + 5] = (np.count_nonzero(both), a, b, b - kept, a - kept)
        prev = (isa, valid)
    return out


def _label_counts(vals: np.ndarray, lab: np.ndarray) -> dict:
    nt = vals.shape[0]
    lab = lab.ravel()
    keep = lab > 0  # 0 (and negatives) = no region
    if not keep.any():
        return {}
    uniq, inv = np.unique(lab[keep], return_inverse=True)
    n = len(uniq)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(inv[mask], minlength=n)

    cols = [np.bincount(inv, minlength=n)]
    isa = [vals[t].ravel()[keep] == 1 for t in range(nt)]
    valid = [vals[t].ravel()[keep] != NODATA for t in range(nt)]
    cols += [count(m) for m in isa] + [count(m) for m in valid]
    for t in range(nt - 1):
        both = valid[t] & valid[t + 1]
        a, b = isa[t] & both, isa[t + 1] & both
        cols += [count(both), count(a), count(b), count(b & ~a), count(a & ~b)]
    table = np.stack(cols, axis=1).astype(np.int64)
    return {int(k): table[i] for i, k in enumerate(uniq)}


def _block_counts(block, labels, *, geoms, gbox, kind) -> dict:
    block = np.asarray(block)
    if kind == "all":
        return {0: _counts(block, None)}
    if kind == "labels":
        return _label_counts(block, np.asarray(labels))
    from odc.geo.geom import Geometry
    from odc.geo.xr import rasterize

    out = {}
    for idx, geom in geoms:
        # rasterise only the polygon's window of the block (one pixel of margin), cut from
        # the block's GeoBox: the same 1 m grid, so the same pixels as one whole-scene mask
        poly = Geometry(geom, gbox.crs)
        rows, cols = gbox.overlap_roi(gbox.enclosing(poly.boundingbox).pad(1))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        mask = rasterize(poly, gbox[rows, cols], all_touched=False).values
        if mask.any():
            out[idx] = _counts(block[:, rows, cols], None if mask.all() else mask)
    return out


def _merge(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out[k] + v if k in out else v
    return out


def _region_stats(cube: xr.DataArray, regions: Any, name_column: str | None):
    """``[(name, counts), ...]`` per region, computed block by block (names may repeat)."""
    data = _dask(cube)
    reg = _prepare_regions(regions, cube, data, name_column)
    gbox = cube.odc.geobox
    blocks = data.to_delayed(optimize_graph=True)
    label_blocks = reg.labels.to_delayed() if reg.kind == "labels" else None
    ys = np.cumsum((0, *data.chunks[1]))
    xs = np.cumsum((0, *data.chunks[2]))
    tasks = []
    for iy in range(len(ys) - 1):
        for ix in range(len(xs) - 1):
            sub = gbox[int(ys[iy]) : int(ys[iy + 1]), int(xs[ix]) : int(xs[ix + 1])]
            geoms = None
            if reg.kind == "polygons":
                from shapely import box

                hits = reg.tree.query(box(*sub.extent.boundingbox), predicate="intersects")
                if len(hits) == 0:
                    continue  # no region here: the block is never read
                geoms = [(int(i), reg.geoms[int(i)]) for i in sorted(hits)]
            tasks.append(
                dask.delayed(_block_counts, pure=True)(
                    blocks[0, iy, ix],
                    label_blocks[iy, ix] if label_blocks is not None else None,
                    geoms=geoms,
                    gbox=sub,
                    kind=reg.kind,
                )
            )
    # sum in a tree so that no process holds every block's counts at once
    while len(tasks) > 1:
        tasks = [dask.delayed(_merge)(*tasks[i : i + 8]) for i in range(0, len(tasks), 8)]
    stats = tasks[0].compute() if tasks else {}
    if reg.kind == "labels":
        return [(n, stats[n]) for n in sorted(stats)]
    nt = cube.shape[0]
    empty = np.zeros(_stat_len(nt), dtype=np.int64)
    return [(name, stats.get(i, empty)) for i, name in enumerate(reg.names)]


# --- tables -------------------------------------------------------------------------------


def area(
    cube: xr.DataArray | xr.Dataset,
    regions: Any = None,
    *,
    name_column: str | None = None,
) -> pd.DataFrame:
    """ISA area per period and region, as a tidy table.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube (:func:`~xjointseg.open_cube`, or segment's output).
    regions : GeoDataFrame, GeoSeries or xarray.DataArray, optional
        Polygons in any CRS (reprojected to the cube's), possibly overlapping (each is counted
        on its own), or an integer label raster on the cube's grid (0 = no region). Default:
        the whole cube as one region ``"all"``.
    name_column : str, optional
        Column naming the polygons (default: ``"name"`` if present, complete and unique,
        else the index). Rows are counted separately even where names repeat.

    Returns
    -------
    pandas.DataFrame
        One row per period and region: ``period, region, isa_km2, valid_km2, region_km2,
        isa_share`` (ISA / valid), ``valid_share`` (valid / region pixels in the cube).

    Raises
    ------
    RegionCRSError
        Polygons without a CRS.
    RegionOutsideError
        No polygon overlaps the cube.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import area
    >>> grid = GeoBox.from_bbox((0, 0, 1000, 1000), "EPSG:32633", resolution=1)  # 1 km2
    >>> cube = xr_zeros(grid, "uint8", time=["2017-07-01", "2019-07-01"])
    >>> cube[:, :250, :] = 1  # a quarter is ISA in both periods
    >>> area(cube)[["region", "isa_km2", "valid_km2", "isa_share"]].values.tolist()
    [['all', 0.25, 1.0, 0.25], ['all', 0.25, 1.0, 0.25]]
    """
    cube = _isa(cube)
    stats = _region_stats(cube, regions, name_column)
    km2 = _pixel_km2(cube.odc.geobox)
    nt = cube.shape[0]
    rows = []
    for t, label in enumerate(period_labels(cube)):
        for name, s in stats:
            isa, valid, pixels = s[1 + t], s[1 + nt + t], s[0]
            rows.append(
                {
                    "period": label,
                    "region": name,
                    "isa_km2": isa * km2,
                    "valid_km2": valid * km2,
                    "region_km2": pixels * km2,
                    "isa_share": isa / valid if valid else np.nan,
                    "valid_share": valid / pixels if pixels else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _decimal_years(labels: Sequence) -> list[float]:
    def one(value) -> float:
        if isinstance(value, pd.Timestamp | np.datetime64):
            ts = pd.Timestamp(value)
            days = 366 if ts.is_leap_year else 365
            day = ts.day_of_year - 1 + (ts - ts.normalize()) / pd.Timedelta("1D")
            return ts.year + day / days
        if isinstance(value, int | float | np.number):
            return float(value)
        parts = [p for p in re.split(r"[/]", str(value)) if p.strip()]
        try:
            return float(np.mean([one(pd.Timestamp(p.strip())) for p in parts]))
        except (ValueError, TypeError) as err:
            raise OptionError(
                f"cannot tell the time of period {value!r}: pass years=[...] (one decimal "
                "year per period, e.g. 2017.5)"
            ) from err

    return [one(v) for v in labels]


def _classify(
    rate: float, before: float, after: float, share: float, classes, min_valid: float
) -> str:
    if not share >= min_valid:
        return "uncertain"
    if before == 0:
        return "new" if after > 0 else "none"
    for name, threshold in classes:
        if rate >= threshold:
            return name
    return classes[-1][0]


def _growth_classes(classes: Any) -> list[tuple[str, float]]:
    """``(name, threshold)`` pairs with thresholds in decreasing order, checked."""
    fix = 'e.g. classes=[("fast", 0.05), ("slow", -math.inf)]'
    if isinstance(classes, str | Mapping):
        raise OptionError(f"classes must be a sequence of (name, threshold) pairs, {fix}")
    try:
        pairs = [(str(name), float(threshold)) for name, threshold in classes]
    except (TypeError, ValueError):
        raise OptionError(f"classes must be (name, threshold) pairs, {fix}") from None
    if not pairs:
        raise OptionError(f"classes must name at least one class, {fix}")
    if any(b[1] > a[1] for a, b in zip(pairs[:-1], pairs[1:], strict=False)):
        raise OptionError(f"class thresholds must decrease (the first match wins), {fix}")
    return pairs


def growth(
    cube: xr.DataArray | xr.Dataset,
    regions: Any = None,
    *,
    name_column: str | None = None,
    years: Sequence[float] | Mapping[Any, float] | None = None,
    classes: Sequence[tuple[str, float]] = DEFAULT_CLASSES,
    min_valid: float = 0.5,
) -> pd.DataFrame:
    """ISA change per region between consecutive periods, with a growth rate and a class.

    Only pixels valid in both periods of a pair are compared, so clouds in one year do not
    look like loss or gain; ``valid_share`` says how much of the region that was.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube with at least two periods.
    regions : GeoDataFrame, GeoSeries or xarray.DataArray, optional
        As in :func:`area`.
    name_column : str, optional
        As in :func:`area`.
    years : sequence or mapping of float, optional
        Decimal year of each period. Default: from the period labels (datetimes, integer
        years, or strings such as ``"2017"`` or ``"2016/2017"``, the mean of the two).
    classes : sequence of (name, threshold)
        Expansion classes by annual growth rate (a fraction: 0.03 = 3 %/year), checked in
        order, the first with ``rate >= threshold`` wins. Default :data:`DEFAULT_CLASSES`:
        ``rapid`` >= 3 %/yr, ``moderate`` >= 1 %/yr, ``saturated`` >= -1 %/yr, else
        ``declining``. Whatever the classes, ``new`` means no ISA before and some after,
        ``none`` no ISA in either, ``uncertain`` a valid share below ``min_valid``.
    min_valid : float
        Smallest share of the region valid in both periods for a class to be given.

    Returns
    -------
    pandas.DataFrame
        One row per region and consecutive pair: ``region, period_from, period_to, years,
        isa_from_km2, isa_to_km2, change_km2, gained_km2, lost_km2, annual_rate,
        valid_share, expansion``. ``annual_rate = (isa_to / isa_from) ** (1 / years) - 1``
        (NaN without ISA before).

    Raises
    ------
    NotEnoughPeriodsError
        Fewer than two periods.
    OptionError
        ``years``, ``classes`` or ``min_valid`` out of shape or range.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import growth
    >>> grid = GeoBox.from_bbox((0, 0, 10, 10), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01", "2019-01-01"])
    >>> cube[:, 0, :] = 1  # 10 ISA pixels in 2017
    >>> cube[1, 1, 0] = 1  # 11 in 2019: +10 % in 2 years
    >>> g = growth(cube)
    >>> float(g.annual_rate[0].round(4)), g.expansion[0]
    (0.0488, 'rapid')
    """
    cube = _isa(cube)
    nt = cube.shape[0]
    if nt < 2:
        raise NotEnoughPeriodsError(
            f"growth needs at least two periods; the cube has {nt}: add periods with to_zarr"
        )
    labels = period_labels(cube)
    if years is None:
        yrs = _decimal_years(labels)
    elif isinstance(years, Mapping):
        yrs = [float(years[k]) for k in cube[cube.dims[0]].values]
    else:
        yrs = [float(y) for y in years]
    if len(yrs) != nt or any(b <= a for a, b in zip(yrs[:-1], yrs[1:], strict=True)):
        raise OptionError(f"years must be {nt} increasing values, one per period; got {yrs}")
    classes = _growth_classes(classes)
    if not 0 <= min_valid <= 1:
        raise OptionError(f"min_valid is a share of the region, 0 to 1; got {min_valid}")
    stats = _region_stats(cube, regions, name_column)
    km2 = _pixel_km2(cube.odc.geobox)
    rows = []
    for name, s in stats:
        pixels = s[0]
        for t in range(nt - 1):
            both, a, b, gained, lost = s[1 + 2 * nt + 5 * t : 1 + 2 * nt + 5 * (t + 1)]
            dt = yrs[t + 1] - yrs[t]
            rate = (b / a) ** (1.0 / dt) - 1.0 if a > 0 else np.nan
            share = both / pixels if pixels else 0.0
            rows.append(
                {
                    "region": name,
                    "period_from": labels[t],
                    "period_to": labels[t + 1],
                    "years": dt,
                    "isa_from_km2": a * km2,
                    "isa_to_km2": b * km2,
                    "change_km2": (b - a) * km2,
                    "gained_km2": gained * km2,
                    "lost_km2": lost * km2,
                    "annual_rate": rate,
                    "valid_share": share,
                    "expansion": _classify(rate, a, b, share, classes, min_valid),
                }
            )
    return pd.DataFrame(rows)


# --- maps ---------------------------------------------------------------------------------


def _first_block(block: np.ndarray, gaps: str) -> np.ndarray:
    isa = block == 1
    valid = block != NODATA
    hit = isa.any(axis=0)
    first = isa.argmax(axis=0)
    out = np.where(hit, first, np.where(valid.any(axis=0), NEVER, NODATA)).astype(np.uint8)
    if gaps == "nodata":
        # a period missing before the first ISA one: it may have become ISA during the gap
        missing_before = np.take_along_axis(np.cumsum(~valid, axis=0), first[None], 0)[0]
        out[hit & (missing_before > 0)] = NODATA
    return out


def first_period(
    cube: xr.DataArray | xr.Dataset, *, gaps: Literal["nodata", "ignore"] = "nodata"
) -> xr.DataArray:
    """Lazy 1 m map of the period in which each pixel was first ISA.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube (at most 254 periods).
    gaps : {"nodata", "ignore"}
        A pixel first seen as ISA after a period with nodata may have become ISA during
        that gap: ``"nodata"`` (default) marks it 255, ``"ignore"`` reports the period in
        which it was first seen as ISA.

    Returns
    -------
    xarray.DataArray
        uint8 ``(y, x)``: the index of the period (0 = the first; ISA from the start),
        254 never ISA (valid at least once), 255 nodata. ``attrs["periods"]`` lists the
        labels; ``flag_values``/``flag_meanings`` say the same for CF readers.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import first_period
    >>> grid = GeoBox.from_bbox((0, 0, 3, 1), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01", "2019-01-01"])
    >>> cube[:, 0, 0] = [1, 1]; cube[:, 0, 1] = [0, 1]; cube[:, 0, 2] = [255, 0]
    >>> first_period(cube).values.tolist()
    [[0, 1, 254]]
    """
    cube = _isa(cube)
    if gaps not in ("nodata", "ignore"):
        raise OptionError(f"gaps must be 'nodata' or 'ignore', not {gaps!r}")
    nt = cube.shape[0]
    if nt > NEVER:
        raise OptionError(f"first_period codes at most {NEVER} periods; the cube has {nt}")
    data = _dask(cube)
    out = data.map_blocks(
        _first_block, gaps, drop_axis=0, dtype=np.uint8, meta=np.empty((0, 0), np.uint8)
    )
    labels = [str(v)[:10] if isinstance(v, pd.Timestamp) else str(v) for v in period_labels(cube)]
    ydim, xdim = cube.dims[1:]
    coords = {k: v for k, v in cube.coords.items() if cube.dims[0] not in v.dims}
    attrs = {
        "long_name": "period in which the pixel was first impervious",
        "periods": labels,
        "flag_values": [*range(nt), NEVER],
        "flag_meanings": " ".join([*(re.sub(r"\s+", "_", lb) for lb in labels), "never"]),
        "nodata": NODATA,
        "gaps": gaps,
    }
    res = xr.DataArray(out, dims=(ydim, xdim), coords=coords, attrs=attrs, name="first_period")
    return res.odc.assign_crs(cube.odc.crs)


def _aligned_chunks(chunks: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Chunks whose boundaries fall on multiples of ``factor`` (the total is one already)."""
    bounds = sorted({(b // factor) * factor for b in np.cumsum(chunks)[:-1]} - {0})
    edges = [0, *bounds, int(sum(chunks))]
    return tuple(int(b - a) for a, b in zip(edges[:-1], edges[1:], strict=True))


def _fraction_block(block: np.ndarray, factor: int, least: int) -> np.ndarray:
    t, h, w = block.shape
    r = block.reshape(t, h // factor, factor, w // factor, factor)
    # small integer sums: much faster than numpy's default int64 reduction of booleans
    acc = np.uint16 if factor * factor < 2**16 else np.int64
    isa = (r == 1).view(np.uint8).sum(axis=(2, 4), dtype=acc)
    valid = (r != NODATA).view(np.uint8).sum(axis=(2, 4), dtype=acc)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (isa / valid).astype(np.float32)
    frac[valid < least] = np.nan
    return frac


def fraction(
    cube: xr.DataArray | xr.Dataset, factor: int = 10, *, min_valid: float = 0.0
) -> xr.DataArray:
    """ISA fraction on a grid ``factor`` times coarser (e.g. 10 m from 1 m), lazily.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube.
    factor : int
        Fine pixels per coarse pixel side; must divide the grid's height and width.
    min_valid : float
        Coarse pixels with a smaller share of valid fine pixels are NaN (default: NaN only
        where no fine pixel is valid).

    Returns
    -------
    xarray.DataArray
        float32 ``(period, y, x)`` in [0, 1] (ISA pixels / valid pixels), on the coarse grid
        (same CRS and bounds), NaN where too few pixels are valid. Compare it with a 10 m
        product such as WorldCover via :func:`read_worldcover` and
        :func:`xjointseg.metrics.scores`.

    Raises
    ------
    FactorError
        ``factor`` is not a positive integer dividing the grid.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import fraction
    >>> grid = GeoBox.from_bbox((0, 0, 2, 2), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01"])
    >>> cube[0, 0, :] = 1
    >>> fraction(cube, 2).values.tolist()
    [[[0.5]]]
    """
    cube = _isa(cube)
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise FactorError(f"factor must be a positive integer, not {factor!r}")
    factor = int(factor)
    gbox = cube.odc.geobox
    ny, nx = gbox.shape
    if ny % factor or nx % factor:
        raise FactorError(
            f"factor {factor} does not divide the grid ({ny} x {nx} px): pick a divisor of "
            f"both, or crop the cube, e.g. cube.isel(y=slice(0, {ny - ny % factor}), "
            f"x=slice(0, {nx - nx % factor}))"
        )
    data = cube.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, ANALYSIS_BLOCK, ANALYSIS_BLOCK))
    data = data.rechunk(
        {1: _aligned_chunks(data.chunks[1], factor), 2: _aligned_chunks(data.chunks[2], factor)}
    )
    least = max(1, math.ceil(min_valid * factor * factor))
    out = data.map_blocks(
        _fraction_block,
        factor,
        least,
        chunks=(data.chunks[0], *(tuple(c // factor for c in cs) for cs in data.chunks[1:])),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    from odc.geo.xr import xr_coords

    coarse = gbox.zoom_out(factor)
    grid = xr_coords(coarse, crs_coord_name="spatial_ref")
    pdim, ydim, xdim = cube.dims
    coords = {
        pdim: cube[pdim],
        ydim: grid[coarse.dimensions[0]].values,
        xdim: grid[coarse.dimensions[1]].values,
    }
    attrs = {
        "long_name": "impervious surface fraction",
        "units": "1",
        "factor": factor,
        "resolution": float(abs(coarse.resolution.x)),
    }
    res = xr.DataArray(out, dims=cube.dims, coords=coords, attrs=attrs, name="isa_fraction")
    return res.odc.assign_crs(gbox.crs)


# --- reference products -------------------------------------------------------------------


def read_worldcover(
    path: str, like: xr.DataArray | xr.Dataset | GeoBox, *, builtup: int = 50
) -> xr.DataArray:
    """ESA WorldCover built-up on another grid (e.g. a cube's 10 m fraction grid).

    Opens the tile with rioxarray, reads only the window that covers ``like`` and reprojects
    it with odc-geo (nearest neighbour: classes are not averaged).

    Parameters
    ----------
    path : str
        A WorldCover map GeoTIFF/COG (any rasterio path or URL).
    like : xarray object or GeoBox
        The target grid.
    builtup : int
        The built-up class (50 in WorldCover).

    Returns
    -------
    xarray.DataArray
        uint8 on ``like``'s grid: 1 built-up, 0 another class, 255 no data.

    Raises
    ------
    RegionOutsideError
        The tile does not cover any part of the grid.

    Examples
    --------
    >>> from xjointseg.change import fraction, read_worldcover
    >>> tile = "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
    >>> frac = fraction(cube, 10)  # doctest: +SKIP
    >>> wc = read_worldcover(tile, frac)  # doctest: +SKIP
    >>> xjointseg.metrics.scores(frac >= 0.5, wc, ignore=255)  # doctest: +SKIP
    """
    import rasterio
    import rioxarray
    from odc.geo.geobox import GeoBox as _GeoBox
    from odc.geo.xr import wrap_xr
    from rioxarray.exceptions import NoDataInBounds, OneDimensionalRaster

    gbox = like if isinstance(like, _GeoBox) else like.odc.geobox
    try:
        # lazy: only the clipped window below is ever read
        tile = rioxarray.open_rasterio(path).squeeze("band", drop=True)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise ReferenceRasterError(
            f"cannot read {path} as a raster ({exc}): give the path of a WorldCover GeoTIFF "
            "tile (ESA_WorldCover_10m_..._Map.tif)"
        ) from None
    crs = tile.rio.crs.to_wkt()
    bounds = gbox.extent.to_crs(crs).boundingbox
    pad = 2 * abs(tile.rio.resolution()[0])  # whole source pixels around the target's edge
    try:
        window = tile.rio.clip_box(
            bounds.left - pad, bounds.bottom - pad, bounds.right + pad, bounds.top + pad
        )
    except (NoDataInBounds, OneDimensionalRaster):
        window = None
    if window is None or 0 in window.shape:
        raise RegionOutsideError(
            f"{path} does not cover the grid (lon/lat "
            f"{[round(v, 4) for v in gbox.extent.to_crs('EPSG:4326').boundingbox]})"
        )
    nodata = 0 if tile.rio.nodata is None else int(tile.rio.nodata)
    classes = window.load().odc.assign_crs(crs)
    moved = classes.odc.reproject(gbox, resampling="nearest", dst_nodata=nodata).values
    out = np.where(moved == nodata, NODATA, (moved == builtup).astype(np.uint8))
    if (out == NODATA).all():
        raise RegionOutsideError(f"{path} has no data over the grid")
    res = wrap_xr(out.astype(np.uint8), gbox, nodata=NODATA)
    res.attrs.update(long_name="WorldCover built-up", source=str(path), builtup_class=builtup)
    return res.rename("worldcover_builtup")
