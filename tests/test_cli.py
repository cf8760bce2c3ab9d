"""The command line (``demo``, ``map``) and the COG export, end to end and offline.

Every run uses an untrained toy model from a weights file (the trained defaults may not be
registered yet) and the real Sentinel-2 scene bundled with the package; ``map`` reads that
scene's STAC item as a static catalog, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

import xjointseg
from xjointseg.cli import main
from xjointseg.data import demo_item_path, load_demo_scene
from xjointseg.errors import OptionError
from xjointseg.export import ExportError, ExportExistsError, to_cog
from xjointseg.testing import synthetic_scene, toy_model, toy_weights

ITEM = str(demo_item_path())
# inside the bundled scene (lon 12.518..12.577, lat 52.453..52.489): about 340 x 450 m
BBOX = ["12.545", "52.470", "12.550", "52.474"]
# the bundled scene is L1C (no SCL band): load_sentinel2 says so, rightly, every time
pytestmark = pytest.mark.filterwarnings("ignore::xjointseg.sentinel2.Sentinel2Warning")
SCENE_TRANSFORM = Affine(1.0, 0.0, 331500.0, 0.0, -1.0, 5818200.0)  # the demo scene at 1 m


def run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def run_subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny work: no thread oversubscription
    return subprocess.run(
        [sys.executable, "-m", "xjointseg.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("xjointseg: error: ")]
    assert len(errors) == 1, err
    # anything else on stderr is a one-line warning, never a stack or a log dump
    assert all(line.startswith("xjointseg: warning: ") for line in lines if line not in errors)
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> str:
    return str(toy_weights(tmp_path_factory.mktemp("weights") / "toy2.safetensors"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, toy):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc, stdout, stderr = run(["demo", "--out", str(out), "--model", toy, "--quiet"])
    assert rc == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, toy):
    """One offline ``map`` run into a store, with COGs: (folder, stdout)."""
    root = tmp_path_factory.mktemp("map")
    argv = ["map", "--catalog", ITEM, "--bbox", *BBOX, "--periods", "2017"]
    argv += ["--out", str(root / "cube.zarr"), "--model", toy, "--quiet"]
    rc, stdout, stderr = run([*argv, "--cog-dir", str(root / "cogs")])
    assert rc == 0, stderr
    return root, argv, stdout


# --- demo ---------------------------------------------------------------------------------


def test_demo_cube_opens_lazily_on_the_scene_grid(demo):
    out, _ = demo
    cube = xjointseg.open_cube(out / "isa.zarr")
    assert isinstance(cube.data, da.Array)  # lazy
    assert cube.dtype == np.uint8 and cube.shape == (1, 3840, 3840)
    gbox = cube.odc.geobox
    assert gbox.crs.epsg == 32633
    assert gbox.affine == SCENE_TRANSFORM
    # the same bounds as the 10 m input: 10x the pixels, not a shifted or cropped grid
    scene = load_demo_scene().odc.geobox
    assert gbox.extent.boundingbox == scene.extent.boundingbox
    assert set(np.unique(cube.values)) <= {0, 1, 255}
    assert cube.attrs["model"] == "toy2"


def test_demo_cube_is_what_segment_gives(demo, toy):
    out, _ = demo
    cube = xjointseg.open_cube(out / "isa.zarr")
    direct = load_demo_scene().isa.segment(model=toy, device="cpu")
    window = {"y": slice(1000, 1400), "x": slice(2000, 2600)}
    np.testing.assert_array_equal(cube.isel(window).values, direct.isel(window).values)


def test_demo_cog_is_valid_and_georeferenced(demo):
    out, _ = demo
    cube = xjointseg.open_cube(out / "isa.zarr")
    with rasterio.open(out / "isa_1m.tif") as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == SCENE_TRANSFORM
        assert src.shape == (3840, 3840)
        assert src.profile["tiled"] and src.block_shapes == [(512, 512)]
        assert src.overviews(1) == [2, 4, 8]
        assert src.nodata == 255
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # GDAL's COG layout
        assert src.tags()["model"] == "toy2"
        np.testing.assert_array_equal(src.read(1), cube.values[0])
        overview = src.read(1, out_shape=(480, 480))  # the 1:8 overview
        assert set(np.unique(overview)) <= {0, 1, 255}


def test_demo_figures_and_summary_match_the_cube(demo):
    out, stdout = demo
    for name in ("input_rgb", "isa_1m", "isa_fraction_10m"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    cube = xjointseg.open_cube(out / "isa.zarr").values
    isa_km2 = float((cube == 1).sum()) / 1e6  # 1 m pixels: 1e6 per km2
    valid_km2 = float((cube != 255).sum()) / 1e6
    assert summary["isa_km2"] == pytest.approx(isa_km2)
    assert summary["valid_km2"] == pytest.approx(valid_km2)
    assert summary["pixels"] == 3840 * 3840 and summary["pixels_per_second"] > 0
    assert summary["grid"]["crs"] == "EPSG:32633"
    assert f"{isa_km2:.3f} km2 of {valid_km2:.3f} km2 valid" in stdout
    assert "Mpx/s" in stdout
    for path in (out / "isa.zarr", out / "isa_1m.tif", out / "isa_1m.png"):
        assert str(path) in stdout


def test_demo_subprocess_resumes_into_the_same_folder(demo, toy):
    out, _ = demo
    before = (out / "isa.zarr" / "isa" / "zarr.json").stat().st_mtime_ns
    proc = run_subprocess(["demo", "--out", str(out), "--model", toy, "--quiet"], out.parent)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nothing left to compute" in proc.stdout
    assert (out / "isa.zarr" / "isa" / "zarr.json").stat().st_mtime_ns == before  # kept
    assert json.loads((out / "summary.json").read_text())["resumed"] is True
    # the COG and the figures were rewritten from the cube, whole
    with rasterio.open(out / "isa_1m.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.nodata == 255
    for name in ("input_rgb", "isa_1m", "isa_fraction_10m"):
        assert (out / f"{name}.png").stat().st_mtime_ns > before
    assert not list(out.glob(".*tmp*")) and not list(out.glob(".*scratch*"))


def test_demo_replaces_a_cube_of_another_model(tmp_path):
    other = str(toy_weights(tmp_path / "toy3.safetensors", depth=3))
    first = str(toy_weights(tmp_path / "toy1.safetensors", depth=1))
    assert run(["demo", "--out", str(tmp_path / "d"), "--model", first, "--quiet"])[0] == 0
    rc, stdout, stderr = run(["demo", "--out", str(tmp_path / "d"), "--model", other, "--quiet"])
    assert rc == 0, stderr
    assert "replacing it" in stdout
    assert xjointseg.open_cube(tmp_path / "d" / "isa.zarr").attrs["model"] == "toy3"


def test_demo_refuses_to_delete_a_store_that_is_not_a_cube(tmp_path, toy):
    (tmp_path / "isa.zarr").mkdir()
    (tmp_path / "isa.zarr" / "precious.txt").write_text("keep me")
    rc, _, err = run(["demo", "--out", str(tmp_path), "--model", toy, "--quiet"])
    assert_one_line_error(rc, err, "not an xjointseg cube")
    assert (tmp_path / "isa.zarr" / "precious.txt").exists()


@pytest.mark.parametrize("name", ["summary.json", "isa_1m.tif", "isa_1m.png"])
def test_demo_never_replaces_a_file_it_did_not_write(tmp_path, toy, name):
    (tmp_path / name).write_text("the user's own")
    rc, _, err = run(["demo", "--out", str(tmp_path), "--model", toy, "--quiet"])
    assert_one_line_error(rc, err, name, "not written by xjointseg", "--out")
    assert (tmp_path / name).read_text() == "the user's own"
    assert not (tmp_path / "isa.zarr").exists()  # refused before any work


def test_demo_out_that_is_a_file(tmp_path, toy):
    (tmp_path / "out").write_text("x")
    rc, _, err = run(["demo", "--out", str(tmp_path / "out"), "--model", toy, "--quiet"])
    assert_one_line_error(rc, err, "is a file")


def test_demo_outputs_are_marked_as_its_own(demo):
    from xjointseg.export import is_own_cog

    out, _ = demo
    assert json.loads((out / "summary.json").read_text())["software"].startswith("xjointseg")
    assert is_own_cog(out / "isa_1m.tif")


# --- map ----------------------------------------------------------------------------------


def test_map_keeps_the_source_items_end_to_end(mapped):
    root, _, _ = mapped
    item_id = json.loads(Path(ITEM).read_text())["id"]
    cube = xjointseg.open_cube(root / "cube.zarr")
    assert cube.attrs["source_items"] == [item_id]
    record = json.loads((root / "cube.zarr" / "_xjointseg" / "periods" / "0000.json").read_text())
    assert record["sources"] == [item_id] and record["model"] == "toy2"
    assert cube.attrs["model"] == "toy2" and len(cube.attrs["model_sha256"]) == 64


def test_map_never_replaces_a_cog_it_did_not_write(tmp_path, toy):
    cogs = tmp_path / "cogs"
    cogs.mkdir()
    (cogs / "isa_2017.tif").write_text("the user's own")
    argv = ["map", "--catalog", ITEM, "--bbox", *BBOX, "--periods", "2017", "--model", toy]
    argv += ["--out", str(tmp_path / "c.zarr"), "--cog-dir", str(cogs), "--quiet", "--overwrite"]
    rc, _, err = run(argv)
    assert_one_line_error(rc, err, "isa_2017.tif", "not written by xjointseg")
    assert (cogs / "isa_2017.tif").read_text() == "the user's own"
    assert not (tmp_path / "c.zarr").exists()  # refused before any work


def test_map_writes_a_zarr_v2_cube_for_gdal(tmp_path, toy):
    import rasterio

    out = tmp_path / "c.zarr"
    argv = ["map", "--catalog", ITEM, "--bbox", *BBOX, "--periods", "2017", "--model", toy]
    rc, _, err = run([*argv, "--out", str(out), "--quiet", "--zarr-format", "2"])
    assert rc == 0, err
    assert (out / ".zgroup").exists() and not (out / "zarr.json").exists()
    with rasterio.open(f'ZARR:"{out}":/isa') as gdal:
        assert gdal.res == (1.0, 1.0) and gdal.crs is not None and gdal.nodata == 255
        assert np.array_equal(gdal.read(1), xjointseg.open_cube(out).values[0])


@pytest.mark.parametrize("flag", ["--out", "--cog-dir"])
def test_map_output_paths_that_are_files(tmp_path, toy, flag):
    (tmp_path / "file").write_text("x")
    argv = ["map", "--catalog", ITEM, "--bbox", *BBOX, "--periods", "2017", "--model", toy]
    argv += ["--out", str(tmp_path / "c.zarr"), "--quiet", flag, str(tmp_path / "file")]
    rc, _, err = run(argv)
    assert_one_line_error(rc, err, "is a file")
    assert (tmp_path / "file").read_text() == "x"


def test_train_with_a_missing_data_folder(tmp_path):
    rc, _, err = run(["train", "--data", "dubai=/no/such/folder", "--out", str(tmp_path)])
    assert_one_line_error(rc, err, "/no/such/folder", "not a folder")


def test_map_writes_a_cube_from_a_static_catalog(mapped, toy):
    root, _, stdout = mapped
    cube = xjointseg.open_cube(root / "cube.zarr")
    gbox = cube.odc.geobox
    assert gbox.crs.epsg == 32633 and gbox.resolution.x == 1.0
    assert [str(p) for p in cube["period"].values] == ["2017"]
    scene = load_demo_scene().odc.geobox.extent
    assert scene.contains(gbox.extent)  # inside the item, on its 10 m grid zoomed 10x
    assert (gbox.affine.c - 331500.0) % 10 == 0 and (5818200.0 - gbox.affine.f) % 10 == 0
    # the same as running the library by hand
    ds = xjointseg.load_sentinel2(ITEM, bbox=[float(v) for v in BBOX], periods=[2017])
    direct = ds.isa.segment(model=toy)
    np.testing.assert_array_equal(cube.values, direct.values)
    assert "Mpx/s" in stdout and "2017" in stdout
    with rasterio.open(root / "cogs" / "isa_2017.tif") as src:
        assert src.transform == gbox.affine and src.nodata == 255 and src.overviews(1)


def test_map_rerun_resumes(mapped):
    root, argv, _ = mapped
    marker = next((root / "cube.zarr" / "_xjointseg" / "done").rglob("0.0"))
    before = marker.stat().st_mtime_ns
    rc, stdout, stderr = run(argv)
    assert rc == 0, stderr
    assert "complete already" in stdout
    assert marker.stat().st_mtime_ns == before


def test_map_finishes_an_interrupted_cube(tmp_path, toy):
    # a wide strip (2 blocks of 256 px at 10 m): half the blocks written, as after a kill
    bbox = ["12.520", "52.470", "12.560", "52.4745"]
    ds = xjointseg.load_sentinel2(ITEM, bbox=[float(v) for v in bbox], periods=["2017"], chunks=256)
    isa = ds.isa.segment(model=xjointseg.load_model(toy), device="auto")
    assert isa.data.numblocks[-1] == 2
    store = tmp_path / "cube.zarr"
    isa.isa.to_zarr(store, part=(0, 2))
    argv = ["map", "--catalog", ITEM, "--bbox", *bbox, "--periods", "2017", "--chunks", "256"]
    rc, stdout, stderr = run([*argv, "--out", str(store), "--model", toy, "--quiet"])
    assert rc == 0, stderr
    assert "Mpx segmented" in stdout
    written = float(re.search(r"([\d.]+) Mpx segmented", stdout).group(1))
    assert 0 < written * 1e6 < isa.size  # only the missing block
    np.testing.assert_array_equal(xjointseg.open_cube(store).values, isa.values)


def test_map_regions_from_a_vector_file_and_a_projected_bbox(tmp_path, toy):
    import geopandas as gpd
    from shapely.geometry import box

    regions = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(332000, 5815000, 332200, 5815300), box(332200, 5815000, 332400, 5815300)],
        crs="EPSG:32633",
    )
    regions.to_file(tmp_path / "regions.geojson")
    argv = ["map", "--catalog", ITEM, "--periods", "2017", "--model", toy, "--quiet"]
    rc, stdout, err = run(
        [*argv, "--geometry", str(tmp_path / "regions.geojson"), "--out", str(tmp_path / "a")]
    )
    assert rc == 0, err
    assert "west" in stdout and "east" in stdout
    assert xjointseg.open_cube(tmp_path / "a").shape == (1, 300, 400)
    projected = ["--bbox", "332000", "5815000", "332400", "5815300", "--bbox-crs", "EPSG:32633"]
    rc, _, err = run([*argv, *projected, "--out", str(tmp_path / "b")])
    assert rc == 0, err
    a, b = xjointseg.open_cube(tmp_path / "a"), xjointseg.open_cube(tmp_path / "b")
    assert a.odc.geobox == b.odc.geobox
    np.testing.assert_array_equal(a.values, b.values)


def test_map_on_a_dask_scheduler(tmp_path, toy):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        argv = ["map", "--catalog", ITEM, "--bbox", *BBOX, "--periods", "2017"]
        argv += ["--out", str(tmp_path / "c.zarr"), "--model", toy, "--quiet"]
        rc, stdout, err = run([*argv, "--scheduler", cluster.scheduler_address])
    assert rc == 0, err
    assert "dask dashboard: http" in err
    assert xjointseg.open_cube(tmp_path / "c.zarr").shape[0] == 1


# --- bad input: one line, exit 2, no traceback ----------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--catalog", "no-such-catalog"], "not a catalog preset"),
        (["--bbox", "200", "52", "201", "53"], "out of range"),
        (
            ["--bbox", "332400", "5815000", "332000", "5815300", "--bbox-crs", "EPSG:32633"],
            "swapped",
        ),
        (["--bbox", "0", "0", "1", "1", "--bbox-crs", "EPSG:99999"], "not a CRS"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--periods", "2019"], "no Sentinel-2 item"),
        (["--geometry", "/no/such/regions.geojson"], "no such file"),
        (["--crs", "bogus"], "not a CRS"),
        (["--periods", "2017/2015"], "2017/2015"),
    ],
)
def test_map_bad_input(tmp_path, toy, extra, needle):
    args = {"--catalog": ITEM, "--periods": "2017", "--model": toy}
    argv = ["map", "--out", str(tmp_path / "x.zarr"), "--quiet"]
    for key, value in args.items():
        if key not in extra:
            argv += [key, value]
    if "--bbox" not in extra and "--geometry" not in extra:
        argv += ["--bbox", *BBOX]
    rc, _, err = run([*argv, *extra])
    assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "x.zarr").exists()  # nothing written


def test_map_refuses_a_store_of_another_grid(mapped, toy):
    root, argv, _ = mapped
    moved = ["12.546", "52.470", "12.551", "52.474"]
    rc, _, err = run([*argv[:4], *moved, *argv[8:]])
    assert_one_line_error(rc, err, "cannot take this map", "--overwrite")
    assert xjointseg.open_cube(root / "cube.zarr").attrs["model"] == "toy2"  # untouched


def test_demo_bad_model_and_device(tmp_path):
    rc, _, err = run(["demo", "--out", str(tmp_path), "--model", "nope"])
    assert_one_line_error(rc, err, "unknown model 'nope'", "--model")
    if "jointseg" not in xjointseg.models.registered_models():  # the default, until trained
        rc, _, err = run(["demo", "--out", str(tmp_path)])
        assert_one_line_error(rc, err, "no trained 'jointseg' weights", "--model")
    import torch

    if not torch.cuda.is_available():
        rc, _, err = run(["demo", "--out", str(tmp_path), "--model", "nope", "--device", "cuda"])
        assert_one_line_error(rc, err)


def test_bad_input_as_a_subprocess_prints_one_line(tmp_path, toy):
    argv = ["map", "--catalog", "no-such-catalog", "--bbox", *BBOX, "--periods", "2017"]
    proc = run_subprocess([*argv, "--out", str(tmp_path / "x.zarr"), "--model", toy], tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, "not a catalog preset")
    assert proc.stdout == ""


def test_map_requires_an_area():
    rc, _, err = run(["map", "--periods", "2017", "--out", "x.zarr"])
    assert rc == 2 and "--bbox" in err and "Traceback" not in err


# --- to_cog -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_isa():
    return synthetic_scene(40, 56, times=2).isa.segment(model=toy_model())


def test_to_cog_accessor_equals_function_and_numpy_equals_dask(tmp_path, small_isa):
    one = small_isa.isel(time=[1])
    a = one.isa.to_cog(tmp_path / "a.tif")
    b = to_cog(one.compute(), tmp_path / "b.tif")  # numpy-backed
    c = to_cog(small_isa, tmp_path / "sub" / "c.tif", period=-1, overview_resampling="mode")
    with rasterio.open(a) as ra, rasterio.open(b) as rb, rasterio.open(c) as rc:
        np.testing.assert_array_equal(ra.read(), rb.read())
        np.testing.assert_array_equal(ra.read(), rc.read())
        np.testing.assert_array_equal(ra.read(1), small_isa.values[1])
        assert ra.tags()["period"] == "1971-01-01"
        assert rc.overviews(1) == [2]


def test_to_cog_accessor_shows_its_parameters(small_isa):
    import inspect

    params = list(inspect.signature(small_isa.isa.to_cog).parameters)
    assert params[:3] == ["path", "period", "overview_resampling"]
    assert small_isa.isa.to_cog.__doc__ == to_cog.__doc__


def test_to_cog_keeps_nodata_and_writes_2d(tmp_path, small_isa):
    two_d = small_isa.isel(time=0).compute()
    two_d[:100, :] = 255
    path = to_cog(two_d, tmp_path / "n.tif", blocksize=256)
    with rasterio.open(path) as src:
        assert src.nodata == 255 and src.block_shapes == [(256, 256)]
        assert (src.read(1)[:100] == 255).all()
        assert src.read_masks(1)[:100].max() == 0  # GIS tools see it as missing


def test_to_cog_is_the_map_pixel_for_pixel_at_any_size(tmp_path):
    """A map whose side is no multiple of the overview factors: the COG has exactly its grid
    (no padding), GDAL's COG layout, overviews, nodata 255 and the recognised tags."""
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    from xjointseg.export import COLORMAP, is_own_cog

    gbox = GeoBox.from_bbox((331_000, 5_816_000, 332_010, 5_816_650), "EPSG:32633", resolution=1)
    rng = np.random.default_rng(3)
    values = rng.choice(np.array([0, 1, 255], np.uint8), size=gbox.shape, p=[0.5, 0.4, 0.1])
    values[:130, :260] = 255  # a whole nodata corner: its overview pixels stay nodata
    isa = xr.DataArray(values, dims=("y", "x"), coords=xr_coords(gbox), attrs={"model": "m1"})
    isa = isa.odc.assign_crs(gbox.crs).chunk({"y": 300, "x": 333})  # ragged, unaligned
    path = to_cog(isa, tmp_path / "odd.tif", blocksize=256, overview_resampling="mode")
    with rasterio.open(path) as src:
        assert src.shape == (650, 1010) and src.transform == gbox.affine
        assert src.crs.to_epsg() == 32633 and src.nodata == 255
        assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), values)
        overview = src.read(1, out_shape=(163, 253))  # the 1:4 overview
        assert set(np.unique(overview)) <= {0, 1, 255}
        assert (overview[:30, :60] == 255).all()
        assert src.tags()["model"] == "m1"
        cmap = src.colormap(1)
        assert cmap[0][:3] == COLORMAP[0][:3] and cmap[1][:3] == COLORMAP[1][:3]
    assert is_own_cog(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.tif"]


def test_to_cog_errors(tmp_path, small_isa):
    with pytest.raises(ExportError, match="period="):
        to_cog(small_isa, tmp_path / "x.tif")
    with pytest.raises(ExportError, match="uint8"):
        to_cog(small_isa.isel(time=0).astype("float32"), tmp_path / "x.tif")
    with pytest.raises(ExportError, match="CRS"):
        to_cog(xr.DataArray(np.zeros((4, 4), np.uint8), dims=("y", "x")), tmp_path / "x.tif")
    with pytest.raises(OptionError, match="nearest"):
        to_cog(small_isa, tmp_path / "x.tif", period=0, overview_resampling="average")
    with pytest.raises(OptionError, match="out of range"):
        to_cog(small_isa, tmp_path / "x.tif", period=5)
    with pytest.raises(OptionError, match="local"):
        to_cog(small_isa, "s3://bucket/x.tif", period=0)
    path = to_cog(small_isa, tmp_path / "x.tif", period=0)
    with pytest.raises(ExportExistsError, match="overwrite=True"):
        to_cog(small_isa, path, period=1)
    to_cog(small_isa, path, period=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]  # no scratch files left
    assert isinstance(ExportError("x"), xjointseg.XJointSegError)


def test_to_cog_tags_name_the_period_label_and_its_source_items(tmp_path, small_isa):
    import json

    import rasterio

    years = [str(t)[:4] for t in small_isa.time.values]
    isa = small_isa.assign_coords(period=("time", years))
    isa.attrs["source_items"] = json.dumps({years[0]: ["S2A_a"], years[1]: ["S2B_b", "S2A_c"]})
    path = to_cog(isa, tmp_path / "x.tif", period=1)
    with rasterio.open(path) as src:
        tags = src.tags()
    assert tags["period_label"] == years[1]
    assert json.loads(tags["source_items"]) == ["S2B_b", "S2A_c"]
    # a partial date that matches one period picks it; one matching several says so
    one = to_cog(isa, tmp_path / "y.tif", period=str(isa.time.values[0])[:7])
    with rasterio.open(one) as src:
        assert src.tags()["period_label"] == years[0]
    same_year = isa.assign_coords(time=np.array(["2017-03-01", "2017-09-01"], "datetime64[ns]"))
    with pytest.raises(OptionError, match="matches 2 periods"):
        to_cog(same_year, tmp_path / "z.tif", period="2017")
