"""The segmentation engine: seam-free, georeferenced, lazy, nodata-aware."""

import importlib
import inspect
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
from conftest import partition, shared_path
from hypothesis import given
from hypothesis import strategies as st

import xjointseg
from xjointseg import segment
from xjointseg.models.model import Model
from xjointseg.schema import FINGERPRINT_COORD
from xjointseg.testing import synthetic_scene, toy_model, toy_weights

MODEL = toy_model(depth=3)  # halo 4, known receptive field
TILE = 16


def whole_pass(obj, **kw):
    """One block for the whole scene: the reference every chunking must reproduce."""
    return segment(obj, MODEL, tile=TILE, chunks=100_000, **kw).values


SCENE_2D = synthetic_scene(45, 38, seed=1)
SCENE_3D = synthetic_scene(37, 29, times=2, seed=2)


@given(ych=partition(45), xch=partition(38), as_array=st.booleans())
def test_mask_independent_of_chunking_2d(ych, xch, as_array):
    obj = SCENE_2D.to_dataarray("band") if as_array else SCENE_2D
    ref = whole_pass(obj)
    got = segment(obj.chunk(y=ych, x=xch), MODEL, tile=TILE).values
    np.testing.assert_array_equal(got, ref)


@given(ych=partition(37), xch=partition(29), tch=st.sampled_from([1, 2]))
def test_mask_and_probability_independent_of_chunking_3d(ych, xch, tch):
    obj = SCENE_3D.chunk(time=tch, y=ych, x=xch)
    np.testing.assert_array_equal(segment(obj, MODEL, tile=TILE).values, whole_pass(SCENE_3D))
    prob = segment(obj, MODEL, tile=TILE, output="probability").values
    np.testing.assert_allclose(prob, whole_pass(SCENE_3D, output="probability"), atol=1e-6)


def test_tiny_chunks_equal_whole_scene():
    ref = whole_pass(SCENE_2D)
    got = segment(SCENE_2D.chunk(y=1, x=2), MODEL, tile=TILE).values
    np.testing.assert_array_equal(got, ref)


def test_halo_too_small_is_detected():
    """The seam test can fail: with less context than the receptive field, seams appear."""
    ref = whole_pass(SCENE_2D)
    got = segment(SCENE_2D.chunk(y=16, x=16), MODEL, tile=TILE, halo=1).values
    assert (got != ref).sum() > 0


def test_nonzero_mask_has_both_classes():
    # guard against a trivially constant model making the seam tests vacuous
    values = np.unique(whole_pass(SCENE_2D))
    assert {0, 1} <= set(values.tolist())


# --- georeferencing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,origin,crs",
    [
        ((40, 40), (330000.0, 5822040.0), "EPSG:32633"),
        ((23, 37), (500010.0, 4000000.0), "EPSG:32750"),
    ],
)
def test_output_grid_is_input_grid_zoomed_10x(shape, origin, crs):
    ds = synthetic_scene(*shape, origin=origin, crs=crs)
    isa = ds.isa.segment(model=MODEL, tile=TILE)
    assert isa.shape == (shape[0] * 10, shape[1] * 10)
    assert isa.odc.crs == ds.odc.crs
    assert isa.odc.geobox.extent.boundingbox == ds.odc.geobox.extent.boundingbox
    left, top = origin
    np.testing.assert_allclose(isa.x.values, left + 0.5 + np.arange(shape[1] * 10))
    np.testing.assert_allclose(isa.y.values, top - 0.5 - np.arange(shape[0] * 10))
    assert isa.odc.geobox.resolution.x == 1 and isa.odc.geobox.resolution.y == -1
    assert isa.attrs["model"] == MODEL.name and isa.attrs["model_sha256"] == MODEL.sha256


def test_time_coordinate_and_dims_kept():
    isa = SCENE_3D.isa.segment(model=MODEL, tile=TILE)
    assert isa.dims == ("time", "y", "x")
    np.testing.assert_array_equal(isa.time.values, SCENE_3D.time.values)
    assert isa.dtype == np.uint8


def test_probability_output():
    prob = SCENE_2D.isa.segment(model=MODEL, tile=TILE, output="probability").values
    assert prob.dtype == np.float32 and np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
    mask = whole_pass(SCENE_2D)
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(np.uint8))


# --- laziness and the graph -------------------------------------------------------------


def test_building_the_result_computes_nothing():
    def boom(block):
        raise AssertionError("input was computed while building the graph")

    ds = synthetic_scene(40, 40).chunk(y=20, x=20)
    ds["B04"] = ds["B04"].copy(data=ds["B04"].data.map_blocks(boom, dtype="uint16"))
    isa = ds.isa.segment(model=MODEL, tile=TILE)  # must not raise
    assert isinstance(isa.data, da.Array)
    with pytest.raises(AssertionError, match="input was computed"):
        isa.compute()


def test_the_plan_says_what_segment_will_do_and_runs_to_the_same_map():
    from xjointseg.engine import plan_segment

    ds = synthetic_scene(64, 64, times=2).chunk(y=32, x=32)
    plan = plan_segment(ds, MODEL, tile=TILE, chunks="keep")
    assert (plan.tile, plan.halo, plan.periods) == (TILE, MODEL.halo, ("time",))
    assert plan.blocks.numblocks == (2, 1, 2, 2)  # a block per period and chunk
    np.testing.assert_array_equal(
        plan.run().values, segment(ds, MODEL, tile=TILE, chunks="keep").values
    )
    with pytest.raises(xjointseg.errors.OptionError, match="tile=0"):
        plan_segment(ds, MODEL, tile=0)  # the same checks as segment, before any pixel


def test_numpy_input_becomes_dask():
    isa = SCENE_2D.isa.segment(model=MODEL, tile=TILE)
    assert isinstance(isa.data, da.Array)


def test_model_loaded_from_file_is_not_in_the_graph(tmp_path):
    from xjointseg.models.toy import ToyNet

    net = ToyNet(in_bands=3, depth=3, width=32, seed=9)
    path = tmp_path / "toy.safetensors"
    xjointseg.save_model(net, path, name="toy-wide", bands=MODEL.bands)
    model = xjointseg.load_model(path, device="cpu")
    isa = SCENE_2D.chunk(y=16, x=16).isa.segment(model=model, tile=TILE)
    graph = pickle.dumps(dict(isa.__dask_graph__()))
    weight_bytes = net.body[1].weight.detach().numpy().tobytes()[:256]
    assert weight_bytes not in graph  # the graph carries a reference, not the tensors
    ref = pickle.loads(pickle.dumps(model.ref()))
    assert ref.load() is model  # per-process cache: the same object, not a reload


def test_same_result_with_processes_scheduler(tmp_path):
    path = toy_weights(tmp_path / "toy.safetensors", depth=3)
    isa = SCENE_2D.chunk(y=16, x=16).isa.segment(model=str(path), tile=TILE, device="cpu")
    with dask.config.set(scheduler="processes", num_workers=2):
        got = isa.values
    np.testing.assert_array_equal(got, whole_pass(SCENE_2D))


# --- nodata -----------------------------------------------------------------------------


class CountingModel(Model):
    calls = 0

    def predict(self, batch, **kw):
        CountingModel.calls += len(batch)
        return super().predict(batch, **kw)


def test_nodata_pixels_become_255_and_nan():
    ds = synthetic_scene(32, 32)
    ds["B03"][3, 4] = 0  # declared nodata (attrs["nodata"] = 0)
    ds = ds.astype("float32")
    ds["B02"][10, 20] = np.nan
    for v in ds.data_vars:
        ds[v].attrs["nodata"] = 0
    mask = ds.isa.segment(model=MODEL, tile=TILE).values
    prob = ds.isa.segment(model=MODEL, tile=TILE, output="probability").values
    for y, x in [(3, 4), (10, 20)]:
        assert (mask[y * 10 : y * 10 + 10, x * 10 : x * 10 + 10] == 255).all()
        assert np.isnan(prob[y * 10 : y * 10 + 10, x * 10 : x * 10 + 10]).all()
    assert (mask == 255).sum() == 200 and np.isnan(prob).sum() == 200


def test_missing_pixels_do_not_poison_neighbours():
    """A NaN pixel is filled with the model's neutral value before inference."""
    ds = synthetic_scene(32, 32).astype("float32")
    filled = ds.copy(deep=True)
    ds["B04"][12, 12] = np.nan
    for band, value in zip(MODEL.bands, MODEL.fill_values, strict=True):
        filled[band][12, 12] = value
    a = ds.isa.segment(model=MODEL, tile=TILE, output="probability").values
    b = filled.isa.segment(model=MODEL, tile=TILE, output="probability").values
    keep = ~np.isnan(a)
    np.testing.assert_array_equal(a[keep], b[keep])
    assert np.isfinite(a[110:120, 130:140]).all()  # the neighbour to the east is a real value


def test_all_nodata_block_costs_no_inference():
    net = MODEL.network
    counting = CountingModel(net, name="count", bands=MODEL.bands, sha256="c" * 64)
    ds = synthetic_scene(32, 64)
    for v in ds.data_vars:
        ds[v][:, :32] = 0
    CountingModel.calls = 0
    mask = ds.chunk(x=32).isa.segment(model=counting, tile=TILE).values
    assert (mask[:, :320] == 255).all()
    assert CountingModel.calls == 4  # only the 2 x 2 tiles of the valid half ran


# --- the accessor -----------------------------------------------------------------------


def test_accessor_equals_function_and_shows_parameters():
    a = SCENE_2D.isa.segment(model=MODEL, tile=TILE).values
    b = segment(SCENE_2D, MODEL, tile=TILE).values
    np.testing.assert_array_equal(a, b)
    params = inspect.signature(SCENE_2D.isa.segment).parameters
    assert list(params)[:3] == ["model", "output", "halo"]
    assert "Map impervious surfaces" in SCENE_2D.isa.segment.__doc__
    da_ = SCENE_2D.to_dataarray("band")
    np.testing.assert_array_equal(da_.isa.segment(model=MODEL, tile=TILE).values, a)


def test_common_band_names_are_mapped():
    renamed = SCENE_2D.rename(B02="blue", B03="green", B04="red", B08="nir")
    np.testing.assert_array_equal(
        renamed.isa.segment(model=MODEL, tile=TILE).values, whole_pass(SCENE_2D)
    )


def test_band_order_in_dataarray_does_not_matter():
    arr = SCENE_2D.to_dataarray("band").isel(band=[3, 0, 2, 1])
    np.testing.assert_array_equal(
        arr.isa.segment(model=MODEL, tile=TILE).values, whole_pass(SCENE_2D)
    )


# --- a real scene -----------------------------------------------------------------------


def test_real_sentinel2_scene_loaded_with_odc_stac_end_to_end():
    import odc.stac
    import pystac

    item = pystac.Item.from_file(shared_path("s2", "havelland_T33UUU_20170216_L1C", "item.json"))
    ds = odc.stac.load(
        [item], bands=["red", "green", "blue"], chunks={"x": 128, "y": 128}, resolution=10
    ).isel(x=slice(200, 392), y=slice(400, 560))
    isa = ds.isa.segment(model=MODEL, tile=32)
    assert isa.dims == ("time", "y", "x") and isa.shape == (1, 1600, 1920)
    assert isa.odc.crs == "EPSG:32633"
    assert isa.odc.geobox.extent.boundingbox == ds.odc.geobox.extent.boundingbox
    got = isa.values
    whole = ds.compute().isa.segment(model=MODEL, tile=32, chunks=100_000).values
    np.testing.assert_array_equal(got, whole)
    valid = (ds.red.values > 0) & (ds.green.values > 0) & (ds.blue.values > 0)
    expect_nodata = np.repeat(np.repeat(~valid, 10, axis=1), 10, axis=2)
    np.testing.assert_array_equal(got == 255, expect_nodata)


def test_companion_time_coordinates_are_kept():
    ds = SCENE_3D.assign_coords(period=("time", ["2017", "2019"]))
    isa = ds.isa.segment(model=MODEL, tile=TILE)
    assert list(isa.period.values) == ["2017", "2019"]


class DuckModel:
    """Not an xjointseg Model: just the contract (bands, scale, halo, align, predict)."""

    bands, scale, halo, align = ("B04", "B03", "B02"), 10, 0, 1

    def predict(self, batch, *, output="mask", margin=0):
        core = batch[:, 0, margin : batch.shape[2] - margin, margin : batch.shape[3] - margin]
        up = np.repeat(np.repeat(core, 10, axis=1), 10, axis=2)
        return (up > 1000).astype(np.uint8) if output == "mask" else (up / 1e4).astype("f4")


def test_any_object_with_the_model_contract_works():
    isa = segment(SCENE_2D.chunk(y=16, x=16), DuckModel(), tile=TILE).values
    expect = np.repeat(np.repeat(SCENE_2D.B04.values > 1000, 10, 0), 10, 1)
    np.testing.assert_array_equal(isa, expect.astype(np.uint8))


# --- defaults: precision, tile, chunks -------------------------------------------------


@given(ych=partition(45), xch=partition(38))
def test_fp32_mask_independent_of_chunking(ych, xch):
    ref = segment(SCENE_2D, MODEL, tile=TILE, chunks=100_000, precision="fp32").values
    got = segment(SCENE_2D.chunk(y=ych, x=xch), MODEL, tile=TILE, precision="fp32").values
    np.testing.assert_array_equal(got, ref)


def test_precision_is_an_option_of_segment():
    isa = segment(SCENE_2D, MODEL, tile=TILE, precision="fp32")
    assert isa.attrs["precision"] == "fp32"
    auto = segment(SCENE_2D, MODEL, tile=TILE)  # "auto" is fixed where segment is called
    assert auto.attrs["precision"] == "fp32"  # on a CPU
    assert auto[FINGERPRINT_COORD].item() == isa[FINGERPRINT_COORD].item()  # the same work
    with pytest.raises(xjointseg.errors.OptionError, match="precision"):
        segment(SCENE_2D, MODEL, precision="fp16")
    with pytest.raises(xjointseg.errors.OptionError, match="predict"):
        segment(SCENE_2D, DuckModel(), precision="fp32")  # it cannot honour it


def test_auto_precision_is_what_the_model_resolves():
    auto = segment(SCENE_2D, MODEL, tile=TILE).values
    explicit = segment(SCENE_2D, MODEL, tile=TILE, precision=MODEL.resolve_precision()).values
    np.testing.assert_array_equal(auto, explicit)


GIB = 1 << 30


def _budget(monkeypatch, nbytes):
    segment_module = importlib.import_module("xjointseg.engine.segment")
    monkeypatch.setattr(segment_module, "available_memory", lambda: (nbytes, "test"))


@pytest.mark.parametrize("memory", [64 << 20, 512 << 20, 2 * GIB, 64 * GIB])
def test_default_tile_is_the_largest_that_fits(monkeypatch, memory):
    import torch

    from xjointseg.engine.segment import CPU_TILE_BYTES, MAX_TILE, MEMORY_SHARE, default_tile
    from xjointseg.models.jointseg import JointSegNet

    model = Model.from_network(JointSegNet.lite(), name="lite", bands=MODEL.bands)
    _budget(monkeypatch, memory)
    tile, why = default_tile(model)
    at_once = torch.get_num_threads()  # one tile per torch thread at once on the CPU
    budget = min(memory // MEMORY_SHARE // at_once, CPU_TILE_BYTES)
    assert tile % 32 == 0 and 32 <= tile <= MAX_TILE and str(tile) in why
    if tile > 32:
        assert model.activation_bytes(tile) <= budget
    if tile < MAX_TILE:
        assert model.activation_bytes(tile + 32) > budget


def test_default_tile_shrinks_with_memory_and_scene(monkeypatch):
    _budget(monkeypatch, 64 * GIB)
    big = segment(SCENE_2D.isel(x=slice(0, 8)), MODEL).attrs["tile"]
    assert big == 64  # 45 px scene: a tile of 64 covers it, larger ones compute only fill
    scene = synthetic_scene(300, 300)
    assert segment(scene, MODEL).attrs["tile"] == 256
    _budget(monkeypatch, 400 << 20)  # 100 MiB for a tile of the toy network
    small = segment(scene, MODEL).attrs["tile"]
    assert 32 < small < 256 and MODEL.activation_bytes(small) <= 100 << 20


def test_explicit_tile_overrides_the_default(monkeypatch):
    _budget(monkeypatch, 40 << 20)  # the default takes a quarter, shared: a smaller tile
    assert segment(SCENE_2D, MODEL).attrs["tile"] < 48
    assert segment(SCENE_2D, MODEL, tile=48).attrs["tile"] == 48
    _budget(monkeypatch, 4 << 20)  # but no tile beyond the memory there is
    with pytest.raises(xjointseg.errors.OptionError, match="GiB there is"):
        segment(SCENE_2D, MODEL, tile=48)


@given(
    sizes=st.lists(st.integers(1, 1200), min_size=2, max_size=2),
    tile=st.sampled_from([16, 32, 128]),
    halo=st.integers(0, 200),
    min_blocks=st.integers(1, 64),
)
def test_split_chunks_keeps_the_tile_grid(sizes, tile, halo, min_blocks):
    from xjointseg.engine._dask import plan_chunks, split_chunks

    plans = [plan_chunks(n, (n,), tile=tile, halo=halo) for n in sizes]
    out = split_chunks(plans, tile=tile, halo=halo, min_blocks=min_blocks)
    for n, plan in zip(sizes, out, strict=True):
        assert sum(plan) == n
        assert all(c % tile == 0 for c in plan[:-1])  # blocks start on the tile grid
        if len(plan) > 1:
            assert min(plan) >= max(tile, halo)
    blocks = len(out[0]) * len(out[1])
    if blocks < min_blocks:  # could not split further: no chunk has room for two pieces
        assert all(c < 2 * max(tile, halo) + tile for plan in out for c in plan)


def test_auto_chunks_give_every_parallel_slot_blocks(monkeypatch):
    segment_module = importlib.import_module("xjointseg.engine.segment")
    scene = synthetic_scene(128, 96, times=2)
    monkeypatch.setattr(segment_module, "parallel_slots", lambda: 6)
    isa = segment(scene, MODEL, tile=TILE)
    assert isa.data.npartitions >= 4 * 6
    np.testing.assert_array_equal(isa.values, whole_pass(scene))
    monkeypatch.setattr(segment_module, "parallel_slots", lambda: 1)
    assert segment(scene.chunk(y=64, x=48), MODEL, tile=TILE).data.npartitions == 2 * 2 * 2
    kept = segment(scene, MODEL, tile=TILE, chunks=128)
    assert kept.data.npartitions == 2  # an explicit chunking is not split


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_same_bits_whatever_the_torch_thread_count(precision):
    """Each tile runs alone on one torch thread, so a 1-thread distributed worker and the
    2-thread threaded scheduler give the same probabilities to the last bit, at the default
    precision and in bf16 (whose sums once moved mask pixels with the thread count), on real
    Sentinel-2 with the shipped network."""
    import torch

    from xjointseg.data import load_demo_scene

    scene = load_demo_scene()[["red", "green", "blue"]].isel(y=slice(0, 48), x=slice(0, 48))
    model = xjointseg.load_model("jointseg", device="cpu")
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for output in ("probability", "mask"):
                isa = segment(scene, model, output=output, tile=32, precision=precision)
                outputs.append(isa.values)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(outputs[0], outputs[2], equal_nan=True)
    assert np.array_equal(outputs[1], outputs[3])
    assert 0 < (outputs[1] == 1).mean() < 1  # a real map, not an empty one


def test_tile_threads_keep_their_one_thread_to_themselves():
    """The pool's threads run on one torch thread each; threads started afterwards still get
    the count the user set (torch.set_num_threads also sets what new threads start from)."""
    import threading

    import torch

    from xjointseg.models._threads import tile_pool

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # a count no other test uses: a new pool of 3
        pool = tile_pool()
        counts = [job.result() for job in [pool.submit(torch.get_num_threads) for _ in range(6)]]
        assert counts == [1] * 6
        seen: list[int] = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [3] and torch.get_num_threads() == 3
        # predict's tiles are what the network gives on one thread, whatever the caller has
        batch = np.stack([SCENE_2D[b].values[:40, :38] for b in MODEL.bands])[None]
        got = MODEL.predict(batch.astype(np.float32), margin=4, output="probability")
        torch.set_num_threads(1)
        x = torch.from_numpy(batch.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            alone = torch.sigmoid(MODEL.network.segment_logits(x, 4)[:, 0]).numpy()
        assert np.array_equal(got, alone)
    finally:
        torch.set_num_threads(before)
