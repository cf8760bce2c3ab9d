"""Property tests: area, fraction and first_period give the same answer for any chunking of
the cube (tiny, ragged, one block) as a plain numpy computation of their definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from conftest import partition
from hypothesis import given
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from xjointseg.change import area, first_period, fraction
from xjointseg.schema import NEVER, NODATA

NT, NY, NX = 3, 40, 30
YEARS = np.array(["2017-01-01", "2019-01-01", "2021-01-01"], dtype="datetime64[ns]")


def cube_values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.choice(
        np.array([0, 1, NODATA], dtype=np.uint8), size=(NT, NY, NX), p=[0.5, 0.3, 0.2]
    )
    return values


def as_cube(values: np.ndarray, chunks=None, res: float = 2.0) -> xr.DataArray:
    gbox = GeoBox.from_bbox((0, 0, NX * res, NY * res), "EPSG:32633", resolution=res)
    arr = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": YEARS, **xr_coords(gbox)})
    arr = arr.odc.assign_crs("EPSG:32633")
    return arr if chunks is None else arr.chunk(dict(zip(("time", "y", "x"), chunks, strict=True)))


chunkings = st.tuples(
    st.sampled_from([(1, 1, 1), (2, 1), (3,)]), partition(NY, 7), partition(NX, 7)
)


@given(seed=st.integers(0, 2**16), chunks=chunkings)
def test_area_is_the_pixel_count_times_pixel_area(seed, chunks):
    values = cube_values(seed)
    table = area(as_cube(values, chunks))
    km2 = 4.0 / 1e6  # 2 m pixels
    np.testing.assert_allclose(table.isa_km2, (values == 1).sum(axis=(1, 2)) * km2)
    np.testing.assert_allclose(table.valid_km2, (values != NODATA).sum(axis=(1, 2)) * km2)
    pd.testing.assert_frame_equal(table, area(as_cube(values)))


@given(seed=st.integers(0, 2**16), chunks=chunkings, factor=st.sampled_from([1, 2, 5, 10]))
def test_fraction_is_the_isa_share_of_valid_pixels_per_cell(seed, chunks, factor):
    values = cube_values(seed)
    got = fraction(as_cube(values, chunks), factor).values
    r = values.reshape(NT, NY // factor, factor, NX // factor, factor)
    isa = (r == 1).sum(axis=(2, 4))
    valid = (r != NODATA).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(valid > 0, isa / valid, np.nan)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def _first_reference(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[1:], NODATA, np.uint8)
    for iy in range(values.shape[1]):
        for ix in range(values.shape[2]):
            series = values[:, iy, ix]
            hits = np.flatnonzero(series == 1)
            if hits.size:
                first = hits[0]
                # a gap (nodata) before the first ISA period: it may have begun then
                out[iy, ix] = NODATA if (series[:first] == NODATA).any() else first
            elif (series != NODATA).any():
                out[iy, ix] = NEVER
    return out


@given(seed=st.integers(0, 2**16), chunks=chunkings)
def test_first_period_is_the_first_isa_period_per_pixel(seed, chunks):
    values = cube_values(seed)
    got = first_period(as_cube(values, chunks)).values
    np.testing.assert_array_equal(got, _first_reference(values))
    np.testing.assert_array_equal(got, first_period(as_cube(values)).values)


@given(seed=st.integers(0, 2**16), chunks=chunkings)
def test_polygon_regions_count_the_pixels_whose_centre_is_inside(seed, chunks):
    """Per-block rasterisation on each block's GeoBox equals a brute-force point-in-polygon
    test at the pixel centres of the whole grid, for any chunking."""
    import geopandas as gpd
    import shapely
    from shapely.geometry import Polygon

    rng = np.random.default_rng(seed)
    values = cube_values(seed)
    res = 2.0
    polys = []
    for _ in range(3):  # star-shaped polygons at any angle, partly outside the grid
        cx, cy = rng.uniform(-5, NX * res + 5), rng.uniform(-5, NY * res + 5)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
        rad = rng.uniform(3, 40, 6)
        polys.append(Polygon(zip(cx + rad * np.cos(ang), cy + rad * np.sin(ang), strict=True)))
    regions = gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=polys, crs="EPSG:32633")
    ys = (NY - np.arange(NY) - 0.5) * res  # pixel centres, north-up
    xs = (np.arange(NX) + 0.5) * res
    px, py = np.meshgrid(xs, ys)
    footprint = shapely.box(0, 0, NX * res, NY * res)
    if not any(p.intersects(footprint) for p in polys):
        return  # no region on the cube: a RegionOutsideError, tested elsewhere
    table = area(as_cube(values, chunks, res=res), regions)
    km2 = res * res / 1e6
    for name, poly in zip(regions["name"], polys, strict=True):
        inside = shapely.contains_xy(poly, px, py)
        rows = table[table.region == name]  # one per period, in order
        assert len(rows) == NT
        for t in range(NT):
            row = rows.iloc[t]
            assert round(row.region_km2 / km2) == int(inside.sum())
            assert round(row.isa_km2 / km2) == int((values[t][inside] == 1).sum())
            assert round(row.valid_km2 / km2) == int((values[t][inside] != NODATA).sum())
