"""One table of user mistakes across every entry point: each raises its specific
XJointSegError subclass, before anything is written, with a message that says what to do.

(More per-stage cases live in test_input_errors.py, test_cube.py, test_change.py,
test_sentinel2.py and test_cli.py; this table is the cross-stage census.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import xjointseg
from xjointseg import errors, load_model, save_model, segment
from xjointseg.change import (
    DEFAULT_RULE,
    area,
    consistent,
    first_period,
    fraction,
    growth,
    new_isa,
    read_worldcover,
)
from xjointseg.cli import main
from xjointseg.cube import open_cube, status, to_zarr
from xjointseg.data import demo_item_path
from xjointseg.export import ExportError, ExportExistsError, to_cog
from xjointseg.metrics import (
    road_scores,
    roc_auc,
    scores,
    scores_from_counts,
    smooth_placement,
    within_pixel_auc,
)
from xjointseg.plots import plot_growth, plot_growth_classes, plot_map
from xjointseg.testing import synthetic_scene, toy_model, untrained_weights

MODEL = toy_model()
DS = synthetic_scene(32, 32, times=1)
ISA = segment(DS, MODEL).compute()
ISA2 = xr.concat([ISA, ISA.assign_coords(time=ISA.time + np.timedelta64(365, "D"))], "time")
ITEM = str(demo_item_path())
BBOX = (12.545, 52.470, 12.550, 52.474)
pytestmark = pytest.mark.filterwarnings("ignore::xjointseg.sentinel2.Sentinel2Warning")


def _feet():
    return synthetic_scene(16, 16, crs="EPSG:2263", origin=(980000.0, 200000.0))


def _pair():
    return ISA2.isel(time=[0]), ISA2.isel(time=[1])


def _twice():
    ds = DS.copy()
    ds["red"] = ds["B04"]
    return ds


def _filled(fill):
    ds = DS.astype("int16")
    for band in ("B02", "B03", "B04"):
        ds[band][..., :4, :] = fill
    return ds


def _one_band_scaled():
    ds = DS.astype("float32")
    ds["B02"] = ds["B02"] / 1e4
    return ds


def _mostly_masked():
    ds = DS.astype("float32") / 1e4
    return ds.where((ds.x < ds.x[2]) & (ds.y > ds.y[2]))


def _same_labels():
    da = DS.to_array("band").assign_coords(band=["red", "red", "blue", "nir"])
    return da.isel(time=0)


def _nodata_attr(value):
    ds = DS.copy()
    ds["B02"] = ds["B02"].assign_attrs(nodata=value)
    return ds


def _mercator_scene():
    return synthetic_scene(16, 16, crs="EPSG:3857", origin=(1450000.0, 6800000.0))


def _mercator_isa(year=0):
    isa = _isa_in("EPSG:3857")
    isa = isa.assign_coords(y=isa.y + 6800000 - float(isa.y[0]))
    return isa.assign_coords(time=isa.time + np.timedelta64(365 * year, "D"))


def _zoned(isa):
    import pandas as pd

    return isa.assign_coords(time=pd.DatetimeIndex(isa.time.values).tz_localize("UTC"))


def _isa_in(crs):
    return ISA.drop_vars("spatial_ref").odc.assign_crs(crs)


def _float_mask():
    """A pair of masks cast to float: their nodata 255 becomes a value."""
    a, b = (m.copy() for m in _pair())
    for m in (a, b):
        m[..., :40, :] = 255
    return a.astype("float32"), b.astype("float32")


def _labels_of_zeros():
    return xr.zeros_like(ISA2.isel(time=0), dtype="int64")


def _two_regions(names):
    import geopandas as gpd
    from shapely.geometry import box

    x0, y1 = float(ISA2.x[0]) - 0.5, float(ISA2.y[0]) + 0.5
    boxes = [box(x0, y1 - 320, x0 + 160, y1), box(x0 + 160, y1 - 320, x0 + 320, y1)]
    regions = gpd.GeoDataFrame(geometry=boxes, crs=f"EPSG:{ISA2.odc.crs.epsg}")
    return regions.assign(name=names)


def _halves_transposed():
    labels = xr.zeros_like(ISA2.isel(time=0), dtype="int32")
    labels[:160] = 1
    labels[160:] = 2
    return labels.transpose("x", "y")


def _offset_dn():
    ds = DS.astype("int32") + 1000
    for band in ds.data_vars:
        ds[band].attrs.update(scale_factor=0.0001, add_offset=-0.1)
    return ds


def _numbered_bands():
    da = DS.to_array("band").assign_coords(band=[1, 2, 3, 4])
    return da.assign_attrs(long_name=("B02", "B03", "B04", "B08"))


def _string_periods_out_of_order(t):
    to_zarr(ISA.assign_coords(time=["2017"]), t / "s.zarr")
    to_zarr(ISA.assign_coords(time=["2019"]), t / "s.zarr")
    to_zarr(ISA.assign_coords(time=["2018-06"]), t / "s.zarr")


# (id, call(tmp_path), exception class, words the message must hold: the fix it suggests)
MISTAKES = [
    # --- segment ---
    (
        "segment: band missing",
        lambda t: segment(DS.drop_vars("B02"), MODEL),
        errors.BandError,
        "odc.stac.load",
    ),
    (
        "segment: band twice (B04 and red)",
        lambda t: segment(_twice(), MODEL),
        errors.BandError,
        "drop_vars",
    ),
    ("segment: grid in feet", lambda t: segment(_feet(), MODEL), errors.CRSError, "reproject"),
    (
        "segment: CRS in degrees",
        lambda t: segment(DS.odc.assign_crs("EPSG:4326"), MODEL),
        errors.CRSError,
        "reproject",
    ),
    (
        "segment: reflectance 0..1",
        lambda t: segment(DS.astype("float32") / 1e4, MODEL),
        errors.ValueRangeError,
        "ds * 10000",
    ),
    (
        "segment: 8-bit RGB",
        lambda t: segment(DS.astype("uint8"), MODEL),
        errors.ValueRangeError,
        "B02, B03, B04",
    ),
    (
        "segment: boolean input",
        lambda t: segment(DS.astype(bool), MODEL),
        errors.DTypeError,
        "uint16",
    ),
    (
        "segment: 20 m pixels",
        lambda t: segment(DS.coarsen(x=2, y=2).mean(), MODEL),
        errors.GridError,
        "resolution=10",
    ),
    (
        "segment: undeclared -9999 fill",
        lambda t: segment(_filled(-9999), MODEL),
        errors.ValueRangeError,
        "'nodata' attribute",
    ),
    (
        "segment: DN x 1000",
        lambda t: segment(DS.astype("float64") * 1000, MODEL),
        errors.ValueRangeError,
        "scaled twice",
    ),
    (
        "segment: percent reflectance",
        lambda t: segment(DS.astype("float32") / 100, MODEL),
        errors.ValueRangeError,
        "ds * 100",
    ),
    (
        "segment: one band in reflectance",
        lambda t: segment(_one_band_scaled(), MODEL),
        errors.ValueRangeError,
        "B02",
    ),
    (
        "segment: one band in reflectance, lazy",
        lambda t: segment(_one_band_scaled().chunk(16), MODEL).compute(),
        errors.ValueRangeError,
        "B02",
    ),
    (
        "segment: reflectance on a 3 x 3 scene",
        lambda t: segment(synthetic_scene(3, 3).astype("float32") / 1e4, MODEL),
        errors.ValueRangeError,
        "ds * 10000",
    ),
    (
        "segment: reflectance, all but 6 pixels masked",
        lambda t: segment(_mostly_masked(), MODEL),
        errors.ValueRangeError,
        "ds * 10000",
    ),
    (
        "segment: two bands labelled alike",
        lambda t: segment(_same_labels(), MODEL),
        errors.BandError,
        "own label",
    ),
    (
        "predict: NaN input",
        lambda t: MODEL.predict(np.full((1, 3, 8, 8), np.nan, np.float32), margin=2),
        errors.PredictInputError,
        "fill_values",
    ),
    (
        "synthetic_scene: 0 rows",
        lambda t: synthetic_scene(0, 8),
        errors.OptionError,
        "positive integer",
    ),
    (
        "synthetic_scene: resolution 0",
        lambda t: synthetic_scene(8, 8, resolution=0),
        errors.OptionError,
        "positive",
    ),
    (
        "segment: Web-Mercator grid at 52 N",
        lambda t: segment(_mercator_scene(), MODEL),
        errors.CRSError,
        "utm",
    ),
    (
        "segment: one row of pixels",
        lambda t: segment(DS.isel(y=0), MODEL),
        errors.DimensionError,
        "y and x",
    ),
    (
        "segment: one pixel",
        lambda t: segment(DS.isel(y=[0], x=[0]), MODEL),
        errors.GridError,
        "2 x 2",
    ),
    (
        "segment: nodata attribute 'x'",
        lambda t: segment(_nodata_attr("x"), MODEL),
        errors.ValueRangeError,
        "attrs['nodata'] = 0",
    ),
    (
        "segment: nodata attribute a list",
        lambda t: segment(_nodata_attr([0, 1]), MODEL),
        errors.ValueRangeError,
        "not one number",
    ),
    ("segment: chunks=0", lambda t: segment(DS, MODEL, chunks=0), errors.OptionError, "int >= 1"),
    ("segment: tile='a'", lambda t: segment(DS, MODEL, tile="a"), errors.OptionError, "int"),
    ("segment: halo=-1", lambda t: segment(DS, MODEL, halo=-1), errors.OptionError, ">= 0"),
    (
        "segment: batch_size=0",
        lambda t: segment(DS, MODEL, batch_size=0),
        errors.OptionError,
        ">= 1",
    ),
    (
        "segment: output='logits'",
        lambda t: segment(DS, MODEL, output="logits"),
        errors.OptionError,
        "mask",
    ),
    (
        "segment: a numpy array",
        lambda t: segment(np.zeros((3, 8, 8)), MODEL),
        errors.DimensionError,
        "Dataset",
    ),
    (
        "segment: 4 dims",
        lambda t: segment(xr.concat([DS, DS], "run"), MODEL),
        errors.DimensionError,
        "select or stack",
    ),
    (
        "segment: empty",
        lambda t: segment(DS.isel(x=slice(0, 0)), MODEL),
        errors.EmptyInputError,
        "no pixels",
    ),
    (
        "segment: device='gpu0'",
        lambda t: segment(DS, MODEL, device="gpu0"),
        errors.OptionError,
        "'cuda:1'",
    ),
    # --- load_model ---
    (
        "load_model: unknown name",
        lambda t: load_model("no-such-model"),
        errors.UnknownModelError,
        "registered",
    ),
    (
        "load_model: not a weights file",
        lambda t: load_model(str(_file(t))),
        errors.WeightsError,
        "safetensors",
    ),
    (
        "load_model: metadata is a list",
        lambda t: load_model(_odd_weights(t, [1, 2])),
        errors.WeightsError,
        "save_model",
    ),
    (
        "load_model: bands is a number",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"bands": 3})),
        errors.WeightsError,
        "save_model",
    ),
    (
        "load_model: arch is a list",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"arch": ["toy"]})),
        errors.WeightsError,
        "save_model",
    ),
    (
        "load_model: format is text",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"format": "2"})),
        errors.WeightsError,
        "save_model",
    ),
    (
        "load_model: threshold above 1",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"threshold": 7})),
        errors.WeightsError,
        "between 0 and 1",
    ),
    (
        "load_model: unknown mask rule",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"mask_rule": "majority"})),
        errors.WeightsError,
        "'threshold', 'fraction'",
    ),
    (
        "load_model: mask slope not positive",
        lambda t: load_model(_odd_weights(t, GOOD_META | {"mask_slope": 0})),
        errors.WeightsError,
        "positive number",
    ),
    (
        "save_model: over a file that is not weights",
        lambda t: save_model(MODEL.network, _file(t), name="m", bands=("B04", "B03", "B02")),
        errors.OutputExistsError,
        "another path",
    ),
    # --- to_zarr / open_cube ---
    (
        "to_zarr: a Dataset",
        lambda t: to_zarr(ISA.to_dataset(), t / "c.zarr"),
        errors.CubeInputError,
        "isa.to_zarr",
    ),
    (
        "to_zarr: probabilities as isa",
        lambda t: to_zarr(ISA.astype("float32"), t / "c.zarr"),
        errors.CubeInputError,
        "probability=",
    ),
    (
        "to_zarr: values other than 0/1/255",
        lambda t: to_zarr(ISA * 7, t / "c.zarr"),
        errors.CubeInputError,
        "recode",
    ),
    (
        "to_zarr: no period",
        lambda t: to_zarr(ISA.isel(time=0).drop_vars("time"), t / "c.zarr"),
        errors.CubeInputError,
        "expand_dims",
    ),
    (
        "to_zarr: south-up map",
        lambda t: to_zarr(ISA.isel(y=slice(None, None, -1)), t / "c.zarr"),
        errors.CubeInputError,
        "isel(y=",
    ),
    (
        "to_zarr: map in degrees",
        lambda t: to_zarr(_isa_in("EPSG:4326"), t / "c.zarr"),
        errors.CubeInputError,
        "reproject",
    ),
    ("to_zarr: store is a file", lambda t: to_zarr(ISA, _file(t)), errors.StorePathError, "folder"),
    (
        "to_zarr: overwrite a foreign folder",
        lambda t: to_zarr(ISA, _folder(t), overwrite=True),
        errors.CubeMismatchError,
        "remove it yourself",
    ),
    (
        "to_zarr: part=(3, 2)",
        lambda t: to_zarr(ISA, t / "c.zarr", part=(3, 2)),
        errors.OptionError,
        "0 <= k < n",
    ),
    (
        "to_zarr: inner_chunks='a'",
        lambda t: to_zarr(ISA, t / "c.zarr", inner_chunks="a"),
        errors.OptionError,
        "int",
    ),
    ("to_zarr: store=5", lambda t: to_zarr(ISA, 5), errors.OptionError, "path"),
    (
        "open_cube: nothing there",
        lambda t: open_cube(t / "none.zarr"),
        errors.NotACubeError,
        "to_zarr",
    ),
    ("open_cube: a file", lambda t: open_cube(_file(t)), errors.NotACubeError, "to_zarr"),
    ("status: a file", lambda t: status(_file(t)), errors.NotACubeError, "no xjointseg cube"),
    ("to_zarr: unknown protocol", lambda t: to_zarr(ISA, "foo://x"), errors.OptionError, "s3://"),
    ("open_cube: unknown protocol", lambda t: open_cube("foo://x"), errors.OptionError, "s3://"),
    (
        "open_cube: chunks=5",
        lambda t: open_cube(_cube(t), chunks=5),
        errors.OptionError,
        "chunks={'y': 2048",
    ),
    (
        "open_cube: chunks of a dim it lacks",
        lambda t: open_cube(_cube(t), chunks={"q": 3}),
        errors.OptionError,
        "its dims are",
    ),
    (
        "open_cube: chunks negative",
        lambda t: open_cube(_cube(t), chunks={"x": -3}),
        errors.OptionError,
        ">= 1",
    ),
    (
        "read_worldcover: like an ndarray",
        lambda t: read_worldcover(_file(t), np.zeros((4, 4))),
        errors.OptionError,
        "GeoBox",
    ),
    (
        "register_model: client None",
        lambda t: _register(None),
        errors.OptionError,
        "distributed Client",
    ),
    (
        "status: not a cube",
        lambda t: status(t / "none.zarr"),
        errors.NotACubeError,
        "no xjointseg cube",
    ),
    # --- analyses ---
    (
        "area: cube in degrees",
        lambda t: area(_isa_in("EPSG:4326")),
        errors.CubeInputError,
        "reproject",
    ),
    ("area: regions as text", lambda t: area(ISA, "Berlin"), errors.RegionError, "GeoDataFrame"),
    (
        "area: Web-Mercator cube at 52 N",
        lambda t: area(_mercator_isa()),
        errors.CRSError,
        "equal-area",
    ),
    (
        "growth: Web-Mercator cube",
        lambda t: growth(xr.concat([_mercator_isa(), _mercator_isa(1)], "time")),
        errors.CRSError,
        "utm",
    ),
    (
        "growth: zone-aware period labels",
        lambda t: growth(_zoned(ISA2)),
        errors.CubeInputError,
        "tz_convert(None)",
    ),
    (
        "to_zarr: zone-aware period labels",
        lambda t: to_zarr(_zoned(ISA), t / "c.zarr"),
        errors.CubeInputError,
        "time zone",
    ),
    (
        "to_zarr: a NaT period label",
        lambda t: to_zarr(ISA.assign_coords(time=[np.datetime64("NaT", "ns")]), t / "c.zarr"),
        errors.CubeInputError,
        "no label",
    ),
    ("growth: one period", lambda t: growth(ISA), errors.NotEnoughPeriodsError, "to_zarr"),
    (
        "growth: classes a dict",
        lambda t: growth(ISA2, classes={"a": "b"}),
        errors.OptionError,
        "pairs",
    ),
    ("growth: min_valid 5", lambda t: growth(ISA2, min_valid=5), errors.OptionError, "0 to 1"),
    (
        "growth: years with NaN",
        lambda t: growth(ISA2, years=[float("nan"), 2019]),
        errors.OptionError,
        "increasing values",
    ),
    (
        "growth: years a string",
        lambda t: growth(ISA2, years="20172019"),
        errors.OptionError,
        "numbers",
    ),
    (
        "growth: years of words",
        lambda t: growth(ISA2, years=["a", "b"]),
        errors.OptionError,
        "numbers",
    ),
    ("growth: years=5", lambda t: growth(ISA2, years=5), errors.OptionError, "numbers"),
    (
        "growth: years a dict missing a period",
        lambda t: growth(ISA2, years={}),
        errors.OptionError,
        "no entry",
    ),
    (
        "first_period: periods out of order",
        lambda t: first_period(ISA2.isel(time=[1, 0])),
        errors.OptionError,
        "sortby",
    ),
    (
        "growth: thresholds increase",
        lambda t: growth(ISA2, classes=[("slow", 0.0), ("fast", 0.1)]),
        errors.OptionError,
        "decrease",
    ),
    ("fraction: factor 7", lambda t: fraction(ISA, 7), errors.FactorError, "divide"),
    ("first_period: gaps=3", lambda t: first_period(ISA, gaps=3), errors.OptionError, "ignore"),
    (
        "read_worldcover: not a raster",
        lambda t: read_worldcover(_file(t), fraction(ISA, 10)),
        errors.ReferenceRasterError,
        "GeoTIFF",
    ),
    (
        "new_isa: dates swapped",
        lambda t: new_isa(ISA2.isel(time=[1]), ISA2.isel(time=[0]), images=(DS, DS)),
        errors.PeriodOrderError,
        "swap",
    ),
    (
        "new_isa: images without B08",
        lambda t: new_isa(*_pair(), images=(DS[["B04", "B03", "B02"]],) * 2),
        errors.ChangeInputError,
        "RGB_RULE",
    ),
    (
        "new_isa: a period the cube lacks",
        lambda t: ISA2.isa.new_isa(before="2001-01-01", after="2019-01-01", images=DS),
        errors.ChangeInputError,
        "not a period",
    ),
    (
        "new_isa: DEFAULT_RULE asked for, images without B11",
        lambda t: new_isa(*_pair(), images=(DS, DS), rule=DEFAULT_RULE),
        errors.ChangeInputError,
        "NIR_RULE",
    ),
    ("consistent: cell 7", lambda t: consistent(ISA2, cell=7), errors.FactorError, "divide"),
    (
        "consistent: images for one period of two",
        lambda t: consistent(ISA2, images=[DS]),
        errors.ChangeInputError,
        "one image per period",
    ),
    (
        "consistent: a path as images",
        lambda t: consistent(ISA2, images="composites.zarr"),
        errors.ChangeInputError,
        "sequence of one image per period",
    ),
    (
        "consistent: images with cell=1",
        lambda t: consistent(ISA2, images=[DS, DS], cell=1),
        errors.OptionError,
        "leave cell at 10",
    ),
    (
        "consistent: new_isa's rule without images",
        lambda t: consistent(ISA2, rule=DEFAULT_RULE),
        errors.OptionError,
        "pass images",
    ),
    ("plot_map: period 9 of 1", lambda t: plot_map(ISA, 9), errors.OptionError, "out of range"),
    # --- to_cog ---
    (
        "to_cog: probabilities",
        lambda t: to_cog(ISA.astype("float32"), t / "a.tif"),
        ExportError,
        "rio.to_raster",
    ),
    (
        "to_cog: a foreign file with overwrite",
        lambda t: to_cog(ISA, _file(t), overwrite=True),
        ExportExistsError,
        "remove it yourself",
    ),
    (
        "to_cog: under a file",
        lambda t: to_cog(ISA, _file(t) / "a.tif"),
        errors.StorePathError,
        "not a folder",
    ),
    (
        "to_cog: values other than 0/1/255",
        lambda t: to_cog(ISA * 3, t / "a.tif"),
        errors.CubeInputError,
        "recode",
    ),
    # --- load_sentinel2 ---
    (
        "load_sentinel2: resampling='bicubic'",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, resampling="bicubic"),
        errors.OptionError,
        "cubic_spline",
    ),
    (
        "load_sentinel2: sign='token'",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, sign="token"),
        errors.OptionError,
        "function",
    ),
    (
        "load_sentinel2: patch_url=5",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, patch_url=5),
        errors.OptionError,
        "function",
    ),
    (
        "load_sentinel2: staging store with an unknown protocol",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, store="foo://stage"),
        errors.OptionError,
        "s3://",
    ),
    (
        "load_sentinel2: crs='bogus'",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, crs="bogus"),
        errors.CRSError,
        "utm",
    ),
    (
        "load_sentinel2: resolution='x'",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, resolution="x"),
        errors.OptionError,
        "> 0",
    ),
    (
        "load_sentinel2: cloud cover 'x'",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, max_cloud_cover="x"),
        errors.OptionError,
        "0-100",
    ),
    (
        "load_sentinel2: swapped bbox",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, bbox=(12.55, 52.47, 12.54, 52.48)),
        errors.BBoxError,
        "min_lon",
    ),
    (
        "load_sentinel2: period 2017/2015",
        lambda t: xjointseg.load_sentinel2(ITEM, periods="2017/2015"),
        errors.InvalidPeriodError,
        "2017/2015",
    ),
    (
        "load_sentinel2: no items in 2019",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2019, bbox=BBOX),
        errors.NoItemsError,
        "2019",
    ),
    (
        "load_sentinel2: store under a file",
        lambda t: xjointseg.load_sentinel2(
            ITEM, periods=2017, bbox=BBOX, store=_file(t) / "s.zarr"
        ),
        errors.StorePathError,
        "not a folder",
    ),
    (
        "load_sentinel2: store is a file",
        lambda t: xjointseg.load_sentinel2(ITEM, periods=2017, bbox=BBOX, store=_file(t)),
        errors.StorePathError,
        "folder",
    ),
    (
        "load_sentinel2: overwrite a foreign folder",
        lambda t: xjointseg.load_sentinel2(
            ITEM, periods=2017, bbox=BBOX, store=_folder(t), overwrite=True
        ),
        errors.StagingStoreExistsError,
        "remove it yourself",
    ),
    # --- round 3: option types (each once silently wrong or a bare traceback) ---
    (
        "to_zarr: overwrite='False'",
        lambda t: to_zarr(ISA, t / "c.zarr", overwrite="False"),
        errors.OptionError,
        "True or False",
    ),
    ("to_zarr: part=5", lambda t: to_zarr(ISA, t / "c.zarr", part=5), errors.OptionError, "(k, n)"),
    (
        "to_zarr: part=(0,)",
        lambda t: to_zarr(ISA, t / "c.zarr", part=(0,)),
        errors.OptionError,
        "(k, n)",
    ),
    (
        "to_zarr: part=(True, 2)",
        lambda t: to_zarr(ISA, t / "c.zarr", part=(True, 2)),
        errors.OptionError,
        "two ints",
    ),
    ("fraction: min_valid=2", lambda t: fraction(ISA, min_valid=2), errors.OptionError, "0 to 1"),
    (
        "fraction: min_valid='0.5'",
        lambda t: fraction(ISA, min_valid="0.5"),
        errors.OptionError,
        "a number",
    ),
    (
        "growth: min_valid='0.5'",
        lambda t: growth(ISA2, min_valid="0.5"),
        errors.OptionError,
        "a number",
    ),
    (
        "growth: min_valid NaN",
        lambda t: growth(ISA2, min_valid=float("nan")),
        errors.OptionError,
        "0 to 1",
    ),
    (
        "save_model: bands='B04'",
        lambda t: _save(t, bands="B04"),
        errors.WeightsError,
        "list of band names",
    ),
    (
        "save_model: a torch module that is not ours",
        lambda t: _save(t, network=_conv()),
        errors.WeightsError,
        "not an xjointseg network",
    ),
    ("save_model: path=None", lambda t: _save(t, path=None), errors.WeightsError, "file path"),
    (
        "save_model: under a file",
        lambda t: _save(t, path=_file(t) / "w.safetensors"),
        errors.StorePathError,
        "not a folder",
    ),
]


def _cube(tmp_path):
    """A cube of the user's, outside the folders the census checks stay untouched."""
    store = tmp_path / "users-cube.zarr"
    if not store.exists():
        to_zarr(ISA, store)
    return store


def _register(client):
    from xjointseg.distributed import register_model

    return register_model(client, "toy")


def _conv():
    import torch

    return torch.nn.Conv2d(3, 1, 1)


def _save(tmp_path, *, network=None, path="default", bands=("B04", "B03", "B02")):
    from xjointseg.models import save_model
    from xjointseg.testing import ToyNet

    network = ToyNet(in_bands=3) if network is None else network
    path = tmp_path / "w.safetensors" if path == "default" else path
    return save_model(network, path, name="mine", bands=bands)


def _odd_weights(tmp_path, meta) -> str:
    """A safetensors file whose xjointseg metadata is malformed JSON of the right syntax."""
    import json

    from safetensors.numpy import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, path, metadata={"xjointseg": json.dumps(meta)})
    return str(path)


GOOD_META = {"arch": "toy", "config": {}, "name": "x", "bands": ["B04", "B03", "B02"]}


def _file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("the user's own")
    return path


def _folder(tmp_path):
    path = tmp_path / "own-folder"
    path.mkdir(exist_ok=True)
    (path / "notes.txt").write_text("the user's own")
    return path


def _as_0_255(isa):
    """A mask stored as an image: 255 for ISA, no nodata declared."""
    out = isa.copy(data=np.where(isa.values == 1, 255, isa.values).astype("uint8"))
    out.attrs = {}
    return out


def _regions(crs=None, where=None):
    import geopandas as gpd
    from shapely.geometry import box

    b = ISA.odc.geobox.extent.boundingbox
    shape = box(*where) if where else box(b.left, b.bottom, b.right, b.top)
    return gpd.GeoDataFrame({"name": ["a"]}, geometry=[shape], crs=crs)


def _load(**options):
    return xjointseg.load_sentinel2(ITEM, **{"periods": 2017, "bbox": BBOX, **options})


# the second round of the census, by entry point
MISTAKES += [
    # --- segment ---
    (
        "segment: unknown model name",
        lambda t: segment(DS, "nope"),
        errors.UnknownModelError,
        "pass one of the names",
    ),
    (
        "segment: batch_size=2.5",
        lambda t: segment(DS, MODEL, batch_size=2.5),
        errors.OptionError,
        "must be an int",
    ),
    (
        "segment: chunks='big'",
        lambda t: segment(DS, MODEL, chunks="big"),
        errors.OptionError,
        "'auto', 'keep'",
    ),
    (
        "segment: DN offset to negative",
        lambda t: segment(DS.astype("float32") - 5000, MODEL).compute(),
        errors.ValueRangeError,
        "Declare it",
    ),
    (
        "segment: DN above 65535",
        lambda t: segment(DS.astype("float32") + 70000, MODEL).compute(),
        errors.ValueRangeError,
        "scaled twice",
    ),
    (
        "segment: complex values",
        lambda t: segment(DS.astype("complex64"), MODEL),
        errors.DTypeError,
        "use integer DN",
    ),
    (
        "segment: text values",
        lambda t: segment(DS.astype(str), MODEL),
        errors.DTypeError,
        "use integer DN",
    ),
    (
        "segment: an extra dim",
        lambda t: segment(DS.expand_dims(member=[0, 1]), MODEL),
        errors.DimensionError,
        "select or stack",
    ),
    (
        "segment: one band as a DataArray",
        lambda t: segment(DS["B04"], MODEL),
        errors.DimensionError,
        "'band' dimension",
    ),
    # --- load_model ---
    (
        "load_model: a folder",
        lambda t: load_model(str(t)),
        errors.UnknownModelError,
        ".safetensors",
    ),
    (
        "load_model: device='tpu'",
        lambda t: load_model("jointseg", device="tpu"),
        errors.OptionError,
        "use 'auto', 'cpu'",
    ),
    (
        "load_model: sha256 not hex",
        lambda t: load_model("jointseg", sha256="xyz"),
        errors.OptionError,
        "64 hex digits",
    ),
    # --- to_zarr ---
    (
        "to_zarr: sources=5",
        lambda t: to_zarr(ISA, t / "c.zarr", sources=5),
        errors.OptionError,
        "list of str",
    ),
    (
        "to_zarr: probability on another grid",
        lambda t: to_zarr(
            ISA,
            t / "c.zarr",
            probability=segment(synthetic_scene(16, 16, times=1), MODEL, output="probability"),
        ),
        errors.CubeInputError,
        "same dims, periods and grid",
    ),
    (
        "to_zarr: storage_options='x'",
        lambda t: to_zarr(ISA, t / "c.zarr", storage_options="x"),
        errors.OptionError,
        "mapping of fsspec options",
    ),
    (
        "to_zarr: inner_chunks=7",
        lambda t: to_zarr(ISA, t / "c.zarr", inner_chunks=7),
        errors.OptionError,
        "pick a divisor",
    ),
    (
        "to_zarr: compute='yes'",
        lambda t: to_zarr(ISA, t / "c.zarr", compute="yes"),
        errors.OptionError,
        "True or False",
    ),
    (
        "to_zarr: progress=2",
        lambda t: to_zarr(ISA, t / "c.zarr", progress=2),
        errors.OptionError,
        "True or False",
    ),
    (
        "to_zarr: probability as isa",
        lambda t: to_zarr(segment(DS, MODEL, output="probability"), t / "c.zarr"),
        errors.CubeInputError,
        "pass the mask as isa",
    ),
    (
        "to_zarr: a 0/255 mask",
        lambda t: to_zarr(_as_0_255(ISA), t / "c.zarr"),
        errors.CubeInputError,
        "xr.where(isa == 255, 1, 0)",
    ),
    (
        "to_zarr: zarr_format=4",
        lambda t: to_zarr(ISA, t / "c.zarr", zarr_format=4),
        errors.OptionError,
        "or 2 (for GDAL and QGIS)",
    ),
    (
        "to_zarr: inner_chunks in Zarr v2",
        lambda t: to_zarr(ISA, t / "c.zarr", zarr_format=2, inner_chunks=32),
        errors.OptionError,
        "not with zarr_format=2",
    ),
    # --- open_cube ---
    (
        "open_cube: store=None",
        lambda t: open_cube(None),
        errors.OptionError,
        "local path or an fsspec URL",
    ),
    # --- area, growth, fraction ---
    (
        "area: regions without CRS",
        lambda t: area(ISA, _regions()),
        errors.RegionCRSError,
        "set_crs",
    ),
    (
        "area: name_column missing",
        lambda t: area(ISA, _regions(ISA.odc.crs), name_column="nope"),
        errors.RegionError,
        "columns:",
    ),
    (
        "area: regions elsewhere",
        lambda t: area(ISA, _regions(ISA.odc.crs, (0, 0, 1, 1))),
        errors.RegionOutsideError,
        "Check their CRS",
    ),
    (
        "area: a 0/255 mask",
        lambda t: area(_as_0_255(ISA)),
        errors.CubeInputError,
        "attrs['nodata'] = 255",
    ),
    (
        "growth: regions without CRS",
        lambda t: growth(ISA2, _regions()),
        errors.RegionCRSError,
        "set_crs",
    ),
    (
        "growth: a NaN class threshold",
        lambda t: growth(ISA2, classes=[("fast", math.nan), ("slow", -math.inf)]),
        errors.OptionError,
        "not NaN",
    ),
    (
        "growth: class thresholds in percent",
        lambda t: growth(ISA2, classes=[("fast", 5), ("slow", -math.inf)]),
        errors.OptionError,
        "did you mean 0.05",
    ),
    (
        "growth: classes open at the bottom",
        lambda t: growth(ISA2, classes=[("fast", 0.05), ("slow", 0.01)]),
        errors.OptionError,
        "-math.inf",
    ),
    ("fraction: factor 0", lambda t: fraction(ISA, 0), errors.FactorError, "positive integer"),
    (
        "fraction: factor '10'",
        lambda t: fraction(ISA, "10"),
        errors.FactorError,
        "positive integer",
    ),
    # --- to_cog ---
    (
        "to_cog: two periods, none picked",
        lambda t: to_cog(ISA2, t / "a.tif"),
        ExportError,
        "pass period=",
    ),
    (
        "to_cog: compress='zip'",
        lambda t: to_cog(ISA, t / "a.tif", compress="zip"),
        errors.OptionError,
        "'deflate'",
    ),
    (
        "to_cog: blocksize 100",
        lambda t: to_cog(ISA, t / "a.tif", blocksize=100),
        errors.OptionError,
        "multiple of 16",
    ),
    ("to_cog: path None", lambda t: to_cog(ISA, None), errors.OptionError, "write locally"),
    (
        "to_cog: a 0/255 mask",
        lambda t: to_cog(_as_0_255(ISA), t / "a.tif"),
        errors.CubeInputError,
        "attrs['nodata'] = 255",
    ),
    # --- metrics, plots, references ---
    (
        "scores: a Dataset",
        lambda t: scores(ISA.to_dataset(name="isa"), ISA),
        errors.MetricInputError,
        "ds['isa']",
    ),
    (
        "roc_auc: text scores",
        lambda t: roc_auc(["a", "b"], [0, 1]),
        errors.MetricInputError,
        "numbers",
    ),
    (
        "roc_auc: scores and labels of other lengths",
        lambda t: roc_auc([0.1, 0.2, 0.3], [0, 1]),
        errors.MetricInputError,
        "one value per pixel",
    ),
    (
        "scores_from_counts: a list",
        lambda t: scores_from_counts([1, 2, 3, 4]),
        errors.MetricInputError,
        "confusion()",
    ),
    (
        "road_scores: 1-D arrays",
        lambda t: road_scores(np.zeros(10), np.zeros(10)),
        errors.MetricInputError,
        "map (y, x)",
    ),
    ("plot_growth: a dict", lambda t: plot_growth({"a": 1}), errors.OptionError, "area()"),
    (
        "read_worldcover: path 5",
        lambda t: read_worldcover(5, ISA),
        errors.OptionError,
        "path or URL",
    ),
    # --- load_sentinel2 ---
    (
        "load_sentinel2: periods=[]",
        lambda t: _load(periods=[]),
        errors.InvalidPeriodError,
        "periods=[2017",
    ),
    (
        "load_sentinel2: periods='last year'",
        lambda t: _load(periods="last year"),
        errors.InvalidPeriodError,
        "use 2017",
    ),
    (
        "load_sentinel2: bbox of 3 numbers",
        lambda t: _load(bbox=(1, 2, 3)),
        errors.BBoxError,
        "4 finite numbers",
    ),
    (
        "load_sentinel2: bbox in metres",
        lambda t: _load(bbox=(500000, 5800000, 501000, 5801000)),
        errors.BBoxError,
        "projected",
    ),
    (
        "load_sentinel2: bands=['B99']",
        lambda t: _load(bands=["B99"]),
        errors.BandError,
        "common names",
    ),
    (
        "load_sentinel2: composite='max'",
        lambda t: _load(composite="max"),
        errors.OptionError,
        "'median', 'mean' or None",
    ),
    (
        "load_sentinel2: catalog None",
        lambda t: xjointseg.load_sentinel2(None, periods=2017),
        errors.CatalogError,
        "preset name",
    ),
    (
        "load_sentinel2: catalog file missing",
        lambda t: xjointseg.load_sentinel2("/nope/catalog.json", periods=2017),
        errors.CatalogError,
        "existing STAC file",
    ),
    (
        "load_sentinel2: max_cloud_cover=150",
        lambda t: _load(max_cloud_cover=150),
        errors.OptionError,
        "percentage",
    ),
    (
        "load_sentinel2: bbox and geopolygon",
        lambda t: _load(geopolygon=_regions().geometry[0]),
        errors.OptionError,
        "not both",
    ),
    (
        "load_sentinel2: cloud_mask='yes'",
        lambda t: _load(cloud_mask="yes"),
        errors.OptionError,
        "SCL classes",
    ),
    ("load_sentinel2: harmonize=5", lambda t: _load(harmonize=5), errors.OptionError, "a callable"),
    (
        "load_sentinel2: chunks='auto'",
        lambda t: _load(chunks="auto"),
        errors.OptionError,
        "positive int",
    ),
    (
        "consistent: periods out of order",
        lambda t: consistent(ISA2.isel(time=[1, 0]), cell=1),
        errors.OptionError,
        "sortby",
    ),
    (
        "first_period: string labels out of order",
        lambda t: first_period(ISA2.assign_coords(time=["2017", "2018"]).isel(time=[1, 0])),
        errors.OptionError,
        "sortby",
    ),
    (
        "new_isa: masks cast to float (255 read as a probability)",
        lambda t: new_isa(*_float_mask(), images=(DS, DS)),
        errors.ChangeInputError,
        "as uint8",
    ),
    (
        "new_isa: images as numpy arrays",
        lambda t: new_isa(*_pair(), images=(np.zeros((3, 32, 32)),) * 2),
        errors.ChangeInputError,
        "xarray",
    ),
    (
        "ChangeRule: magnitude NaN",
        lambda t: xjointseg.change.ChangeRule(magnitude=math.nan),
        errors.OptionError,
        "finite",
    ),
    (
        "ChangeRule: context 5 (a share above 1)",
        lambda t: xjointseg.change.ChangeRule(context=5),
        errors.OptionError,
        "0..1",
    ),
    (
        "ChangeRule: water_ndwi NaN (switches the test off)",
        lambda t: xjointseg.change.ChangeRule(water_ndwi=math.nan),
        errors.OptionError,
        "None (no test)",
    ),
    (
        "ChangeRule: smooth_sigma infinite",
        lambda t: xjointseg.change.ChangeRule(smooth_sigma=math.inf),
        errors.OptionError,
        "0..100",
    ),
    (
        "ChangeRule: a window of a billion pixels",
        lambda t: xjointseg.change.ChangeRule(normalise_px=10**9 + 1),
        errors.OptionError,
        "1..2001",
    ),
    (
        "within_pixel_auc: maps of different shapes",
        lambda t: within_pixel_auc(np.zeros((10, 20)), np.zeros((20, 10))),
        errors.MetricInputError,
        "same shape",
    ),
    (
        "within_pixel_auc: scale=0",
        lambda t: within_pixel_auc(np.zeros((10, 20)), np.zeros((10, 20)), scale=0),
        errors.MetricInputError,
        "positive integer",
    ),
    (
        "within_pixel_auc: shares=0.5",
        lambda t: within_pixel_auc(np.zeros((10, 20)), np.zeros((10, 20)), shares=0.5),
        errors.MetricInputError,
        "pair",
    ),
    (
        "within_pixel_auc: a stack of maps",
        lambda t: within_pixel_auc(np.zeros((2, 20, 20)), np.zeros((2, 20, 20))),
        errors.MetricInputError,
        "one map",
    ),
    (
        "smooth_placement: scale='10'",
        lambda t: smooth_placement(np.zeros((20, 20)), scale="10"),
        errors.MetricInputError,
        "positive integer",
    ),
    (
        "road_scores: a probability map",
        lambda t: road_scores(np.full((10, 20), 0.7), np.ones((10, 20), bool)),
        errors.MetricInputError,
        "0/1/255",
    ),
    (
        "road_scores: min_cover='0.3'",
        lambda t: road_scores(np.zeros((10, 20), np.uint8), np.ones((10, 20)), min_cover="0.3"),
        errors.MetricInputError,
        "0..1",
    ),
    (
        "road_scores: maps of different shapes",
        lambda t: road_scores(np.zeros((10, 20), np.uint8), np.ones((20, 10))),
        errors.MetricInputError,
        "same shape",
    ),
    (
        "scores: ignore='255' (a string)",
        lambda t: scores([1, 0], [1, 0], ignore="255"),
        errors.MetricInputError,
        "number",
    ),
    (
        "area: a label raster with no region",
        lambda t: area(ISA2, _labels_of_zeros()),
        errors.RegionOutsideError,
        "no region",
    ),
    (
        "to_cog: overwrite='no'",
        lambda t: to_cog(ISA, t / "a.tif", overwrite="no"),
        errors.OptionError,
        "True or False",
    ),
    (
        "to_cog: a path ending with a separator",
        lambda t: to_cog(ISA, f"{t}/new/"),
        ExportExistsError,
        "names a folder",
    ),
    (
        "save_model: extra='x'",
        lambda t: save_model(
            MODEL.network, t / "m.safetensors", name="m", bands=MODEL.bands, extra="x"
        ),
        errors.WeightsError,
        "dict",
    ),
    (
        "save_model: extra with a numpy number",
        lambda t: save_model(
            MODEL.network,
            t / "m.safetensors",
            name="m",
            bands=MODEL.bands,
            extra={"v": np.float32(1)},
        ),
        errors.WeightsError,
        "JSON",
    ),
    (
        "save_model: extra that overrides the bands",
        lambda t: save_model(
            MODEL.network, t / "m.safetensors", name="m", bands=MODEL.bands, extra={"bands": 5}
        ),
        errors.WeightsError,
        "may not set",
    ),
    (
        "save_model: name=None",
        lambda t: save_model(MODEL.network, t / "m.safetensors", name=None, bands=MODEL.bands),
        errors.WeightsError,
        "non-empty string",
    ),
    (
        "save_model: path ''",
        lambda t: save_model(MODEL.network, "", name="m", bands=MODEL.bands),
        errors.WeightsError,
        "file path",
    ),
    (
        "synthetic_scene: resolution 10.5",
        lambda t: synthetic_scene(24, 24, resolution=10.5),
        errors.OptionError,
        "holds exactly",
    ),
    (
        "synthetic_scene: crs in degrees",
        lambda t: synthetic_scene(24, 24, crs="EPSG:4326"),
        errors.OptionError,
        "projected",
    ),
    (
        "synthetic_scene: crs 'bogus'",
        lambda t: synthetic_scene(24, 24, crs="bogus"),
        errors.OptionError,
        "not a CRS",
    ),
    (
        "synthetic_scene: seed -1",
        lambda t: synthetic_scene(8, 8, seed=-1),
        errors.OptionError,
        ">= 0",
    ),
    (
        "synthetic_scene: dtype 'foo'",
        lambda t: synthetic_scene(8, 8, dtype="foo"),
        errors.OptionError,
        "numpy dtype",
    ),
    (
        "synthetic_scene: origin 'a'",
        lambda t: synthetic_scene(8, 8, origin="a"),
        errors.OptionError,
        "top-left",
    ),
    (
        "synthetic_scene: bands 'B02' (a string)",
        lambda t: synthetic_scene(8, 8, bands="B02"),
        errors.OptionError,
        "list of band names",
    ),
    (
        "untrained_weights: arch 'bogus'",
        lambda t: untrained_weights(t / "u.safetensors", arch="bogus"),
        errors.OptionError,
        "known",
    ),
    (
        "to_zarr: durations as period labels",
        lambda t: to_zarr(ISA.assign_coords(time=[np.timedelta64(1, "D")]), t / "c.zarr"),
        errors.CubeInputError,
        "durations",
    ),
    (
        "to_zarr: string labels appended out of time order",
        _string_periods_out_of_order,
        errors.CubeMismatchError,
        "after the last",
    ),
    (
        "area: a transposed (x, y) label raster",
        lambda t: area(ISA2, _halves_transposed()),
        errors.RegionError,
        "transpose",
    ),
    (
        "plot_growth: regions that share a name",
        lambda t: plot_growth(area(ISA2, _two_regions(["a", "a"]), name_column="name")),
        errors.OptionError,
        "name each region once",
    ),
    (
        "growth: name_column with a missing name",
        lambda t: growth(ISA2, _two_regions(["a", None]), name_column="name"),
        errors.RegionError,
        "no name",
    ),
    (
        "plot_growth_classes: pair=5",
        lambda t: plot_growth_classes(growth(ISA2), pair=5),
        errors.OptionError,
        "position",
    ),
    (
        "plot_growth_classes: regions='regions'",
        lambda t: plot_growth_classes(growth(ISA2), regions="regions"),
        errors.OptionError,
        "GeoDataFrame",
    ),
    (
        "plot_growth_classes: an empty table",
        lambda t: plot_growth_classes(growth(ISA2).iloc[:0]),
        errors.OptionError,
        "no rows",
    ),
    ("plot_map: cmap='nope'", lambda t: plot_map(ISA, cmap="nope"), errors.OptionError, "colormap"),
    (
        "plot_map: max_pixels='a'",
        lambda t: plot_map(ISA, max_pixels="a"),
        errors.OptionError,
        "whole number",
    ),
    ("plot_map: ax='x'", lambda t: plot_map(ISA, ax="x"), errors.OptionError, "Axes"),
    (
        "segment: tile=10**9",
        lambda t: segment(DS, MODEL, tile=10**9 // 32 * 32),
        errors.OptionError,
        "larger than any tile",
    ),
    (
        "segment: a tile whose activations exceed the memory",
        lambda t: segment(DS, load_model("jointseg"), tile=8192),
        errors.OptionError,
        "GiB",
    ),
    (
        "segment: DN with an add_offset left in the attributes",
        lambda t: segment(_offset_dn(), MODEL),
        errors.ValueRangeError,
        "+ (-1000)",
    ),
    (
        "segment: bands numbered, named in long_name",
        lambda t: segment(_numbered_bands(), MODEL),
        errors.BandError,
        "long_name",
    ),
    (
        "load_sentinel2: crs in degrees",
        lambda t: _load(crs="EPSG:4326"),
        errors.CRSError,
        "not in metres",
    ),
    (
        "load_sentinel2: crs in feet",
        lambda t: _load(crs="EPSG:2263"),
        errors.CRSError,
        "not in metres",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "fix"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistake(tmp_path, call, exc, fix):
    with pytest.raises(exc) as info:
        call(tmp_path)
    assert isinstance(info.value, errors.XJointSegError)
    assert fix in str(info.value), str(info.value)
    # nothing of the user's was touched, and no store was started
    for name in ("a-file",):
        if (tmp_path / name).exists():
            assert (tmp_path / name).read_text() == "the user's own"
    if (tmp_path / "own-folder").exists():
        assert [p.name for p in (tmp_path / "own-folder").iterdir()] == ["notes.txt"]
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / "a.tif").exists()


CLI_MISTAKES = [
    ("demo --out FILE", lambda t, w: ["demo", "--out", str(_file(t)), "--model", w], "is a file"),
    ("map --crs bogus", lambda t, w: [*_map(t, w), "--crs", "bogus"], "not a CRS"),
    ("map --out FILE", lambda t, w: _map(t, w, out=_file(t)), "is a file"),
    ("map --cog-dir FILE", lambda t, w: [*_map(t, w), "--cog-dir", str(_file(t))], "is a file"),
    (
        "train --data dubai=/missing",
        lambda t, w: ["train", "--data", "dubai=/missing", "--out", str(t)],
        "not a folder",
    ),
    (
        "train --data dubai=FOLDER without classes.json",
        lambda t, w: ["train", "--data", f"dubai={_folder(t)}", "--out", str(t / "o")],
        "classes.json",
    ),
    (
        "train --out FILE",
        lambda t, w: ["train", "--data", f"dubai={_folder(t)}", "--out", str(_file(t))],
        "is a file",
    ),
    (
        "train --vegetation-negatives 5 (not an excess green index)",
        lambda t, w: [
            "train",
            *("--data", f"massachusetts={_folder(t)}", "--vegetation-negatives", "5"),
            *("--out", str(t / "o")),
        ],
        "excess green",
    ),
    (
        "train --data paris=PATH",
        lambda t, w: ["train", "--data", "paris=/x", "--out", str(t)],
        "dubai=PATH",
    ),
    ("map --crs EPSG:4326", lambda t, w: [*_map(t, w), "--crs", "EPSG:4326"], "not in metres"),
]


def _map(tmp_path, weights, out=None):
    out = out or tmp_path / "c.zarr"
    bbox = [str(v) for v in BBOX]
    argv = ["map", "--catalog", ITEM, "--bbox", *bbox, "--periods", "2017", "--out", str(out)]
    return [*argv, "--model", weights, "--quiet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from xjointseg.testing import toy_weights

    return str(toy_weights(tmp_path_factory.mktemp("w") / "toy.safetensors"))


@pytest.mark.parametrize(
    ("argv", "needle"), [m[1:] for m in CLI_MISTAKES], ids=[m[0] for m in CLI_MISTAKES]
)
def test_cli_mistake(tmp_path, capsys, weights, argv, needle):
    rc = main(argv(tmp_path, weights))  # builds any file the mistake needs first
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("xjointseg: error: ")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    if (tmp_path / "a-file").exists():
        assert (tmp_path / "a-file").read_text() == "the user's own"


#: options argparse refuses as it reads them (exit status 2, one "error:" line)
ARGPARSE_MISTAKES = [
    ("demo --out ''", lambda t, w: ["demo", "--out", "", "--model", w], "empty string"),
    (
        "train --threads -5",
        lambda t, w: ["train", "--data", f"dubai={_folder(t)}", "--threads", "-5", "--out", str(t)],
        ">= 1",
    ),
    (
        "train --seed -1",
        lambda t, w: ["train", "--data", f"dubai={_folder(t)}", "--seed", "-1", "--out", str(t)],
        ">= 0",
    ),
    (
        "map --bbox with inf",
        lambda t, w: [*_map(t, w)[:4], "330000", "5815000", "inf", "5816000", *_map(t, w)[8:]],
        "finite",
    ),
]


@pytest.mark.parametrize(
    ("argv", "needle"), [m[1:] for m in ARGPARSE_MISTAKES], ids=[m[0] for m in ARGPARSE_MISTAKES]
)
def test_cli_option_mistake(tmp_path, capsys, weights, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv(tmp_path, weights))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_the_census_covers_150_distinct_mistakes():
    names = {m[0] for m in MISTAKES} | {m[0] for m in CLI_MISTAKES + ARGPARSE_MISTAKES}
    assert len(names) >= 150


def test_load_options_are_named_by_the_function_the_user_called():
    import inspect

    from xjointseg.sentinel2 import _load

    with pytest.raises(TypeError, match=r"load_sentinel2\(\).*'bboxx': did you mean 'bbox'"):
        xjointseg.load_sentinel2(ITEM, periods=2017, bboxx=(0, 0, 1, 1))
    with pytest.raises(TypeError, match=r"plan_load\(\) needs periods="):
        _load.plan_load(ITEM)
    params = inspect.signature(xjointseg.load_sentinel2).parameters
    assert params["resolution"].default == 10 and "store" in params  # help() shows them


@pytest.mark.parametrize("period", [np.int64(0), "2017", -1])
def test_plot_map_and_to_cog_pick_a_period_the_same_way(period):
    cube = xr.concat([ISA, ISA], dim="time").assign_coords(
        time=np.array(["2017-06-01", "2019-06-01"], dtype="datetime64[ns]")
    )
    from xjointseg.schema import select_period

    fig = plot_map(cube, period)
    assert fig.axes[0].get_title().startswith("Impervious surface 20")
    assert select_period(cube, period).ndim == 2
    for bad in (True, "2020", 5):
        with pytest.raises(errors.OptionError):
            plot_map(cube, bad)


# --- silent wrong results of the earlier census, now answered correctly ----------------------


def test_scores_leave_out_the_nodata_a_map_declares():
    pred = ISA.isel(time=0).copy()
    pred[:40] = 255  # segment's nodata
    ref = xr.zeros_like(pred)
    counted = scores(pred, ref)
    assert (
        counted["tp"] + counted["fp"] + counted["fn"] + counted["tn"] == pred.size - pred[:40].size
    )
    everything = scores(pred, ref, ignore=[])  # asked to count every value: 255 is "ISA"
    assert everything["fp"] >= pred[:40].size


def test_the_cube_method_new_isa_takes_positions_and_partial_dates():
    d1 = synthetic_scene(32, 32, times=1, bands=("B02", "B03", "B04", "B08", "B11"))
    images = xr.concat([d1, d1.assign_coords(time=d1.time + np.timedelta64(730, "D"))], "time")
    cube = xr.concat([ISA, ISA.assign_coords(time=ISA.time + np.timedelta64(730, "D"))], "time")
    by_label = cube.isa.new_isa(
        before=cube.time.values[0], after=cube.time.values[1], images=images
    )
    years = [str(v)[:4] for v in cube.time.values]
    by_year = cube.isa.new_isa(before=years[0], after=years[1], images=images)
    by_position = cube.isa.new_isa(before=0, after=-1, images=images)
    for other in (by_year, by_position):
        assert np.array_equal(other.values, by_label.values)
        assert other.attrs["before"] == by_label.attrs["before"]


def test_a_relative_weights_path_reloads_from_another_folder(tmp_path, monkeypatch):
    from xjointseg.models.model import ModelRef
    from xjointseg.testing import toy_weights

    monkeypatch.chdir(tmp_path)
    toy_weights(tmp_path / "mine.safetensors", seed=7)
    ref = load_model("mine.safetensors").ref()
    assert ref.source == str(tmp_path / "mine.safetensors")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a worker started in another folder
    assert ModelRef(ref.source, ref.sha256, "cpu").load().sha256 == ref.sha256


def test_a_period_picked_out_of_a_cube_keeps_its_label_in_the_cog(tmp_path):
    import rasterio

    to_cog(ISA.isel(time=0), tmp_path / "one.tif")
    with rasterio.open(tmp_path / "one.tif") as f:
        tags = f.tags()
    assert tags["period"] == str(ISA.time.values[0])[:10] and tags["period_label"]


def test_a_midnight_datetime_period_means_its_day():
    import datetime

    import pandas as pd

    for when in (datetime.datetime(2017, 2, 16), pd.Timestamp("2017-02-16")):
        ds = _load(periods=when)  # the demo item's day, as '2017-02-16' would select it
        assert ds.sizes["time"] == 1 and str(ds["period"].values[0]) == "2017-02-16"
