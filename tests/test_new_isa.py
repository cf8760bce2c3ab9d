"""new_isa: change from spectral evidence and built-up context, exact whatever the chunking,
with clear errors for maps that cannot be compared; the cube method; a real OSCD pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from conftest import shared_path
from odc.geo.xr import xr_coords

import xjointseg
from xjointseg.change import (
    DEFAULT_RULE,
    NIR_RULE,
    RGB_RULE,
    ChangeRule,
    change_evidence,
    new_isa,
)
from xjointseg.change.evidence import relative_change
from xjointseg.errors import ChangeInputError, OptionError, PeriodOrderError, XJointSegError
from xjointseg.testing import synthetic_scene

NY, NX = 120, 150  # 10 m pixels
SHA = "ab" * 32


RIVER = (slice(24, 34), slice(44, 56))  # in town: water on both dates, its silt changed
PARK = (slice(58, 66), slice(90, 106))  # in town: bare soil, then dense vegetation


def scene_pair():
    """Two dates of one scene: date 2 has a bright new block (rows 40-55, cols 60-80) and,
    far from any ISA, a ploughed field (rows 90-110, cols 10-30); in town, a river whose
    colour changed and a bare plot that turned green."""
    d1 = synthetic_scene(NY, NX, seed=1, dtype="float32", nodata=None)
    d1["B08"][RIVER] = 150.0
    for band, value in (("B02", 1800.0), ("B03", 1900.0), ("B04", 2000.0), ("B08", 2600.0)):
        d1[band][PARK] = value
    d2 = d1.copy(deep=True)
    for band in ("B02", "B03", "B04"):
        d2[band][40:55, 60:80] = 2500.0
        d2[band][90:110, 10:30] = d1[band][90:110, 10:30] * 2.2
        d1[band][RIVER] = 600.0
        d2[band][RIVER] = 1300.0
    d2["B08"][40:55, 60:80] = 2700.0  # a roof: as bright in the NIR as in the visible
    for band, value in (("B02", 400.0), ("B03", 600.0), ("B04", 300.0), ("B08", 4500.0)):
        d2[band][PARK] = value
    return d1, d2


def isa_map(ds, year, built):
    """A 1 m map on the scene's 1 m grid: ISA in the 10 m windows ``built`` (slices)."""
    gbox = ds.odc.geobox.zoom_to(resolution=1)
    data = np.zeros(gbox.shape, np.uint8)
    for rows, cols in built:
        data[rows.start * 10 : rows.stop * 10, cols.start * 10 : cols.stop * 10] = 1
    coords = {"time": np.datetime64(f"{year}-01-01", "ns"), **xr_coords(gbox)}
    attrs = {"model": "jointseg", "model_sha256": SHA}
    return xr.DataArray(data, dims=("y", "x"), coords=coords, attrs=attrs).odc.assign_crs(gbox.crs)


TOWN = (slice(20, 70), slice(40, 110))  # built-up land around the new block


def maps_and_images():
    d1, d2 = scene_pair()
    before = isa_map(d1, 2017, [TOWN])
    after = isa_map(d2, 2019, [TOWN, (slice(40, 55), slice(60, 80))])
    d1 = d1.assign_coords(time=np.datetime64("2017-01-01", "ns"))
    d2 = d2.assign_coords(time=np.datetime64("2019-01-01", "ns"))
    return before, after, (d1, d2)


def test_a_new_block_in_town_is_new_isa_a_ploughed_field_is_not():
    before, after, images = maps_and_images()
    out = new_isa(before, after, images=images)
    assert out.dtype == np.uint8 and out.shape == (NY, NX)
    assert out.odc.geobox == images[0].odc.geobox
    v = out.values
    assert v[44:51, 64:76].mean() > 0.9  # the new block
    assert v[90:110, 10:30].sum() == 0  # spectral change, but no ISA anywhere near
    assert v[:15].sum() == 0 and v[:, 130:].sum() == 0  # nothing changed there
    ev = change_evidence(before, after, images=images).compute()
    assert float(ev.magnitude[100, 20]) > DEFAULT_RULE.magnitude  # the field did change
    assert float(ev.context[100, 20]) < DEFAULT_RULE.context
    rule = json.loads(out.attrs["change_rule"])
    assert rule["magnitude"] == DEFAULT_RULE.magnitude
    assert out.attrs["before"] == "2017-01-01" and out.attrs["after"] == "2019-01-01"
    assert out.attrs["model_sha256"] == SHA


def test_relative_change_is_the_signed_band_step_of_the_magnitude():
    before, after, images = maps_and_images()
    ev = change_evidence(before, after, images=images).compute()
    bands = [
        relative_change(images[0][b].values, images[1][b].values) for b in ("B04", "B03", "B02")
    ]
    length = np.sqrt(sum(b**2 for b in bands))
    ok = np.isfinite(ev.magnitude.values)
    np.testing.assert_allclose(length[ok], ev.magnitude.values[ok], atol=1e-5)
    assert all(b[47, 70] > 0.3 for b in bands)  # the new block is brighter than before
    assert relative_change(images[1]["B04"].values, images[0]["B04"].values)[47, 70] < -0.3
    hole = images[0]["B04"].values.copy()
    hole[5, 5] = np.nan
    assert np.isnan(relative_change(hole, images[1]["B04"].values)[5, 5])
    with pytest.raises(ChangeInputError, match="2-D arrays of one shape"):
        relative_change(hole, hole[:-1])


def test_water_and_new_vegetation_are_not_new_isa():
    """Both changed strongly in town; the surface tests (B08) tell them from a building site,
    the RGB-only rule cannot."""
    before, after, images = maps_and_images()
    ev = change_evidence(before, after, images=images).compute()
    for rows, cols in (RIVER, PARK):
        core = (slice(rows.start + 2, rows.stop - 2), slice(cols.start + 2, cols.stop - 2))
        assert float(ev.magnitude[core].min()) > DEFAULT_RULE.magnitude
        assert float(ev.context[core].min()) > DEFAULT_RULE.context
    assert float(ev.ndwi[RIVER].min()) > DEFAULT_RULE.water_ndwi
    assert float(ev.ndvi_after[PARK].min()) > DEFAULT_RULE.vegetation_ndvi
    default = new_isa(before, after, images=images).values
    assert default[RIVER].sum() == 0 and default[PARK].sum() == 0
    rgb = new_isa(before, after, images=images, rule=RGB_RULE).values
    assert rgb[RIVER].mean() > 0.5 and rgb[PARK].mean() > 0.5
    np.testing.assert_array_equal(rgb[40:55, 60:80], default[40:55, 60:80])


def test_the_surface_tests_need_b08_the_rgb_rule_does_not():
    before, after, (d1, d2) = maps_and_images()
    rgb_only = (d1.drop_vars("B08"), d2.drop_vars("B08"))
    with pytest.raises(ChangeInputError, match="RGB_RULE"):
        new_isa(before, after, images=rgb_only)
    out = new_isa(before, after, images=rgb_only, rule=RGB_RULE)
    assert set(np.unique(out.values)) <= {0, 1}
    assert "ndwi" not in change_evidence(before, after, images=rgb_only, rule=RGB_RULE)


def with_swir(images, turbid=()):
    """The images with B11: land bright in the short-wave infrared, water dark; ``turbid``:
    windows of water whose silt makes it bright in the near infrared (NDWI below 0) on both
    dates, while it stays dark in the short-wave infrared (MNDWI above 0)."""
    out = []
    for img in images:
        img = img.copy(deep=True)
        swir = img["B04"] * 1.5 + 500.0
        for rows, cols in (RIVER, *turbid):
            swir[rows, cols] = 100.0
        for rows, cols in turbid:
            img["B08"][rows, cols] = img["B03"][rows, cols] * 1.3
        out.append(img.assign(B11=swir))
    return tuple(out)


TURBID = (slice(24, 34), slice(84, 100))  # in town, beside the new block


def test_a_turbid_river_is_water_by_its_short_wave_infrared():
    """Silt makes a river's NDWI negative, so the near-infrared test misses it; the MNDWI of
    B11 still calls it water. Without B11 the default falls back to NIR_RULE and says so."""
    before, after, (d1, d2) = maps_and_images()
    d1, d2 = d1.copy(deep=True), d2.copy(deep=True)
    for band in ("B02", "B03", "B04"):
        d1[band][TURBID], d2[band][TURBID] = 700.0, 1500.0  # its colour changed
    images = with_swir((d1, d2), turbid=[TURBID])
    ev = change_evidence(before, after, images=images).compute()
    core = (slice(26, 32), slice(86, 98))
    assert float(ev.magnitude[core].min()) > DEFAULT_RULE.magnitude
    assert float(ev.ndwi[core].max()) < 0 < float(ev.mndwi[core].min())
    auto = new_isa(before, after, images=images)
    assert json.loads(auto.attrs["change_rule"])["water_mndwi"] == DEFAULT_RULE.water_mndwi
    assert auto.values[TURBID].sum() == 0
    nir = new_isa(before, after, images=images, rule=NIR_RULE)
    assert nir.values[core].all()
    np.testing.assert_array_equal(auto.values[40:55, 60:80], nir.values[40:55, 60:80])
    # without B11: NIR_RULE, named in the attributes; the explicit DEFAULT_RULE asks for B11
    no_swir = tuple(img.drop_vars("B11") for img in images)
    fallback = new_isa(before, after, images=no_swir)
    assert json.loads(fallback.attrs["change_rule"])["water_mndwi"] is None
    np.testing.assert_array_equal(fallback.values, nir.values)
    with pytest.raises(ChangeInputError, match="swir16.*NIR_RULE"):
        new_isa(before, after, images=no_swir, rule=DEFAULT_RULE)
    with pytest.raises(ChangeInputError, match="after image has no B11"):
        new_isa(before, after, images=(images[0], no_swir[1]), rule=DEFAULT_RULE)


def test_missing_pixels_are_nodata_and_do_not_spread():
    before, after, (d1, d2) = maps_and_images()
    d2 = d2.copy(deep=True)
    d2["B03"][5:9, 5:9] = np.nan
    after = after.copy(data=after.values.copy())
    after.values[1000:1010, 1200:1210] = 255  # one 10 m pixel without any valid 1 m pixel
    out = new_isa(before, after, images=(d1, d2)).values
    assert (out[5:9, 5:9] == 255).all() and (out[100, 120] == 255)
    assert (out == 255).sum() == 17


@pytest.mark.parametrize("chunks", [(17, 23), (64, 40), (200, 200), (33, 150)])
def test_the_result_does_not_depend_on_chunking(chunks):
    before, after, (d1, d2) = maps_and_images()
    whole = change_evidence(before, after, images=(d1, d2)).compute()
    cy, cx = chunks
    lazy = change_evidence(
        before.chunk({"y": cy * 10, "x": cx * 10}),
        after.chunk({"y": cx * 10, "x": cy * 10}),
        images=(d1.chunk({"y": cy, "x": cx}), d2.chunk({"y": cx, "x": cy})),
    )
    got = lazy.compute()
    for name in ("magnitude", "context", "ndwi", "ndvi_after"):
        np.testing.assert_array_equal(got[name].values, whole[name].values)


def test_probability_maps_are_taken_as_their_mean_share():
    before, after, images = maps_and_images()
    prob_b = before.astype("float32")
    prob_a = after.astype("float32")
    np.testing.assert_array_equal(
        new_isa(prob_b, prob_a, images=images).values,
        new_isa(before, after, images=images).values,
    )


def test_the_cube_method_picks_periods_and_composites():
    before, after, (d1, d2) = maps_and_images()
    cube = xr.concat([before, after], "time")
    composites = xr.concat([d1, d2], "time")
    got = cube.isa.new_isa(
        before=np.datetime64("2017-01-01"), after=np.datetime64("2019-01-01"), images=composites
    )
    np.testing.assert_array_equal(got.values, new_isa(before, after, images=(d1, d2)).values)
    with pytest.raises(ChangeInputError, match="not a period"):
        cube.isa.new_isa(before="2015-01-01", after="2019-01-01", images=composites)
    with pytest.raises(PeriodOrderError, match="swap"):
        cube.isa.new_isa(before="2019-01-01", after="2017-01-01", images=composites)


# --- maps that cannot be compared ---------------------------------------------------------


def test_wrong_order_is_refused():
    before, after, (d1, d2) = maps_and_images()
    with pytest.raises(PeriodOrderError, match="swap"):
        new_isa(after, before, images=(d2, d1))


def test_maps_of_different_grids_are_refused():
    before, after, images = maps_and_images()
    with pytest.raises(ChangeInputError, match="different grids"):
        new_isa(before, after.isel(x=slice(10, None)), images=images)


def test_maps_of_different_models_are_refused():
    before, after, images = maps_and_images()
    other = after.assign_attrs(model="bilinear", model_sha256="cd" * 32)
    with pytest.raises(ChangeInputError, match="different models"):
        new_isa(before, other, images=images)


def test_images_off_the_grid_or_of_other_dates_are_refused():
    before, after, (d1, d2) = maps_and_images()
    with pytest.raises(ChangeInputError, match="10 m grid"):
        new_isa(before, after, images=(d1, d2.isel(y=slice(1, None))))
    with pytest.raises(ChangeInputError, match="the map was made from"):
        new_isa(before, after, images=(d2, d2))
    with pytest.raises(ChangeInputError, match="two dates"):
        new_isa(before, after, images=d1)


@pytest.mark.parametrize(
    "bad",
    [
        lambda m: m.values,  # not a DataArray
        lambda m: xr.concat([m, m.assign_coords(time=np.datetime64("2018-01-01"))], "time"),
        lambda m: m.astype("int32"),
        lambda m: m.coarsen(y=10, x=10).mean(),  # a 10 m map
        lambda m: m.copy(data=np.where(m.values == 1, 2, 0).astype("uint8")),
    ],
    ids=["numpy", "two periods", "int32", "10 m", "other codes"],
)
def test_what_is_not_one_map_of_segment_is_refused(bad):
    before, after, images = maps_and_images()
    with pytest.raises(XJointSegError):
        new_isa(bad(before), after, images=images)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"magnitude": -1},
        {"context": "0.1"},
        {"normalise_px": 200},
        {"context_px": 0},
        {"water_ndwi": 2},
        {"vegetation_ndvi": True},
        {"water_mndwi": -1.5},
    ],
)
def test_a_bad_rule_is_refused(kwargs):
    with pytest.raises(OptionError):
        ChangeRule(**kwargs)


def test_new_isa_is_public():
    assert xjointseg.new_isa is new_isa


def oscd_crop(root, rows, cols, bands):
    """Both dates of an OSCD city, cropped to the same ground (10 m pixel rows and columns of
    date 1) and segmented by the bundled model: (maps, images, window)."""
    import odc.stac
    import pystac

    window, maps, images = None, [], []
    for date in ("date1", "date2"):
        item = pystac.Item.from_file(root / date / "item.json")
        ds = odc.stac.load([item], bands=bands, resolution=10).isel(time=0)
        if window is None:
            crop = ds.isel(y=slice(*rows), x=slice(*cols))
            window = {"y": crop.y.values, "x": crop.x.values}
        ds = ds.sel(window)
        images.append(ds)
        maps.append(ds.isa.segment(model="jointseg"))
    return maps, tuple(images), window


def test_real_oscd_pair_finds_labelled_change():
    """A 100 x 100 px crop of a validation city, both dates segmented by the bundled model:
    new_isa marks labelled change far more often than unlabelled pixels."""
    import rioxarray  # noqa: F401

    root = shared_path("s2", "oscd", "nantes")
    maps, images, window = oscd_crop(root, (150, 250), (250, 350), ["red", "green", "blue", "nir"])
    out = new_isa(*maps, images=images).values
    label = xr.open_dataarray(root / "change.tif", engine="rasterio").isel(band=0)
    label = label.sel(window, method="nearest").values == 1
    assert label.sum() > 50 and out[label].mean() > 5 * out[~label].mean()


def test_the_cube_method_names_the_periods_it_compares():
    before, after, (d1, d2) = maps_and_images()
    cube = xr.concat([before, after], "time")
    got = cube.isa.new_isa(
        before="2017-01-01", after="2019-01-01", images=xr.concat([d1, d2], "time")
    )
    assert (got.attrs["before"], got.attrs["after"]) == ("2017-01-01", "2019-01-01")
    assert got.attrs["model_sha256"] == SHA


def test_real_turbid_river_is_not_new_isa():
    """Bordeaux (an OSCD test city), a 1 x 1 km crop of the Garonne and its banks, both dates
    segmented by the bundled model: the near-infrared rule calls part of the river new ISA
    (Dynamic World calls it water on both dates); the default rule, with B11, none of it."""
    import rioxarray  # noqa: F401

    root = shared_path("s2", "oscd", "bordeaux")
    bands = ["red", "green", "blue", "nir", "swir16"]
    maps, images, window = oscd_crop(root, (220, 320), (280, 380), bands)
    water = []
    for date in ("date1", "date2"):
        dw = xr.open_dataarray(root / date / "dynamicworld.tif", engine="rasterio")
        water.append(dw.sel(band=2).sel(window, method="nearest").values == 0)
    river = water[0] & water[1]
    auto = new_isa(*maps, images=images).values
    nir = new_isa(*maps, images=images, rule=NIR_RULE).values
    assert river.sum() > 1000
    assert (nir[river] == 1).sum() > 50
    assert (auto[river] == 1).sum() == 0
    assert ((auto == 1) & (nir == 0)).sum() == 0  # the MNDWI test only removes
