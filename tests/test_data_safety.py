"""Nothing the library did not write is deleted or replaced: a user's notes and sidecar files
inside a cube or a staging store survive overwrite=True, and temporary names never collide
with a user's file."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.cube import open_cube, status, to_zarr
from xjointseg.errors import CubeInputError, CubeMismatchError
from xjointseg.testing import synthetic_scene, toy_model

MODEL = toy_model()


def _maps(size: int, times: int = 2):
    return synthetic_scene(size, size, times=times).isa.segment(model=MODEL)


def test_replacing_a_cube_keeps_the_users_files(tmp_path):
    store = tmp_path / "c.zarr"
    to_zarr(_maps(16), store)
    (store / "notes.txt").write_text("field notes")
    (store / "extra").mkdir()
    (store / "extra" / "sidecar.json").write_text("{}")
    with pytest.raises(CubeMismatchError):  # another grid, no overwrite: refused
        to_zarr(_maps(24), store)
    cube = to_zarr(_maps(24), store, overwrite=True)
    assert cube.shape[1:] == (24 * 10, 24 * 10)
    assert (store / "notes.txt").read_text() == "field notes"
    assert (store / "extra" / "sidecar.json").read_text() == "{}"
    assert np.array_equal(open_cube(store).values, _maps(24).values)
    assert status(store)["complete"].all()
    # and the replaced cube appends, resumes and replaces again as any other
    again = to_zarr(_maps(16), store, overwrite=True)
    assert again.shape[1:] == (160, 160) and (store / "notes.txt").exists()


def test_replacing_a_cube_that_holds_a_users_variable_is_refused(tmp_path):
    import xarray as xr

    store = tmp_path / "c.zarr"
    maps = _maps(16)
    to_zarr(maps, store)
    labels = xr.Dataset(
        {"my_labels": (("y", "x"), np.ones((160, 160), np.uint8))},
        coords={"y": maps.y, "x": maps.x},
    )
    labels.to_zarr(store, mode="a")
    before = sorted(p.name for p in store.iterdir())
    with pytest.raises(CubeMismatchError, match="my_labels"):
        to_zarr(_maps(24), store, overwrite=True)
    assert sorted(p.name for p in store.iterdir()) == before  # nothing deleted
    assert np.array_equal(open_cube(store).values, maps.values)
    assert xr.open_zarr(store)["my_labels"].values.all()


def test_replacing_a_cube_on_an_object_store_keeps_the_users_files():
    fs = fsspec.filesystem("memory")
    url = "memory://safety/c.zarr"
    to_zarr(_maps(16), url)
    fs.pipe_file("/safety/c.zarr/notes.txt", b"field notes")
    cube = to_zarr(_maps(24), url, overwrite=True)
    assert cube.shape[1:] == (240, 240)
    assert fs.cat_file("/safety/c.zarr/notes.txt") == b"field notes"
    assert np.array_equal(open_cube(url).values, _maps(24).values)
    fs.rm("/safety", recursive=True)


def test_an_incomplete_template_beside_user_files_is_replaced(tmp_path):
    """A kill while a template was moved in beside a user's files leaves the root metadata
    without bookkeeping: the next write replaces it and keeps the files."""
    store = tmp_path / "c.zarr"
    to_zarr(_maps(16), store)
    (store / "notes.txt").write_text("field notes")
    import shutil

    shutil.rmtree(store / "_xjointseg")  # what a kill before the last move leaves
    cube = to_zarr(_maps(16), store)
    assert status(store)["complete"].all() and cube.shape[0] == 2
    assert (store / "notes.txt").read_text() == "field notes"


def test_restaging_composites_keeps_the_users_files(tmp_path):
    from tests.test_sentinel2 import build_catalog
    from xjointseg import load_sentinel2

    catalog = build_catalog(tmp_path / "cat")
    store = tmp_path / "stage.zarr"
    load_sentinel2(str(catalog), periods=2019, store=store)
    (store / "notes.txt").write_text("field notes")
    again = load_sentinel2(str(catalog), periods=[2019, 2023], store=store, overwrite=True)
    assert again.sizes["time"] == 2
    assert (store / "notes.txt").read_text() == "field notes"


def test_restaging_a_store_that_holds_a_users_variable_is_refused(tmp_path):
    import xarray as xr
    import zarr

    from tests.test_sentinel2 import build_catalog
    from xjointseg import errors, load_sentinel2

    catalog = build_catalog(tmp_path / "cat")
    store = tmp_path / "stage.zarr"
    load_sentinel2(str(catalog), periods=2019, store=store)
    zarr.open_group(store, mode="a").create_array(
        "cloud_notes", shape=(4,), dtype="uint8", dimension_names=["note"]
    )
    with pytest.raises(errors.StagingStoreExistsError, match="cloud_notes"):
        load_sentinel2(str(catalog), periods=[2019, 2023], store=store, overwrite=True)
    assert (store / "cloud_notes" / "zarr.json").exists()
    assert xr.open_zarr(store).sizes["time"] == 1  # the staged periods stay as they were
    # a variable added through xarray rewrites the root attributes: no longer staged, refused
    (store / "cloud_notes").rename(tmp_path / "moved")
    again = load_sentinel2(str(catalog), periods=[2019, 2023], store=store, overwrite=True)
    assert again.sizes["time"] == 2


def test_composites_staged_in_object_storage_are_replaced_and_keep_the_users_files(tmp_path):
    import fsspec

    from tests.test_sentinel2 import build_catalog
    from xjointseg import errors, load_sentinel2

    catalog = str(build_catalog(tmp_path / "cat"))
    url = "memory://safety/stage.zarr"
    fs = fsspec.filesystem("memory")
    first = load_sentinel2(catalog, periods=2019, store=url, overwrite=True)  # a new store
    with pytest.raises(errors.StagingStoreExistsError, match="overwrite=True"):
        load_sentinel2(catalog, periods=2019, store=url)
    fs.pipe(f"{url}/notes.txt", b"field notes")
    again = load_sentinel2(catalog, periods=[2019, 2023], store=url, overwrite=True)
    assert again.sizes["time"] == 2 and first.sizes["time"] == 1
    assert fs.cat(f"{url}/notes.txt") == b"field notes"
    fs.rm("/safety/stage.zarr", recursive=True)
    load_sentinel2(catalog, periods=2019, store=url)
    load_sentinel2(catalog, periods=2019, store=url, overwrite=True)  # nothing but its own
    fs.rm("/safety/stage.zarr", recursive=True)


def test_save_model_never_touches_a_file_named_like_a_temporary(tmp_path):
    from xjointseg.models import save_model
    from xjointseg.testing import ToyNet

    net = ToyNet(in_bands=3)
    bands = ("B04", "B03", "B02")
    path = tmp_path / "w.safetensors"
    for name in ("w.safetensors.partial", ".w.safetensors.partial"):
        (tmp_path / name).write_text("the user's own")
    save_model(net, path, name="mine", bands=bands)
    save_model(net, path, name="mine", bands=bands)  # replacing its own file
    for name in ("w.safetensors.partial", ".w.safetensors.partial"):
        assert (tmp_path / name).read_text() == "the user's own"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["w.safetensors", "w.safetensors.partial", ".w.safetensors.partial"]
    )


# --- clients that never import xjointseg ----------------------------------------------------


def test_plain_xarray_reads_nodata_as_missing(tmp_path):
    import xarray as xr

    isa = _maps(16)
    isa[0, :40, :60] = 255
    store = tmp_path / "c.zarr"
    cube = to_zarr(isa, store)
    assert cube.dtype == np.uint8 and "_FillValue" not in cube.attrs  # open_cube: unchanged
    assert np.array_equal(cube.values, isa.values)
    values = isa.values
    plain = xr.open_zarr(store, consolidated=False)["isa"]
    assert float(plain.mean()) == pytest.approx(values[values != 255].mean(), rel=1e-6)
    assert int(plain.isnull().sum()) == int((values == 255).sum())


def test_plain_xarray_sees_cf_axes(tmp_path):
    import xarray as xr

    store = tmp_path / "c.zarr"
    to_zarr(_maps(16), store)
    plain = xr.open_zarr(store, consolidated=False)
    for dim, axis in (("x", "X"), ("y", "Y")):
        assert plain[dim].attrs["axis"] == axis
        assert plain[dim].attrs["standard_name"] == f"projection_{dim}_coordinate"
        assert plain[dim].attrs["units"] == "metre"
    assert plain["time"].attrs["axis"] == "T"
    assert plain["time"].attrs["standard_name"] == "time"
    assert plain["isa"].attrs["grid_mapping"] == "spatial_ref"


def test_gdal_opens_a_zarr_v2_cube_with_its_crs_pixels_and_nodata(tmp_path):
    import rasterio
    import xarray as xr

    isa = _maps(16, times=2)
    isa[1, :40, :60] = 255
    store = tmp_path / "c.zarr"
    to_zarr(isa.isel(time=[0]), store, zarr_format=2)
    (store / "notes.txt").write_text("field notes")
    cube = to_zarr(isa, store)  # an append keeps the cube's format
    assert (store / ".zgroup").exists() and not (store / "zarr.json").exists()
    assert np.array_equal(cube.values, isa.values) and status(store)["complete"].all()
    with rasterio.open(f'ZARR:"{store}":/isa') as gdal:  # rasterio's GDAL: no xjointseg code
        assert gdal.crs == isa.odc.crs.epsg and gdal.res == (1.0, 1.0)
        assert gdal.count == 2 and gdal.nodata == 255
        assert gdal.transform.c == float(isa.x[0]) - 0.5  # the pixel's corner
        assert np.array_equal(gdal.read(), isa.values)
    plain = xr.open_zarr(store, consolidated=False)["isa"]
    values = isa.values
    assert float(plain.mean()) == pytest.approx(values[values != 255].mean(), rel=1e-6)
    with pytest.raises(CubeMismatchError, match="Zarr v2"):
        to_zarr(isa, store, zarr_format=3)
    to_zarr(_maps(24), store, overwrite=True, zarr_format=3)  # replaced: notes kept
    assert (store / "zarr.json").exists() and not (store / ".zgroup").exists()
    assert (store / "notes.txt").read_text() == "field notes"


def test_consolidated_metadata_a_user_added_stays_true_after_an_append(tmp_path):
    import warnings

    import xarray as xr
    import zarr

    isa = _maps(16, times=3)
    store = tmp_path / "c.zarr"
    to_zarr(isa.isel(time=[0]), store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))
    to_zarr(isa.isel(time=[1, 2]), store)
    plain = xr.open_zarr(store, consolidated=True)
    assert plain.sizes["time"] == 3
    assert np.array_equal(plain["isa"].fillna(255).astype(np.uint8).values, isa.values)
    assert open_cube(store).sizes["time"] == 3


# --- values and options once taken silently -------------------------------------------------


def test_probability_in_percent_is_refused_not_clipped(tmp_path):
    ds = synthetic_scene(16, 16, times=1)
    isa = ds.isa.segment(model=MODEL)
    prob = ds.isa.segment(model=MODEL, output="probability")
    with pytest.raises(CubeInputError, match="not in percent"):
        to_zarr(isa, tmp_path / "c.zarr", probability=prob * 100)
    cube = to_zarr(isa, tmp_path / "c.zarr", probability=prob)  # the right one resumes
    stored = open_cube(tmp_path / "c.zarr", variable="probability")
    assert cube.shape == stored.shape
    assert float(abs(stored - prob).max()) <= 0.002 + 1e-6  # uint8 steps of 0.004


def test_save_model_makes_the_folders_it_needs(tmp_path):
    from xjointseg.models import load_model, save_model
    from xjointseg.testing import ToyNet

    path = tmp_path / "new" / "deeper" / "w.safetensors"
    digest = save_model(ToyNet(in_bands=3), path, name="mine", bands=("B04", "B03", "B02"))
    assert load_model(path, device="cpu").sha256 == digest


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--steps", "-5"),
        ("--steps", "0"),
        ("--batch-size", "0"),
        ("--lr", "-1"),
        ("--crop", "0"),
        ("--hard-negatives", "1.5"),
        ("--not-built-max", "150"),
        ("--source-share", "massachusetts=1.5"),
        ("--source-share", "massachusetts"),
    ],
)
def test_train_refuses_counts_that_train_nothing(tmp_path, capsys, flag, value):
    from xjointseg.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--data", f"dubai={tmp_path}", "--out", str(tmp_path / "o"), flag, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and flag in err and "must be" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_scores_refuse_two_grids_a_kilometre_apart():
    from xjointseg.errors import CubeInputError
    from xjointseg.metrics import scores

    isa = _maps(16).isel(time=0)
    assert scores(isa, isa)["f1"] == 1.0
    with pytest.raises(CubeInputError, match="different grids"):
        scores(isa, isa.assign_coords(x=isa.x + 1000))
    assert scores(isa.values, isa.values)["f1"] == 1.0  # plain arrays: shapes only


def test_train_refuses_a_source_share_given_twice(tmp_path, capsys):
    from xjointseg.cli import main

    args = ["train", "--data", f"dubai={tmp_path}", "--out", str(tmp_path / "o")]
    args += ["--source-share", "dubai=0.5", "--source-share", "dubai=0.3"]
    assert main(args) == 2
    assert "names a source twice" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
