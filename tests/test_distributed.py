"""Scale-out on dask.distributed: same masks, one model load per worker, small graphs,
and a killed worker that leaves the result unchanged."""

import os
import pickle
import time

import dask.array as da
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import xjointseg  # noqa: E402
from xjointseg.distributed import loaded_models, register_model  # noqa: E402
from xjointseg.testing import synthetic_scene, toy_weights  # noqa: E402

TILE = 16


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(toy_weights(tmp_path_factory.mktemp("w") / "toy.safetensors", depth=3))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def threaded(ds, weights):
    return ds.isa.segment(model=weights, tile=TILE, device="cpu").compute(scheduler="threads")


def test_processes_give_the_same_mask_as_threads(client, weights):
    ds = synthetic_scene(64, 48, times=2).chunk(y=16, x=16)
    isa = ds.isa.segment(model=weights, tile=TILE)
    got = client.compute(isa).result()
    np.testing.assert_array_equal(got.values, threaded(ds, weights).values)


def test_plugin_is_idempotent_and_loads_once_per_worker(client, weights):
    first = register_model(client, weights, device="cpu")
    second = register_model(client, weights, device="cpu")
    assert first == second
    sha = xjointseg.load_model(weights).sha256
    per_worker = client.run(loaded_models)
    assert len(per_worker) == 2
    for models in per_worker.values():
        assert [m for m in models if m[0] == sha] == [(sha, "cpu")]


def test_in_memory_model_cannot_be_registered(client):
    from xjointseg.errors import UnknownModelError
    from xjointseg.testing import toy_model

    with pytest.raises(UnknownModelError, match="save_model"):
        register_model(client, toy_model())


def test_graph_of_100_blocks_is_small_and_model_free(weights):
    # a lazily generated input, so the graph holds tasks only, never pixels
    shape = (3, 160, 160)
    data = da.random.default_rng(0).uniform(200, 3000, shape, chunks=(3, 16, 16))
    ds = synthetic_scene(160, 160)
    arr = ds[["B04", "B03", "B02"]].to_dataarray("band").copy(data=data)
    isa = arr.isa.segment(model=weights, tile=TILE, chunks="keep")
    assert isa.data.npartitions == 100
    size = len(pickle.dumps(dict(isa.__dask_graph__())))
    assert size < 1_000_000, size


def test_killed_worker_leaves_a_correct_result(client, weights):
    ds = synthetic_scene(96, 96, seed=3).chunk(y=16, x=16)
    isa = ds.isa.segment(model=weights, tile=TILE)
    expect = threaded(ds, weights).values
    persisted = client.persist(isa)
    futures = distributed.futures_of(persisted)
    deadline = time.time() + 60
    while sum(f.status == "finished" for f in futures) < len(futures) // 3:
        assert time.time() < deadline
        time.sleep(0.05)
    victim = next(iter(client.scheduler_info()["workers"]))
    try:
        client.run(os._exit, 1, workers=[victim])  # the worker process dies on the spot
    except Exception:  # noqa: BLE001 - the RPC itself fails when its worker dies
        pass
    np.testing.assert_array_equal(persisted.compute().values, expect)


def test_defaults_see_the_workers(client, weights):
    from xjointseg._system import available_memory, parallel_slots

    limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    # in a task: the worker's own limit, minus what it holds
    inside = [client.submit(available_memory, pure=False, workers=[w]) for w in client.ncores()]
    for memory, source in client.gather(inside):
        assert 0 < memory <= max(limits)
        if source != "cgroup memory limit":
            assert source in ("dask worker memory limit", "available system memory")
    assert parallel_slots() == 2  # the client's two single-threaded workers
    memory, _ = available_memory()
    assert memory <= min(limits)
    ds = synthetic_scene(64, 64)  # one block of numpy input without a client
    isa = ds.isa.segment(model=weights, tile=TILE)
    assert isa.data.npartitions >= 8  # 4 blocks for each worker thread
    np.testing.assert_array_equal(client.compute(isa).result().values, threaded(ds, weights))
