"""Stage contracts: inputs that used to give silently wrong results, files that must never be
deleted, fingerprints that follow the computation (not the chunking), scalar periods."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg import errors, segment
from xjointseg.change import area, fraction
from xjointseg.cube import open_cube, status, to_zarr
from xjointseg.data import demo_item_path
from xjointseg.export import to_cog
from xjointseg.schema import NODATA, check_isa_map, find_band
from xjointseg.sentinel2 import load_sentinel2
from xjointseg.testing import synthetic_scene, toy_model

BBOX = (12.545, 52.470, 12.550, 52.474)  # a corner of the bundled demo scene

MODEL = toy_model(depth=2)


def square_cube(crs: str, res: float, n: int = 20) -> xr.DataArray:
    grid = GeoBox.from_bbox((0, 0, n * res, n * res), crs, resolution=res)
    cube = xr_zeros(grid, "uint8", time=["2019-07-01"])
    cube[:, : n // 4, :] = 1  # a quarter ISA
    return cube


# --- silent wrong results -----------------------------------------------------------------


def test_area_of_a_cube_in_feet_is_in_square_kilometres():
    # 20 x 20 pixels of 3 US survey feet: 60 ft = 18.288 m a side
    cube = square_cube("EPSG:2263", 3.0)
    row = area(cube).iloc[0]
    side_m = 60 * 0.3048006096012192
    assert row.valid_km2 == pytest.approx(side_m**2 / 1e6, rel=1e-9)
    assert row.isa_km2 == pytest.approx(side_m**2 / 4 / 1e6, rel=1e-9)


def test_area_of_a_cube_in_degrees_is_refused():
    cube = square_cube("EPSG:4326", 0.0001)
    with pytest.raises(errors.CubeInputError, match="degrees"):
        area(cube)


def test_segment_refuses_a_grid_in_feet():
    ds = synthetic_scene(16, 16, crs="EPSG:2263", origin=(980000.0, 200000.0))
    with pytest.raises(errors.CRSError, match="not in metres.*reproject"):
        segment(ds, MODEL)


@pytest.mark.parametrize("lazy", [False, True])
def test_reflectance_in_0_1_is_refused(lazy):
    ds = synthetic_scene(32, 32, dtype="float32") / 10000.0
    if lazy:
        ds = ds.chunk(x=16, y=16)
        isa = segment(ds, MODEL)  # lazy: nothing is read yet
        with pytest.raises(errors.ValueRangeError, match="10000"):
            isa.compute()
    else:
        with pytest.raises(errors.ValueRangeError, match="reflectance in 0..1"):
            segment(ds, MODEL)


def test_dark_dn_is_not_taken_for_reflectance():
    ds = synthetic_scene(32, 32).clip(max=40)  # a dark scene, but DN: far above 1
    assert segment(ds, MODEL).shape == (320, 320)


def test_uint8_rgb_is_refused():
    ds = synthetic_scene(16, 16).astype("uint8")
    with pytest.raises(errors.ValueRangeError, match="TCI"):
        segment(ds, MODEL)


def test_values_decoded_with_a_scale_factor_are_refused():
    ds = synthetic_scene(16, 16, dtype="float32")
    ds["B04"].encoding["scale_factor"] = 0.0001
    with pytest.raises(errors.ValueRangeError, match="mask_and_scale=False"):
        segment(ds, MODEL)


def test_map_with_other_values_is_refused_by_to_zarr(tmp_path):
    isa = segment(synthetic_scene(16, 16, times=1), MODEL).compute()
    sevens = xr.full_like(isa, 7)
    with pytest.raises(errors.CubeInputError, match=r"\[7\]"):
        to_zarr(sevens, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    # lazily held: the block is refused when its values are first seen, nothing written
    with pytest.raises(errors.CubeInputError, match=r"\[7\]"):
        to_zarr(sevens.chunk(x=80, y=80), tmp_path / "b.zarr")
    assert status(tmp_path / "b.zarr").blocks_done.sum() == 0
    with pytest.raises(errors.CubeInputError, match="never has"):
        check_isa_map(xr.full_like(isa, 2).isel(time=0))


@pytest.mark.parametrize("analysis", ["area", "fraction", "first_period"])
def test_analyses_refuse_a_lazy_map_with_other_values(analysis):
    isa = segment(synthetic_scene(16, 16, times=2), MODEL).compute()
    sevens = xr.full_like(isa, 7).chunk(x=40, y=40)
    run = {
        "area": lambda c: c.isa.area(),
        "fraction": lambda c: c.isa.fraction(10).compute(),
        "first_period": lambda c: c.isa.first_period().compute(),
    }[analysis]
    with pytest.raises(errors.CubeInputError, match=r"\[7\]"):
        run(sevens)
    run(isa.chunk(x=40, y=40))  # a valid lazy map passes the same check


@pytest.mark.parametrize("flip", ["y", "x", "both"])
def test_south_up_or_x_descending_input_is_not_mirrored(flip):
    ds = synthetic_scene(24, 32)
    dims = ["y", "x"] if flip == "both" else [flip]
    flipped = ds.isel({d: slice(None, None, -1) for d in dims})
    expected = segment(ds, MODEL).isel({d: slice(None, None, -1) for d in dims})
    got = segment(flipped, MODEL)
    xr.testing.assert_identical(got.compute(), expected.compute())


def test_band_given_twice_is_refused():
    ds = synthetic_scene(16, 16)
    ds["red"] = ds["B04"] + 100
    with pytest.raises(errors.BandError, match="more than once.*drop_vars"):
        segment(ds, MODEL)
    assert find_band("B04", ["B02", "red"]) == "red"


# --- user files are never deleted ---------------------------------------------------------


def test_to_zarr_overwrite_never_deletes_a_foreign_folder(tmp_path):
    isa = segment(synthetic_scene(16, 16, times=1), MODEL)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    with pytest.raises(errors.CubeMismatchError, match="does not delete"):
        to_zarr(isa, folder, overwrite=True)
    assert (folder / "chapter1.tex").read_text() == "precious"
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    with pytest.raises(errors.CubeMismatchError, match="not an xjointseg cube"):
        to_zarr(isa, foreign, overwrite=True)
    assert xr.open_zarr(foreign, consolidated=False).v.size == 3


def test_to_zarr_overwrite_replaces_its_own_cube(tmp_path):
    store = tmp_path / "cube.zarr"
    to_zarr(segment(synthetic_scene(16, 16, times=1), MODEL), store)
    other = segment(synthetic_scene(16, 24, times=1), MODEL)
    cube = to_zarr(other, store, overwrite=True)
    assert cube.shape == other.shape


def test_store_that_is_a_file_or_under_one(tmp_path):
    isa = segment(synthetic_scene(16, 16, times=1), MODEL)
    path = tmp_path / "cube.zarr"
    path.write_text("not a folder")
    with pytest.raises(errors.StorePathError, match="is a file"):
        to_zarr(isa, path)
    with pytest.raises(errors.StorePathError, match="is a file"):
        to_zarr(isa, path / "inner.zarr")
    with pytest.raises(errors.StorePathError, match="is a file"):
        load_sentinel2(str(demo_item_path()), periods=2017, bbox=BBOX, store=path / "in.zarr")
    assert path.read_text() == "not a folder"


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nobody may write into (root ignores permission bits: then ``os.access``
    reports the folder as its bits say, as it does for any other user)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):
        real = os.access

        def access(path, mode, *args, **kwargs):
            if Path(path) == folder and mode & os.W_OK:
                return False
            return real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o700)


@pytest.mark.parametrize("writer", ["to_zarr", "load_sentinel2", "to_cog"])
def test_nothing_is_written_into_a_read_only_folder(read_only, writer):
    isa = segment(synthetic_scene(16, 16, times=1), MODEL)
    write = {
        "to_zarr": lambda: to_zarr(isa, read_only / "cube.zarr"),
        "load_sentinel2": lambda: load_sentinel2(
            str(demo_item_path()), periods=2017, bbox=BBOX, store=read_only / "s2.zarr"
        ),
        "to_cog": lambda: to_cog(isa.isel(time=0), read_only / "isa.tif"),
    }[writer]
    with pytest.raises(errors.StorePathError, match="read-only"):
        write()
    assert not any(read_only.iterdir())


# --- fingerprints follow the computation --------------------------------------------------


def test_rechunking_the_same_map_is_the_same_period(tmp_path):
    isa = segment(synthetic_scene(32, 32, times=2), MODEL)
    store = tmp_path / "cube.zarr"
    to_zarr(isa, store)
    cube = to_zarr(isa.chunk(time=1, y=64, x=96), store)  # no PeriodConflictError
    xr.testing.assert_equal(cube.load(), isa.compute().drop_vars("isa_fingerprint"))


def test_appending_a_period_of_chunked_in_memory_input(tmp_path):
    ds = synthetic_scene(32, 32, times=3)
    store = tmp_path / "cube.zarr"
    to_zarr(segment(ds.isel(time=slice(0, 2)).chunk(x=16, y=16), MODEL), store)
    before = status(store).fingerprint.tolist()
    # the same notebook one period later: the other periods are the same computation
    cube = to_zarr(segment(ds.chunk(x=16, y=16), MODEL), store)
    assert cube.sizes["time"] == 3
    assert status(store).fingerprint.tolist()[:2] == before


def test_another_model_or_input_is_another_period(tmp_path):
    ds = synthetic_scene(32, 32, times=1)
    store = tmp_path / "cube.zarr"
    to_zarr(segment(ds, MODEL), store)
    with pytest.raises(errors.PeriodConflictError):
        to_zarr(segment(ds + 1, MODEL, tile=16), store)


def test_fingerprint_needs_no_private_dask_module():
    import xjointseg.cube

    for path in Path(xjointseg.cube.__file__).parent.glob("*.py"):
        assert "_task_spec" not in path.read_text(), path


# --- periods ------------------------------------------------------------------------------


def test_scalar_time_is_kept_and_makes_a_one_period_cube(tmp_path):
    ds = synthetic_scene(16, 16, times=2)
    one = segment(ds.isel(time=1), MODEL)
    assert one.ndim == 2 and one.time.values == ds.time.values[1]
    cube = to_zarr(one, tmp_path / "cube.zarr")
    assert cube.dims == ("time", "y", "x")
    assert list(cube.time.values) == [ds.time.values[1]]
    np.testing.assert_array_equal(cube.values[0], one.values)


def test_fraction_and_area_accept_a_scalar_period_map():
    one = segment(synthetic_scene(16, 16, times=1), MODEL).isel(time=0)
    assert area(one).shape[0] == 1
    assert fraction(one, 10).sizes["time"] == 1


# --- provenance ---------------------------------------------------------------------------


def test_segment_carries_source_items_to_the_cube(tmp_path):
    ds = synthetic_scene(16, 16, times=2)
    labels = ["2017", "2019"]
    ds = ds.assign_coords(period=("time", labels))
    ds.attrs["stac_items"] = json.dumps({"2017": ["S2A_a", "S2B_b"], "2019": ["S2A_c"]})
    for name in ds.data_vars:  # as load_sentinel2 describes its bands
        ds[name].attrs["long_name"] = f"Sentinel-2 {name}, median of valid observations"
    isa = segment(ds, MODEL)
    assert json.loads(isa.attrs["source_items"]) == {"2017": ["S2A_a", "S2B_b"], "2019": ["S2A_c"]}
    to_zarr(isa, tmp_path / "cube.zarr")
    cube = open_cube(tmp_path / "cube.zarr")
    assert cube.attrs["source_items"] == ["S2A_a", "S2A_c", "S2B_b"]
    # a band changed after loading keeps its attrs: the data, not the items, say what it is
    changed = ds.assign(B04=ds.B04 + 500)
    with pytest.raises(errors.PeriodConflictError):
        to_zarr(segment(changed, MODEL), tmp_path / "cube.zarr")


def test_nodata_constant_is_the_one_segment_writes():
    isa = segment(synthetic_scene(16, 16, nodata=0).where(lambda d: d.x > d.x[3], 0), MODEL)
    assert isa.attrs["nodata"] == NODATA
    assert (isa.values[:, :30] == NODATA).all()
    with dask.config.set(scheduler="sync"):
        assert int(isa.max()) == NODATA
