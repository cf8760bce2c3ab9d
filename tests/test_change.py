"""Change analysis on synthetic cubes with known growth: areas, rates, classes, maps, plots."""

from __future__ import annotations

import math

import dask.array as da
import geopandas as gpd
import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import shared_path
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from shapely.geometry import Point, Polygon, box

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.change import NEVER, area, first_period, fraction, growth, read_worldcover
from xjointseg.errors import (
    CubeInputError,
    FactorError,
    NotEnoughPeriodsError,
    OptionError,
    RegionCRSError,
    RegionError,
    RegionOutsideError,
)
from xjointseg.metrics import scores

matplotlib.use("Agg")

X0, Y0 = 330000.0, 5822000.0
NY, NX = 1000, 1200
YEARS = ["2017-01-01", "2019-01-01", "2021-01-01"]
KM2 = 1e-6  # one 1 m pixel

# regions as pixel windows (row0, row1, col0, col1)
WINDOWS = {
    "A": (0, 400, 0, 400),
    "B": (0, 400, 600, 1000),
    "C": (500, 900, 0, 400),
    "D": (500, 900, 600, 1000),
}


def grid(ny=NY, nx=NX, origin=(X0, Y0), crs="EPSG:32633") -> GeoBox:
    x0, y0 = origin
    return GeoBox.from_bbox((x0, y0 - ny, x0 + nx, y0), crs=crs, resolution=1)


def make_cube(data, years=YEARS, chunks=128, gbox=None):
    data = np.asarray(data, dtype=np.uint8)
    gbox = gbox or grid(*data.shape[1:])
    coords = {"time": np.array(years, dtype="datetime64[ns]"), **xr_coords(gbox)}
    attrs = {"model": "toy2", "model_sha256": "ab" * 32, "nodata": 255}
    arr = xr.DataArray(data, dims=("time", "y", "x"), coords=coords, attrs=attrs, name="isa")
    arr = arr.odc.assign_crs(gbox.crs)
    return arr.chunk({"time": 1, "y": chunks, "x": chunks}) if chunks else arr


def known_growth() -> np.ndarray:
    """Three periods with known ISA per region (see the numbers in the tests)."""
    d = np.zeros((3, NY, NX), np.uint8)
    # A: a square of 100, 110, 121 px a side: +21 % every 2 years = 10 %/year
    for t, side in enumerate((100, 110, 121)):
        d[t, 100 : 100 + side, 100 : 100 + side] = 1
    # B: 200 x 200, then 200 x 202 twice: +1 % in 2 years, then no change
    d[0, 100:300, 700:900] = 1
    d[1:, 100:300, 700:902] = 1
    # C: nothing, then 50 x 50 twice
    d[1:, 600:650, 100:150] = 1
    # D: 100 x 200 throughout, a new strip of 20 x 200 in 2021; clouds in 2019
    d[:, 750:850, 600:800] = 1
    d[2, 850:870, 600:800] = 1
    d[1, 500:640, 600:1000] = 255  # cloud over empty land
    d[1, 750:760, 600:800] = 255  # cloud over 2000 ISA pixels
    d[:, 990:, :] = 255  # a nodata strip outside all regions
    return d


def regions_gdf(crs="EPSG:32633") -> gpd.GeoDataFrame:
    geoms = [box(X0 + c0, Y0 - r1, X0 + c1, Y0 - r0) for r0, r1, c0, c1 in WINDOWS.values()]
    gdf = gpd.GeoDataFrame({"name": list(WINDOWS)}, geometry=geoms, crs="EPSG:32633")
    return gdf.to_crs(crs)


def expected_counts(data, window):
    r0, r1, c0, c1 = window
    sub = data[:, r0:r1, c0:c1]
    return (sub == 1).sum(axis=(1, 2)), (sub != 255).sum(axis=(1, 2)), sub[0].size


@pytest.fixture(scope="module")
def data():
    return known_growth()


@pytest.fixture(scope="module")
def cube(data):
    return make_cube(data)


# --- area ---------------------------------------------------------------------------------


def test_area_exact_with_regions_in_another_crs(cube, data):
    table = area(cube, regions_gdf("EPSG:4326"))  # lon/lat polygons on a UTM cube
    assert list(table.columns) == [
        "period",
        "region",
        "isa_km2",
        "valid_km2",
        "region_km2",
        "isa_share",
        "valid_share",
    ]
    assert len(table) == 3 * 4
    for name, window in WINDOWS.items():
        isa, valid, pixels = expected_counts(data, window)
        rows = table[table.region == name].reset_index()
        assert [round(v / KM2) for v in rows.isa_km2] == isa.tolist()
        assert [round(v / KM2) for v in rows.valid_km2] == valid.tolist()
        assert rows.region_km2.tolist() == pytest.approx([pixels * KM2] * 3, rel=1e-12)
        np.testing.assert_allclose(rows.isa_share, isa / valid, rtol=1e-12)
    a = table[table.region == "A"]
    assert a.isa_km2.tolist() == pytest.approx([0.01, 0.0121, 0.014641], rel=1e-12)
    assert list(table.period.unique()) == [pd.Timestamp(y) for y in YEARS]


def test_area_of_the_whole_cube_and_overlapping_regions(cube, data):
    whole = area(cube)
    assert whole.region.unique().tolist() == ["all"]
    np.testing.assert_array_equal(
        np.round(whole.isa_km2 / KM2).astype(int), (data == 1).sum(axis=(1, 2))
    )
    np.testing.assert_array_equal(
        np.round(whole.valid_km2 / KM2).astype(int), (data != 255).sum(axis=(1, 2))
    )
    # a polygon over A and B counts both, beside A and B themselves
    gdf = regions_gdf()
    both = gpd.GeoDataFrame(
        {"name": ["AB"]}, geometry=[box(X0, Y0 - 400, X0 + 1000, Y0)], crs=gdf.crs
    )
    table = area(cube, pd.concat([gdf, both], ignore_index=True))
    per = table.pivot(index="period", columns="region", values="isa_km2")
    np.testing.assert_allclose(per["AB"], per["A"] + per["B"], rtol=1e-12)


def test_label_raster_equals_polygons(cube):
    labels = np.zeros((NY, NX), np.int32)
    for i, (r0, r1, c0, c1) in enumerate(WINDOWS.values(), start=1):
        labels[r0:r1, c0:c1] = i
    lab = xr.DataArray(labels, dims=("y", "x"), coords=xr_coords(cube.odc.geobox))
    by_label = area(cube, lab.chunk(300))
    by_poly = area(cube, regions_gdf())
    assert by_label.region.unique().tolist() == [1, 2, 3, 4]
    cols = ["isa_km2", "valid_km2", "region_km2"]
    np.testing.assert_allclose(by_label[cols].values, by_poly[cols].values, rtol=1e-12)
    with pytest.raises(RegionError, match="grid"):
        area(cube, lab.isel(x=slice(0, 500)))


def test_per_block_rasterisation_equals_one_whole_mask():
    rng = np.random.default_rng(4)
    d = (rng.random((1, 300, 260)) < 0.5).astype(np.uint8)
    gbox = grid(300, 260)
    polys = []
    for _ in range(6):  # irregular polygons with edges at any angle, across block edges
        cx, cy = X0 + rng.uniform(20, 240), Y0 - rng.uniform(20, 280)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 7))
        rad = rng.uniform(10, 90, 7)
        polys.append(Polygon(zip(cx + rad * np.cos(ang), cy + rad * np.sin(ang), strict=True)))
    gdf = gpd.GeoDataFrame({"name": range(6)}, geometry=polys, crs="EPSG:32633")
    tiny = area(make_cube(d, YEARS[:1], chunks=37, gbox=gbox), gdf)
    whole = area(make_cube(d, YEARS[:1], chunks=None, gbox=gbox), gdf)
    pd.testing.assert_frame_equal(tiny, whole)
    from rasterio.features import geometry_mask

    for i, geom in enumerate(polys):
        mask = geometry_mask([geom], out_shape=(300, 260), transform=gbox.affine, invert=True)
        assert round(tiny.isa_km2[i] / KM2) == int((d[0][mask] == 1).sum())


def test_real_osm_polygons_partly_outside_the_cube():
    gpkg = shared_path("s2", "havelland_T33UUU_20170216_L1C", "osm_landuse_water.gpkg")
    osm = gpd.read_file(gpkg)  # real MultiPolygons (OSM land use), EPSG:32633
    gbox = GeoBox.from_bbox((334000, 5816000, 336000, 5818000), "EPSG:32633", resolution=1)
    rng = np.random.default_rng(0)
    d = (rng.random((1, 2000, 2000)) < 0.2).astype(np.uint8)
    table = area(make_cube(d, YEARS[:1], chunks=700, gbox=gbox), osm, name_column="osm_id")
    assert len(table) == len(osm)  # every polygon gets a row, zero where outside
    from rasterio.features import geometry_mask

    inside = table[table.region_km2 > 0]
    assert 0 < len(inside) < len(osm)
    for _, row in inside.head(12).iterrows():
        geom = osm.geometry[osm.osm_id == row.region].iloc[0]
        mask = geometry_mask([geom], out_shape=(2000, 2000), transform=gbox.affine, invert=True)
        assert round(row.region_km2 / KM2) == int(mask.sum())
        assert round(row.isa_km2 / KM2) == int((d[0][mask] == 1).sum())


# --- growth -------------------------------------------------------------------------------


def test_growth_exact_rates_and_classes(cube):
    g = growth(cube, regions_gdf("EPSG:3857"))
    assert len(g) == 4 * 2
    a = g[g.region == "A"].reset_index()
    assert a.years.tolist() == [2.0, 2.0]
    assert a.annual_rate.tolist() == pytest.approx([0.1, 0.1], rel=1e-12)
    assert a.change_km2.tolist() == pytest.approx([0.0021, 0.002541], rel=1e-12)
    assert a.gained_km2.tolist() == pytest.approx([0.0021, 0.002541], rel=1e-12)
    assert a.lost_km2.tolist() == [0.0, 0.0]
    assert a.expansion.tolist() == ["rapid", "rapid"]
    b = g[g.region == "B"].reset_index()
    assert b.annual_rate[0] == pytest.approx(math.sqrt(1.01) - 1, rel=1e-12)
    assert b.annual_rate[1] == 0.0
    assert b.expansion.tolist() == ["saturated", "saturated"]
    c = g[g.region == "C"].reset_index()
    assert math.isnan(c.annual_rate[0]) and c.expansion.tolist() == ["new", "saturated"]
    assert c.isa_to_km2[0] == pytest.approx(0.0025, rel=1e-12)


def test_growth_compares_only_pixels_valid_in_both_periods(cube):
    d = growth(cube, regions_gdf()).query("region == 'D'").reset_index()
    # 2000 ISA pixels are under the 2019 cloud: left out of both sides, no fake loss
    assert d.isa_from_km2[0] == pytest.approx(0.018, rel=1e-12)
    assert d.isa_to_km2[0] == pytest.approx(0.018, rel=1e-12)
    assert d.lost_km2[0] == 0.0 and d.annual_rate[0] == 0.0
    assert d.valid_share.tolist() == pytest.approx([102000 / 160000] * 2, rel=1e-12)
    assert d.annual_rate[1] == pytest.approx(math.sqrt(22000 / 18000) - 1, rel=1e-12)
    assert d.expansion.tolist() == ["saturated", "rapid"]
    # the plain areas do see fewer ISA pixels in the cloudy year
    areas = area(cube, regions_gdf()).query("region == 'D'")
    assert [round(v / KM2) for v in areas.isa_km2] == [20000, 18000, 24000]
    # too little valid: no class given
    strict = growth(cube, regions_gdf(), min_valid=0.7).query("region == 'D'")
    assert strict.expansion.tolist() == ["uncertain", "uncertain"]


def test_growth_classes_and_years_are_configurable(cube):
    classes = [("fast", 0.2), ("slow", 0.0), ("shrinking", -math.inf)]
    g = growth(cube, regions_gdf(), classes=classes)
    assert g[g.region == "A"].expansion.tolist() == ["slow", "slow"]
    g = growth(cube, regions_gdf(), years=[2017, 2018, 2019])  # one year apart: 21 %/year
    assert g[g.region == "A"].annual_rate.tolist() == pytest.approx([0.21, 0.21], rel=1e-12)
    assert g[g.region == "A"].expansion.tolist() == ["rapid", "rapid"]
    labelled = cube.assign_coords(time=["2016/2017", "2018/2019", "2020/2021"])
    g = growth(labelled)
    assert g.years.tolist() == [2.0, 2.0]
    with pytest.raises(OptionError, match="years"):
        growth(cube, years=[2017, 2017, 2019])
    with pytest.raises(OptionError, match="years"):
        growth(cube.assign_coords(time=["a", "b", "c"]))


def test_analysis_on_an_opened_cube_matches(tmp_path, cube):
    stored = cube.isa.to_zarr(tmp_path / "cube.zarr")
    assert stored.chunks is not None
    pd.testing.assert_frame_equal(
        stored.isa.area(regions_gdf()), area(cube, regions_gdf()), check_exact=True
    )
    pd.testing.assert_frame_equal(stored.isa.growth(), growth(cube))


# --- maps ---------------------------------------------------------------------------------


def test_first_period_codes_nodata_and_never():
    d = np.zeros((3, 2, 4), np.uint8)
    d[:, 0, 0] = [1, 1, 1]  # ISA from the start
    d[:, 0, 1] = [0, 1, 1]  # new in period 1
    d[:, 0, 2] = [0, 0, 1]  # new in period 2
    d[:, 0, 3] = [0, 0, 0]  # never
    d[:, 1, 0] = [255, 255, 255]  # never seen
    d[:, 1, 1] = [0, 255, 1]  # became ISA during a gap: unknown when
    d[:, 1, 2] = [255, 0, 0]  # never ISA, seen twice
    d[:, 1, 3] = [1, 255, 0]  # ISA first, then lost
    cube = make_cube(d, chunks=None, gbox=grid(2, 4))
    fp = first_period(cube.chunk({"x": 2}))
    assert isinstance(fp.data, da.Array) and fp.chunks == ((2,), (2, 2))
    assert fp.values.tolist() == [[0, 1, 2, NEVER], [255, 255, NEVER, 0]]
    assert first_period(cube, gaps="ignore").values[1, 1] == 2
    assert fp.attrs["periods"] == ["2017-01-01", "2019-01-01", "2021-01-01"]
    assert fp.attrs["flag_values"] == [0, 1, 2, NEVER]
    assert fp.odc.geobox == cube.odc.geobox


def test_first_period_on_known_growth(cube, data):
    fp = first_period(cube).values
    assert fp[150, 150] == 0 and fp[205, 205] == 1 and fp[215, 215] == 2  # A grows outwards
    assert fp[620, 120] == 1 and fp[0, 500] == NEVER and fp[995, 10] == 255
    assert fp[755, 650] == 0  # ISA in 2017, under a cloud in 2019: still first in 2017


def test_fraction_exact_and_on_the_coarse_grid(cube, data):
    frac = fraction(cube, 10)
    assert frac.shape == (3, 100, 120) and frac.dtype == np.float32
    assert frac.odc.geobox == cube.odc.geobox.zoom_out(10)
    assert frac.odc.crs.epsg == 32633
    isa = (data == 1).reshape(3, 100, 10, 120, 10).sum((2, 4))
    valid = (data != 255).reshape(3, 100, 10, 120, 10).sum((2, 4))
    with np.errstate(invalid="ignore"):  # under the 2019 cloud: NaN on both sides
        np.testing.assert_allclose(frac.values, isa / valid, rtol=1e-6)
    assert np.isnan(frac.values[:, 99]).all()  # the all-nodata strip
    # chunks (128) are not multiples of 10: moved onto them, same answer as one chunk
    np.testing.assert_array_equal(frac.values, fraction(cube.chunk(-1), 10).values)
    d = np.ones((1, 10, 20), np.uint8)
    d[:, :, :6] = 255  # the first coarse pixel is 40 % valid
    half = make_cube(d, YEARS[:1], None, gbox=grid(10, 20))
    assert fraction(half, 10).values.tolist() == [[[1.0, 1.0]]]
    strict = fraction(half, 10, min_valid=0.5).values
    assert np.isnan(strict[0, 0, 0]) and strict[0, 0, 1] == 1.0


def test_worldcover_comparison_with_metrics():
    tiles = [
        shared_path("labels", f"ESA_WorldCover_10m_{v}_N00E006_Map.tif")
        for v in ("2020_v100", "2021_v200")
    ]
    # 2 km x 2 km over São Tomé city, UTM 32N, at 10 m
    target = GeoBox.from_bbox((246000, 36000, 248000, 38000), "EPSG:32632", resolution=10)
    wc = [read_worldcover(str(t), target) for t in tiles]
    assert wc[0].shape == (200, 200) and wc[0].odc.geobox == target
    assert set(np.unique(wc[0].values)) <= {0, 1, 255} and (wc[0].values == 1).mean() > 0.05
    # a 1 m cube made of the WorldCover maps themselves: its 10 m fraction must match them
    fine = np.stack([np.repeat(np.repeat(w.values, 10, 0), 10, 1) for w in wc])
    cube = make_cube(fine, YEARS[1:], chunks=500, gbox=target.zoom_to(shape=(2000, 2000)))
    frac = fraction(cube, 10)
    same = scores(frac.isel(time=1) >= 0.5, wc[1], ignore=255)
    assert same["f1"] == 1.0 and same["oa"] == 1.0
    other = scores((frac.isel(time=0) >= 0.5).data, wc[1].data, ignore=255)
    assert 0.3 < other["f1"] < 1.0  # two product versions disagree
    table = area(cube)
    assert table.isa_km2.iloc[0] == pytest.approx((wc[0].values == 1).sum() * 1e-4, rel=1e-9)
    with pytest.raises(RegionOutsideError):
        read_worldcover(str(tiles[0]), grid())  # Germany is not on this tile


def test_scores_numpy_and_dask_agree():
    rng = np.random.default_rng(2)
    pred = (rng.random((200, 300)) < 0.4).astype(np.uint8)
    ref = (rng.random((200, 300)) < 0.4).astype(np.uint8)
    ref[:10] = 255
    s_np = scores(pred, ref, ignore=255)
    s_da = scores(da.from_array(pred, chunks=64), da.from_array(ref, chunks=50), ignore=255)
    assert s_np == s_da
    tp = ((pred == 1) & (ref == 1))[10:].sum()
    fp = ((pred == 1) & (ref == 0))[10:].sum()
    assert s_np["precision"] == pytest.approx(tp / (tp + fp))
    assert s_np["macro_f1"] == pytest.approx(
        (s_np["f1"] + 2 * s_np["tn"] / (2 * s_np["tn"] + s_np["fp"] + s_np["fn"])) / 2
    )
    with pytest.raises(CubeInputError, match="shape"):
        scores(pred, ref[:5])


# --- plots --------------------------------------------------------------------------------


def test_plots_return_figures(cube):
    from matplotlib.figure import Figure

    from xjointseg.plots import plot_growth, plot_growth_classes

    gdf = regions_gdf()
    figs = [
        cube.isa.plot_map(period=1, max_pixels=200),
        cube.isa.plot_first_period(max_pixels=200),
        plot_growth(area(cube, gdf)),
        plot_growth_classes(growth(cube, gdf)),
        plot_growth_classes(growth(cube, gdf), gdf),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    legend = [t.get_text() for t in figs[1].axes[0].get_legend().get_texts()]
    assert legend == [
        "ISA by 2017-01-01",
        "new in 2019-01-01",
        "new in 2021-01-01",
        "never",
        "nodata",
    ]
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)


# --- bad input ----------------------------------------------------------------------------


def test_bad_regions_and_options(cube):
    no_crs = regions_gdf().set_crs(None, allow_override=True)
    with pytest.raises(RegionCRSError, match="no CRS"):
        area(cube, no_crs)
    far = regions_gdf().translate(xoff=1e6)
    with pytest.raises(RegionOutsideError, match="no region overlaps"):
        area(cube, gpd.GeoDataFrame(geometry=far, crs="EPSG:32633"))
    points = gpd.GeoDataFrame(geometry=[Point(X0 + 5, Y0 - 5)], crs="EPSG:32633")
    with pytest.raises(RegionError, match="polygons"):
        growth(cube, points)
    with pytest.raises(RegionError, match="column"):
        area(cube, regions_gdf(), name_column="city")
    with pytest.raises(FactorError, match="divide"):
        fraction(cube, 7)
    for bad in (0, 2.5, True):
        with pytest.raises(FactorError):
            fraction(cube, bad)
    with pytest.raises(NotEnoughPeriodsError):
        growth(cube.isel(time=[0]))
    with pytest.raises(CubeInputError):
        area(cube.astype("float32"))
    with pytest.raises(CubeInputError):
        area(cube.isel(time=0).drop_vars("time"))
    with pytest.raises(OptionError):
        first_period(cube, gaps="maybe")
    assert issubclass(FactorError, ValueError) and issubclass(RegionCRSError, ValueError)


def test_accessor_matches_functions(cube):
    pd.testing.assert_frame_equal(cube.isa.area(), area(cube))
    xr.testing.assert_identical(cube.isa.fraction(factor=20), fraction(cube, 20))
    xr.testing.assert_identical(cube.isa.first_period(), first_period(cube))
    import inspect

    assert list(inspect.signature(cube.isa.growth).parameters)[:2] == ["regions", "name_column"]


def test_area_is_counted_on_equal_area_grids_and_refused_on_mercator():
    """A pixel of an equal-area CRS is its nominal area wherever it lies; a Web-Mercator
    pixel at 52 N is 2.6 x its ground area, so area() refuses it rather than inflate it."""
    from xjointseg.change import area
    from xjointseg.errors import CRSError
    from xjointseg.testing import synthetic_scene, toy_model

    isa = xjointseg.segment(synthetic_scene(16, 16, times=1), toy_model()).compute()
    base = isa.drop_vars("spatial_ref")
    laea = base.odc.assign_crs("EPSG:3035")
    laea = laea.assign_coords(x=laea.x + 2_000_000 - float(laea.x[0]), y=laea.y - 4_000_000)
    assert float(area(laea)["region_km2"].iloc[0]) == pytest.approx(160 * 160 / 1e6)
    mercator = base.odc.assign_crs("EPSG:3857")
    mercator = mercator.assign_coords(y=mercator.y + 6_800_000 - float(mercator.y[0]))
    with pytest.raises(CRSError, match="2.6"):
        area(mercator)
