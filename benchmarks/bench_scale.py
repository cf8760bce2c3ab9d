"""Scale-out benchmark: worker processes, graph size, and (when present) GPU throughput.

Prints, from one run:

* wall time of ``segment(...).compute()`` on a ``LocalCluster`` of 1 and of 2 worker processes
  (one thread each; target speed-up >= 1.7 on a 2-core machine), cold (fresh workers: the
  first call, model load included) and warm, whether the masks equal the threaded
  scheduler's, next to the same tiles run in 1 and 2 plain processes without Dask — the
  speed-up the machine itself allows;
* the pickled size of the task graph against the number of blocks (it must not grow with the
  model: tasks carry a model reference, not the weights);
* with a CUDA GPU: km2/s of 1 m output and achieved TFLOP/s in fp32 and bf16, the bf16/fp32
  mask agreement, and the projection for the Yangtze River Economic Belt (2.2 million km2)
  on 1, 8 and 64 GPUs.

At ``--chunking default`` (the default) ``segment`` chooses the tile and the blocks itself
(numpy input; the blocks are chosen with the client active, so 2 workers get 4 blocks
each), as a user who tunes nothing gets them; ``--chunking 128`` uses tiles and blocks of
128 px.

Usage: ``python benchmarks/bench_scale.py [--size 512] [--model lite] [--chunking default]``
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

import xjointseg
import xjointseg.distributed
from xjointseg.testing import synthetic_scene, untrained_weights

YREB_KM2 = 2.2e6


def build_weights(kind: str, folder: Path) -> Path:
    arch, size = ("toy", "lite") if kind == "toy" else ("jointseg", kind)
    return untrained_weights(folder / f"{kind}.safetensors", arch, size)


def time_cluster(ds, weights: Path, n_workers: int, chunking: str):
    """Seconds of ``segment(...).compute()`` on ``n_workers`` fresh processes, cold (the
    first run: the workers load the model and torch picks its kernels, as a user's first
    call) and warm (the same call again), the tile, the number of blocks and the mask.
    ``chunking="default"``: segment's own tile and chunks, chosen with the client active
    (as a user would call it); ``"128"``: tiles and blocks of 128 px."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        xjointseg.distributed.register_model(client, weights, device="cpu")
        options = {} if chunking == "default" else {"tile": 128, "chunks": 128}
        isa = ds.isa.segment(model=str(weights), device="cpu", **options)
        seconds = []
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            mask = client.compute(isa).result()
            seconds.append(time.perf_counter() - start)
        return seconds, isa.attrs["tile"], isa.data.npartitions, mask.values


_MODEL = None
_TILE = 128


def _load_in_process(weights: str, tile: int) -> None:
    global _MODEL, _TILE
    import torch

    torch.set_num_threads(1)
    _MODEL, _TILE = xjointseg.load_model(weights, device="cpu"), tile
    _predict_tile(0)  # warm


def _predict_tile(seed: int) -> None:
    side = _TILE + 2 * _MODEL.halo
    x = np.random.default_rng(seed).uniform(200, 3000, (1, 3, side, side)).astype(np.float32)
    _MODEL.predict(x, margin=_MODEL.halo)


def time_processes(weights: Path, n_processes: int, n_tiles: int, tile: int) -> float:
    """The machine's own ceiling: the same tiles in plain processes, no Dask at all."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        n_processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_load_in_process,
        initargs=(str(weights), tile),
    ) as pool:
        list(pool.map(_load_in_process, [str(weights)] * n_processes, [tile] * n_processes))
        start = time.perf_counter()
        list(pool.map(_predict_tile, range(n_tiles)))
        return time.perf_counter() - start


def graph_bytes(weights: Path, blocks_per_side: int) -> int:
    n = 64 * blocks_per_side
    data = da.random.default_rng(0).uniform(200, 3000, (3, n, n), chunks=(3, 64, 64))
    ds = synthetic_scene(n, n)
    arr = ds[["B04", "B03", "B02"]].to_dataarray("band").copy(data=data)
    isa = arr.isa.segment(model=str(weights), tile=64, chunks="keep", device="cpu")
    return len(pickle.dumps(dict(isa.__dask_graph__())))


def bf16_agreement(model_name: str) -> tuple[float, str]:
    """Mask agreement, bf16 autocast vs fp32, on the bundled real scene (96 x 96 px tiles)."""
    from xjointseg.data import load_demo_scene

    model = xjointseg.load_model(model_name)
    ds = load_demo_scene().isel(time=0)
    data = np.stack([ds[b].values.astype(np.float32) for b in ("red", "green", "blue")])
    h = model.halo
    data = np.pad(data, ((0, 0), (h, h), (h, h)), constant_values=0)
    data = np.where(data == 0, model.fill_values[:, None, None], data).astype(np.float32)
    tiles = [
        data[None, :, y : y + 96 + 2 * h, x : x + 96 + 2 * h]
        for y in range(0, 384, 96)
        for x in range(0, 384, 96)
    ]
    same = total = 0
    for t in tiles:
        a = model.predict(t, margin=h, precision="fp32")
        b = model.predict(t, margin=h, precision="bf16")
        same += int((a == b).sum())
        total += a.size
    return same / total, str(model.device)


def gpu_section(kind: str) -> None:
    import torch

    from xjointseg.models.architectures import build_network, default_config
    from xjointseg.models.flops import count_macs

    net = build_network("jointseg", **default_config("jointseg", kind)).cuda().eval()
    net = net.to(memory_format=torch.channels_last)
    tile, batch = 256, 8
    halo = net.halo
    x = torch.rand(batch, 3, tile + 2 * halo, tile + 2 * halo, device="cuda") * 3000
    macs = count_macs(net.cpu(), tile + 2 * halo, tile + 2 * halo, margin=halo)
    net.cuda()
    km2 = batch * (tile * 10 / 1000) ** 2
    print("\n| GPU precision | km2/s of 1 m output | TFLOP/s | YREB hours on 1 / 8 / 64 GPUs |")
    print("|---|---|---|---|")
    masks = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            for _ in range(3):
                net.segment_logits(x, halo)
            torch.cuda.synchronize()
            start, reps = time.perf_counter(), 10
            for _ in range(reps):
                logits = net.segment_logits(x, halo)
            torch.cuda.synchronize()
            sec = (time.perf_counter() - start) / reps
        masks[name] = (logits >= 0).cpu().numpy()
        rate = km2 / sec
        hours = [YREB_KM2 / rate / 3600 / g for g in (1, 8, 64)]
        print(
            f"| {name} | {rate:.1f} | {2 * macs * batch / sec / 1e12:.1f} | "
            + " / ".join(f"{h:.2f}" for h in hours)
            + " |"
        )
    agree = float((masks["fp32"] == masks["bf16"]).mean())
    print(f"\nbf16 vs fp32 mask agreement on random input: {agree * 100:.3f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="scene side in 10 m pixels")
    parser.add_argument("--model", default="lite", help="lite, paper or toy")
    parser.add_argument(
        "--chunking",
        default="default",
        choices=["default", "128"],
        help="segment's default tile and chunks (numpy input), or tiles and blocks of 128 px",
    )
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        weights = build_weights(args.model, Path(tmp))
        ds = synthetic_scene(args.size, args.size, seed=0)
        one, tile, blocks_one, mask_one = time_cluster(ds, weights, 1, args.chunking)
        two, tile_two, blocks_two, mask_two = time_cluster(ds, weights, 2, args.chunking)
        assert tile == tile_two, "the default tile must not depend on the number of workers"
        options = {} if args.chunking == "default" else {"tile": 128, "chunks": 128}
        threaded = ds.isa.segment(model=str(weights), device="cpu", **options).compute()
        same = np.array_equal(mask_one, mask_two) and np.array_equal(mask_one, threaded.values)
        n_tiles = (-(-args.size // tile)) ** 2  # the tiles of the Dask run
        plain = [time_processes(weights, n, n_tiles, tile) for n in (1, 2)]
        sizes = [(b * b, graph_bytes(weights, b)) for b in (4, 10, 20)]
    km2 = (args.size * 10 / 1000) ** 2
    print(
        f"\nscale benchmark: model '{args.model}', {args.size} x {args.size} px scene "
        f"({km2:.0f} km2), {args.chunking} chunking (tile {tile}, {n_tiles} tiles), "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}\n"
    )
    print("| LocalCluster | blocks | seconds, cold | seconds, warm | km2/s of 1 m output, warm |")
    print("|---|---|---|---|---|")
    for n, sec, blocks in ((1, one, blocks_one), (2, two, blocks_two)):
        print(
            f"| {n} worker process{'es' if n > 1 else ''} x 1 thread | {blocks} | {sec[0]:.1f} "
            f"| {sec[1]:.1f} | {km2 / sec[1]:.3f} |"
        )
    print(
        f"\nspeed-up 2 vs 1 workers = {one[0] / two[0]:.2f} cold, {one[1] / two[1]:.2f} warm "
        f"(target >= 1.7); masks identical on 1 and 2 workers and the threaded scheduler: "
        f"{same}\n"
    )
    print(f"the same {n_tiles} tiles in plain processes, no Dask (the machine's ceiling):")
    print(
        f"1 process {plain[0]:.1f} s, 2 processes {plain[1]:.1f} s, speed-up "
        f"{plain[0] / plain[1]:.2f}; Dask reaches {(one[1] / two[1]) / (plain[0] / plain[1]):.0%} "
        "of it\n"
    )
    print("| blocks | pickled graph bytes | bytes per block |")
    print("|---|---|---|")
    for blocks, size in sizes:
        print(f"| {blocks} | {size:,} | {size / blocks:,.0f} |")
    if "jointseg" in xjointseg.models.registered_models():
        agree, dev = bf16_agreement("jointseg")
        print(
            f"\nbf16 autocast vs fp32, bundled real scene, default jointseg weights, {dev}: "
            f"mask agreement {agree * 100:.3f} % (target >= 99.9 %)"
        )
    if torch.cuda.is_available():
        gpu_section(args.model if args.model != "toy" else "lite")
    else:
        print("\nno CUDA GPU here: the GPU rows (km2/s, TFLOP/s, bf16 agreement) were not measured")


if __name__ == "__main__":
    main()
