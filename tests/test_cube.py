"""Writing and opening ISA cubes: layout, resume after a kill, refusals, appends, fsspec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.cube import open_cube, status, to_zarr
from xjointseg.errors import (
    CubeInputError,
    CubeMismatchError,
    NotACubeError,
    OptionError,
    PeriodConflictError,
    XJointSegError,
)

SHA = "ab" * 32
YEARS = ["2017-01-01", "2019-01-01", "2021-01-01"]


def make_cube(data, *, years=YEARS, origin=(330000.0, 5822000.0), chunks=100, sha=SHA):
    """A segment()-like uint8 (time, y, x) map on a 1 m grid in EPSG:32633."""
    data = np.asarray(data, dtype=np.uint8)
    nt, ny, nx = data.shape
    x0, y0 = origin
    gbox = GeoBox.from_bbox((x0, y0 - ny, x0 + nx, y0), crs="EPSG:32633", resolution=1)
    coords = {"time": np.array(years[:nt], dtype="datetime64[ns]"), **xr_coords(gbox)}
    attrs = {
        "long_name": "impervious surface",
        "model": "toy2",
        "model_sha256": sha,
        "scale": 10,
        "nodata": 255,
        "flag_values": [0, 1],
        "flag_meanings": "not_impervious impervious",
    }
    arr = xr.DataArray(data, dims=("time", "y", "x"), coords=coords, attrs=attrs, name="isa")
    arr = arr.odc.assign_crs("EPSG:32633")
    return arr.chunk({"time": 1, "y": chunks, "x": chunks}) if chunks else arr


def random_isa(nt=3, ny=300, nx=260, seed=0):
    rng = np.random.default_rng(seed)
    data = (rng.random((nt, ny, nx)) < 0.3).astype(np.uint8)
    data[:, :40, :50] = 255  # some nodata
    return data


def tree(path) -> dict[str, bytes]:
    """Every file under a folder, by relative path, with its bytes."""
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def mtimes(path) -> dict[str, int]:
    root = Path(path)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --- layout and round trip ----------------------------------------------------------------


def test_round_trip_crs_attrs_and_layout(tmp_path):
    isa = make_cube(random_isa())
    store = tmp_path / "cube.zarr"
    cube = to_zarr(isa, store, sources=["S2A_1", "S2B_2"])
    assert cube.dtype == np.uint8 and cube.dims == ("time", "y", "x")
    np.testing.assert_array_equal(cube.values, isa.values)
    np.testing.assert_array_equal(cube.time.values, isa.time.values)
    assert cube.odc.geobox == isa.odc.geobox
    import rioxarray  # noqa: F401

    plain = xr.open_zarr(store, consolidated=False, zarr_format=3)  # no xjointseg needed
    assert plain["isa"].rio.crs.to_epsg() == 32633
    assert tuple(plain["isa"].rio.transform())[:6] == tuple(isa.odc.geobox.affine)[:6]
    assert "spatial_ref" in plain.coords
    for key in ("model", "model_sha256", "xjointseg_version", "source_items"):
        assert key in cube.attrs
    assert cube.attrs["model_sha256"] == SHA
    assert cube.attrs["source_items"] == ["S2A_1", "S2B_2"]
    z = zarr.open_array(str(store), path="isa", mode="r")
    assert z.metadata.zarr_format == 3 and z.fill_value == 255
    assert z.chunks == (1, 100, 100) and z.shards is None  # blocks <= 2048: one chunk each
    assert "blosc" in json.dumps(z.metadata.to_dict()["codecs"])
    root_meta = json.loads((store / "zarr.json").read_text())
    assert "consolidated_metadata" not in root_meta or not root_meta["consolidated_metadata"]
    st = status(store)
    assert st.complete.all() and (st.blocks_done == 9).all()


def test_block_writes_touch_no_metadata_and_encode_as_the_store_says(tmp_path):
    """Blocks are region writes into the template: no zarr.json changes once it exists (so
    concurrent writers never race on one), and the probability is encoded by the store's own
    scale_factor and _FillValue."""
    isa = make_cube(random_isa(nt=2, ny=120, nx=100), chunks=60)
    rng = np.random.default_rng(2)
    p = rng.random(isa.shape).astype(np.float32)
    p[:, 70:, 60:] = np.nan
    prob = isa.copy(data=da.from_array(p, chunks=isa.data.chunks))
    store = tmp_path / "cube.zarr"
    job = to_zarr(isa, store, probability=prob, compute=False)  # the template, no block yet
    metadata = {q: q.stat().st_mtime_ns for q in store.rglob("zarr.json")}
    assert not list((store / "isa").rglob("c/*/*/*"))  # nothing written but metadata
    job.compute()
    assert {q: q.stat().st_mtime_ns for q in store.rglob("zarr.json")} == metadata
    raw = zarr.open_array(str(store), path="probability", mode="r")[:]
    attrs = zarr.open_array(str(store), path="probability", mode="r").attrs
    assert attrs["scale_factor"] == pytest.approx(0.004) and attrs["_FillValue"] == 255
    assert (raw[:, 70:, 60:] == 255).all()
    ok = ~np.isnan(p)
    assert np.abs(raw[ok] * 0.004 - p[ok]).max() <= 0.002 + 1e-6 and raw[ok].max() <= 250
    np.testing.assert_array_equal(open_cube(store).values, isa.values)
    codecs = json.dumps(zarr.open_array(str(store), path="isa", mode="r").metadata.to_dict())
    assert '"cname": "zstd"' in codecs and '"shuffle": "bitshuffle"' in codecs


def test_each_block_is_one_shard(tmp_path):
    isa = make_cube(random_isa(nt=2, ny=1024, nx=768), chunks=512)
    store = tmp_path / "cube.zarr"
    cube = to_zarr(isa, store, inner_chunks=128)
    z = zarr.open_array(str(store), path="isa", mode="r")
    assert z.shards == (1, 512, 512) and z.chunks == (1, 128, 128)
    np.testing.assert_array_equal(cube.values, isa.values)
    # one object per period and block
    shards = sorted(str(p.relative_to(store / "isa" / "c")) for p in (store / "isa/c").rglob("*"))
    assert [s for s in shards if s.count("/") == 2] == [
        f"{t}/{iy}/{ix}" for t in range(2) for iy in range(2) for ix in range(2)
    ]
    with pytest.raises(OptionError, match="divide"):
        to_zarr(isa, tmp_path / "other.zarr", inner_chunks=300)


def test_irregular_and_numpy_input(tmp_path):
    data = random_isa(nt=2, ny=250, nx=230)
    ragged = make_cube(data, chunks=None).chunk({"time": 1, "y": (100, 120, 30), "x": (50, 180)})
    cube = to_zarr(ragged, tmp_path / "a.zarr")
    np.testing.assert_array_equal(cube.values, data)
    cube = to_zarr(make_cube(data, chunks=None), tmp_path / "b.zarr")  # numpy-backed
    np.testing.assert_array_equal(cube.values, data)


def test_empty_chunks_are_not_written(tmp_path):
    data = np.zeros((1, 200, 200), np.uint8)
    data[0, :100, :100] = 255  # a block of nodata only: equals the fill value
    data[0, 100:, 100:] = 1
    store = tmp_path / "cube.zarr"
    cube = to_zarr(make_cube(data), store)
    written = sorted(str(p.relative_to(store / "isa/c")) for p in (store / "isa/c").rglob("*"))
    assert [w for w in written if w.count("/") == 2] == ["0/0/1", "0/1/0", "0/1/1"]
    np.testing.assert_array_equal(cube.values, data)  # the missing block reads as nodata


def test_probability_is_stored_as_scaled_uint8(tmp_path):
    isa = make_cube(random_isa(nt=2, ny=120, nx=100), chunks=60)
    rng = np.random.default_rng(1)
    p = rng.random(isa.shape).astype(np.float32)
    p[:, :10, :10] = np.nan
    prob = isa.copy(data=da.from_array(p, chunks=isa.data.chunks)).astype(np.float32)
    store = tmp_path / "cube.zarr"
    to_zarr(isa, store, probability=prob)
    z = zarr.open_array(str(store), path="probability", mode="r")
    assert z.dtype == np.uint8
    back = open_cube(store, variable="probability").values
    assert np.isnan(back[:, :10, :10]).all()
    ok = ~np.isnan(p)
    assert np.abs(back[ok] - p[ok]).max() <= 0.002 + 1e-6  # half a step of 0.004
    with pytest.raises(CubeInputError, match="same"):
        to_zarr(isa, tmp_path / "x.zarr", probability=prob.isel(x=slice(0, 50)))
    with pytest.raises(CubeInputError, match="float"):
        to_zarr(isa, tmp_path / "y.zarr", probability=isa)


def test_fsspec_memory_url():
    isa = make_cube(random_isa(nt=2, ny=150, nx=120), chunks=60)
    url = f"memory://xjointseg-test-{os.getpid()}/cube.zarr"
    cube = to_zarr(isa, url)
    np.testing.assert_array_equal(cube.values, isa.values)
    again = to_zarr(isa, url)  # a resume with nothing left to do
    np.testing.assert_array_equal(again.values, isa.values)
    assert status(url).complete.all()
    assert open_cube(url).odc.crs.epsg == 32633


# --- resume, concurrency ------------------------------------------------------------------


def test_resume_writes_only_missing_blocks_and_matches_clean_run(tmp_path):
    isa = make_cube(random_isa())
    clean = tmp_path / "clean.zarr"
    to_zarr(isa, clean)
    store = tmp_path / "cube.zarr"
    to_zarr(isa, store, part=(0, 3))  # a third of the blocks, as one of three jobs would
    st = status(store)
    assert st.blocks_done.sum() == 9 and not st.complete.any()
    before = mtimes(store)
    time.sleep(0.01)
    to_zarr(isa, store)  # the same call: a resume
    after = mtimes(store)
    rewritten = [k for k in before if k.startswith("isa/c/") and after[k] != before[k]]
    assert rewritten == []  # blocks already done were not written again
    assert tree(store) == tree(clean)
    # running it once more changes nothing at all
    to_zarr(isa, store)
    assert mtimes(store) == after


def test_concurrent_writers_share_the_work(tmp_path):
    isa = make_cube(random_isa())
    clean = tmp_path / "clean.zarr"
    to_zarr(isa, clean)
    store = tmp_path / "cube.zarr"
    errors = []

    def job(k):
        try:
            to_zarr(isa, store, part=(k, 3))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=job, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert status(store).complete.all()
    assert tree(store) == tree(clean)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import dask, numpy as np
    import xjointseg
    from xjointseg.cube import to_zarr
    from xjointseg.testing import synthetic_scene

    store, weights = sys.argv[1], sys.argv[2]
    dask.config.set(scheduler="threads", num_workers=2)
    ds = synthetic_scene(96, 80, times=3, seed=3)
    isa = ds.isa.segment(model=weights, device="cpu", chunks=32, tile=32)

    def slow(block):  # stretch each block so that a kill lands mid-write
        time.sleep(0.15)
        return block

    isa = isa.copy(data=isa.data.map_blocks(slow, dtype=np.uint8))
    to_zarr(isa, store, inner_chunks=80)
    print("done", flush=True)
    """
)


def _markers(store) -> int:
    return (
        sum(1 for _ in Path(store, "_xjointseg", "done").rglob("*.*"))
        if Path(store, "_xjointseg", "done").exists()
        else 0
    )


def test_kill_and_resume_is_bit_identical(tmp_path):
    from xjointseg.testing import toy_weights

    weights = str(toy_weights(tmp_path / "toy.safetensors", depth=2, seed=5))
    script = tmp_path / "write.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(store):
        return subprocess.run(
            [sys.executable, str(script), str(store), weights],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    clean = tmp_path / "clean.zarr"
    done = run(clean)
    assert done.returncode == 0, done.stderr
    total = _markers(clean)
    assert total == 3 * 3 * 3  # periods x block rows x block columns

    store = tmp_path / "cube.zarr"

    def reached(wanted):
        if wanted == 0:  # while the template is being built beside the store
            return any(tmp_path.glob(".cube.zarr.xjointseg-tmp-*")) or store.exists()
        return _markers(store) >= wanted

    kills = []
    for wanted in (0, 1, total // 2):  # kill during the template, early, half way
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store), weights],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 90
        while not reached(wanted) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(_markers(store))
    assert 0 < kills[-1] < total, kills  # the kill did land mid-write
    assert proc.returncode == -signal.SIGKILL
    done = run(store)  # the same call again: resumes
    assert done.returncode == 0, done.stderr
    assert tree(store) == tree(clean)  # bit for bit, bookkeeping included
    assert not list(store.rglob("*.partial"))


# --- periods: append, conflicts, fingerprints ---------------------------------------------


def test_add_period_without_rewriting_others(tmp_path):
    data = random_isa(nt=4)
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(data[:2], years=YEARS), store)
    before = mtimes(store)
    time.sleep(0.01)
    # the whole computation again with one more period: the two written ones are skipped
    cube = to_zarr(make_cube(data[:3], years=YEARS), store)
    after = mtimes(store)
    assert all(after[k] == before[k] for k in before if k.startswith(("isa/c/0/", "isa/c/1/")))
    assert cube.sizes["time"] == 3
    np.testing.assert_array_equal(cube.values, data[:3])
    # or only the new period
    cube = to_zarr(make_cube(data[3:], years=["2023-01-01"]), store)
    np.testing.assert_array_equal(cube.values, data)
    assert [str(t)[:4] for t in cube.time.values] == ["2017", "2019", "2021", "2023"]
    assert status(store).complete.all()
    with pytest.raises(CubeMismatchError, match="after the last"):
        to_zarr(make_cube(data[:1], years=["2018-01-01"]), store)


def test_period_written_by_another_computation_is_refused(tmp_path):
    data = random_isa(nt=2)
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(data), store)
    other = data.copy()
    other[1, 100:120, 100:120] = 1 - other[1, 100:120, 100:120]
    with pytest.raises(PeriodConflictError, match="2019") as err:
        to_zarr(make_cube(other), store)
    assert isinstance(err.value, XJointSegError) and isinstance(err.value, FileExistsError)
    cube = to_zarr(make_cube(other), store, overwrite=True)
    np.testing.assert_array_equal(cube.values, other)
    assert status(store).complete.all()
    # only the replaced computation's markers are left
    assert len(list((store / "_xjointseg/done/0001").iterdir())) == 1


def test_store_for_another_grid_or_model_is_refused(tmp_path):
    data = random_isa(nt=1)
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(data), store)
    with pytest.raises(CubeMismatchError, match="grid"):
        to_zarr(make_cube(data, origin=(330100.0, 5822000.0)), store)
    with pytest.raises(CubeMismatchError, match="model"):
        to_zarr(make_cube(data, sha="cd" * 32), store)
    moved = to_zarr(make_cube(data, origin=(330100.0, 5822000.0)), store, overwrite=True)
    assert float(moved.x[0]) == 330100.5


def test_fingerprint_is_per_period_and_content_based(tmp_path):
    data = random_isa(nt=3)
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(data[:2]), store)
    # other periods do not change a period's fingerprint: the longer map appends
    to_zarr(make_cube(data), store)
    records = status(store).fingerprint.tolist()
    changed = data.copy()
    changed[0, 150, 150] ^= 1
    with pytest.raises(PeriodConflictError, match="2017"):
        to_zarr(make_cube(changed), store)
    redo = tmp_path / "redo.zarr"
    to_zarr(make_cube(changed), redo)
    again = status(redo).fingerprint.tolist()
    assert again[0] != records[0] and again[1:] == records[1:]


def test_user_fingerprint(tmp_path):
    data = random_isa(nt=1)
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(data), store, fingerprint="run-1")
    to_zarr(make_cube(data), store, fingerprint="run-1")
    with pytest.raises(PeriodConflictError):
        to_zarr(make_cube(data), store, fingerprint="run-2")


# --- bad input ----------------------------------------------------------------------------


def test_bad_input(tmp_path):
    isa = make_cube(random_isa(nt=1))
    with pytest.raises(CubeInputError, match="Dataset"):
        to_zarr(isa.to_dataset(), tmp_path / "a.zarr")
    with pytest.raises(CubeInputError, match="probability"):
        to_zarr(isa.astype("float32"), tmp_path / "a.zarr")
    with pytest.raises(CubeInputError, match="period"):
        to_zarr(isa.isel(time=0).drop_vars("time"), tmp_path / "a.zarr")
    no_crs = xr.DataArray(isa.values, dims=isa.dims, coords={d: isa[d].values for d in isa.dims})
    with pytest.raises(CubeInputError, match="CRS"):
        to_zarr(no_crs, tmp_path / "a.zarr")
    with pytest.raises(OptionError, match="part"):
        to_zarr(isa, tmp_path / "a.zarr", part=(3, 2))
    with pytest.raises(NotACubeError):
        open_cube(tmp_path / "nothing.zarr")
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    with pytest.raises(NotACubeError):
        open_cube(foreign)
    with pytest.raises(CubeMismatchError, match="not an xjointseg cube"):
        to_zarr(isa, foreign)
    assert xr.open_zarr(foreign, consolidated=False).v.size == 3  # left untouched


def test_accessor_matches_function(tmp_path):
    isa = make_cube(random_isa(nt=1))
    a = isa.isa.to_zarr(tmp_path / "a.zarr")
    b = to_zarr(isa, tmp_path / "b.zarr")
    xr.testing.assert_identical(a.load(), b.load())
    import inspect

    assert "overwrite" in inspect.signature(isa.isa.to_zarr).parameters


def test_delayed_write_progress_and_interrupted_remote_template(capsys):
    isa = make_cube(random_isa(nt=2, ny=150, nx=120), chunks=60)
    url = f"memory://xjointseg-test-{os.getpid()}/delayed.zarr"
    job = to_zarr(isa, url, compute=False)
    assert status(url).blocks_done.sum() == 0  # the template is there, no block yet
    job.compute()
    assert status(url).complete.all()
    to_zarr(isa, url + "2", progress=True)
    assert "Completed" in capsys.readouterr().err  # progress goes to stderr
    # a remote template cut short before its bookkeeping was written is built again
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/xjointseg-test-{os.getpid()}/delayed.zarr"
    fs.rm(f"{root}/_xjointseg", recursive=True)
    with pytest.raises(NotACubeError):
        open_cube(url)
    cube = to_zarr(isa, url)
    np.testing.assert_array_equal(cube.values, isa.values)
    # but a store that is not a cube is never deleted
    other = f"memory://xjointseg-test-{os.getpid()}/other.zarr"
    xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(other, zarr_format=3, consolidated=False)
    with pytest.raises(CubeMismatchError):
        to_zarr(isa, other)


def test_a_lazy_load_chunked_otherwise_is_the_same_computation(tmp_path):
    """The fingerprint of load_sentinel2's bands is its recipe (items, grid, options), not
    dask's token of the graph: another chunking resumes the cube; a changed band does not."""
    from xjointseg.data import demo_item_path
    from xjointseg.testing import toy_model

    model = toy_model()
    bbox = (12.545, 52.470, 12.560, 52.480)

    def load(chunks, **options):
        item = str(demo_item_path())
        return xjointseg.load_sentinel2(item, periods=2017, bbox=bbox, chunks=chunks, **options)

    def fingerprint(ds):
        return str(xjointseg.segment(ds, model)["isa_fingerprint"].values)

    store = tmp_path / "cube.zarr"
    to_zarr(xjointseg.segment(load(16), model), store)
    to_zarr(xjointseg.segment(load(32), model), store)  # a resume, not a conflict
    assert fingerprint(load(16)) == fingerprint(load(32))
    changed = load(32)
    changed["B04"] = changed["B04"] * 1.01
    assert fingerprint(changed) != fingerprint(load(32))
    with pytest.raises(PeriodConflictError):
        to_zarr(xjointseg.segment(changed, model), store)
    assert fingerprint(load(32, cloud_dilation=2)) != fingerprint(load(32))
    shifted = load(32).assign_coords(x=lambda d: d.x + 10.0)
    assert fingerprint(shifted) != fingerprint(load(32))


def test_zarr_v2_cube_on_an_object_store_with_probability_resumes_in_parts():
    from xjointseg.testing import synthetic_scene, toy_model

    scene = synthetic_scene(32, 32, times=2)
    isa = xjointseg.segment(scene, toy_model()).compute()
    prob = xjointseg.segment(scene, toy_model(), output="probability").compute()
    store = "memory://v2-parts.zarr"
    to_zarr(isa, store, probability=prob, zarr_format=2, part=(0, 2))
    assert not status(store)["complete"].all()
    to_zarr(isa, store, probability=prob, part=(1, 2))  # the store's format is kept
    assert status(store)["complete"].all()
    assert np.array_equal(open_cube(store).values, isa.values)
    back = open_cube(store, variable="probability").values
    assert np.nanmax(np.abs(back - prob.values)) <= 0.002 + 1e-6  # half a 0.004 step
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.exists("/v2-parts.zarr/.zgroup") and not fs.exists("/v2-parts.zarr/zarr.json")


def test_a_lazy_load_with_more_periods_appends_the_new_ones(tmp_path):
    import pystac

    from xjointseg.data import demo_pair_items
    from xjointseg.testing import toy_model

    items = [pystac.Item.from_file(str(p)) for p in demo_pair_items()]
    model, store = toy_model(), tmp_path / "cube.zarr"
    first = xjointseg.load_sentinel2(items, periods=[2016])
    to_zarr(xjointseg.segment(first, model), store)
    both = xjointseg.load_sentinel2(items, periods=[2016, 2018], chunks=64)
    cube = to_zarr(xjointseg.segment(both, model), store)  # 2016 is the same computation
    assert cube.sizes["time"] == 2 and status(store)["complete"].all()
