"""Per-region pixel counts of an ISA cube, block by block: the zonal core of the tables.

Polygons are rasterised per block with ``odc.geo.xr.rasterize`` on the block's GeoBox, a
slice of the cube's own 1 m grid (a pixel is in a polygon when its centre is), which gives
exactly the mask of one whole-scene rasterisation. Counts of all blocks are summed in a tree,
so no 1 m scene is ever held in memory whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from ..errors import OptionError, RegionCRSError, RegionError, RegionOutsideError
from ..schema import NODATA, check_ground_scale, isa_map_of, metres_per_unit

ANALYSIS_BLOCK = 2048  # largest block side when an analysis has to chunk the input itself

# --- input --------------------------------------------------------------------------------


def _isa(cube: xr.DataArray | xr.Dataset) -> xr.DataArray:
    return isa_map_of(cube, "cube")


def change_rule_of(cube: xr.DataArray) -> str:
    """How the periods of ``cube`` relate, for the change figures read from it."""
    rule = cube.attrs.get("temporal_rule")
    if rule:
        return f"periods made consistent by consistent(): {rule}"
    return (
        "each period mapped alone (no temporal rule): change is the difference of the "
        "periods' maps; see consistent() and new_isa()"
    )


def _dask(cube: xr.DataArray) -> da.Array:
    data = cube.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, ANALYSIS_BLOCK, ANALYSIS_BLOCK))
    # all periods of a block together: one read of the block serves every period and pair
    return data.rechunk({0: -1})


def _pixel_km2(gbox: GeoBox) -> float:
    """km² of one pixel: the resolution in CRS units times the units' length in metres (on
    a grid whose pixel areas are true on the ground; others are refused)."""
    res = gbox.resolution
    unit = metres_per_unit(gbox.crs, "the cube")
    check_ground_scale(gbox, "the cube", "areal")
    return abs(res.x * res.y) * unit**2 / 1e6


# --- regions ------------------------------------------------------------------------------


@dataclass
class _Regions:
    kind: Literal["all", "polygons", "labels"]
    names: list = None  # type: ignore[assignment]
    geoms: list = None  # type: ignore[assignment]
    tree: Any = None
    labels: da.Array | None = None


def region_names(regions: Any, name_column: str | None) -> list:
    """The names of polygon regions in the tables: ``name_column``'s (none missing; polygons
    that share a name, such as the parts of one OSM feature, each keep their own rows),
    else a "name" column that names each region once, else the index."""
    if name_column is not None:
        if name_column not in regions.columns:
            raise RegionError(
                f"no column {name_column!r} in regions; columns: {list(regions.columns)}"
            )
        column = regions[name_column]
        if column.isna().any():
            missing = column.index[column.isna()].tolist()
            raise RegionError(
                f"the {name_column!r} column has no name for the regions at index "
                f"{missing[:5]}: a table row without a name is lost in any grouping; name "
                "them, or leave name_column out (regions are then named by their index)"
            )
        return column.tolist()
    if "name" in regions.columns and regions["name"].notna().all() and regions["name"].is_unique:
        return regions["name"].tolist()
    return regions.index.tolist()


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
    names = region_names(regions, name_column)
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
    if labels.ndim == 2 and labels.dims == tuple(cube.dims[1:])[::-1]:  # transposed
        raise RegionError(
            f"the label raster's dims are {labels.dims}, the cube's {tuple(cube.dims[1:])}: "
            f"give it as (y, x), e.g. labels.transpose{tuple(cube.dims[1:])}"
        )
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
    label_blocks = cast(da.Array, reg.labels).to_delayed() if reg.kind == "labels" else None
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
        if not stats:  # a table with no row would read as "no ISA anywhere"
            raise RegionOutsideError(
                "the label raster holds no region: every pixel is 0 or negative (0 means no "
                "region); number the regions 1, 2, ..."
            )
        return [(n, stats[n]) for n in sorted(stats)]
    nt = cube.shape[0]
    empty = np.zeros(_stat_len(nt), dtype=np.int64)
    return [(name, stats.get(i, empty)) for i, name in enumerate(reg.names)]


def aligned_chunks(chunks: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Chunks whose boundaries fall on multiples of ``factor`` (the total is one already)."""
    bounds = sorted({(b // factor) * factor for b in np.cumsum(chunks)[:-1]} - {0})
    edges = [0, *bounds, int(sum(chunks))]
    return tuple(int(b - a) for a, b in zip(edges[:-1], edges[1:], strict=True))


def share_option(name: str, value: Any) -> float:
    """A share of pixels given as an option (``min_valid``): a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise OptionError(f"{name} is a share from 0 to 1 (a number), not {value!r}")
    if not 0 <= value <= 1:  # NaN fails too
        raise OptionError(f"{name} is a share of the valid pixels, 0 to 1; got {value}")
    return float(value)
