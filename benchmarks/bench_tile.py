"""Tile-size benchmark: time per pixel of `Model.predict` for each tile size, on the CPU.

`Model.predict` runs each tile alone on one torch thread, as many tiles at once as torch has
threads. Smaller tiles carry more halo (context at 10 m, cheap) but keep their working set
in cache; larger ones need fewer passes but stream more memory. This prints, from one run on
this machine, for tiles of 32 to 256 input pixels (each with the model's halo, the same
core area in all): seconds, microseconds per 10 m pixel of output, and the activations one
tile needs (`Model.activation_bytes`), beside the bare network at tiles of 256 without halo
on all of torch's threads (`bench_segment.py`'s baseline (a)). `segment`'s CPU cap per tile
(`CPU_TILE_BYTES`) is set from this table.

Usage: ``python benchmarks/bench_tile.py [--model jointseg] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import xjointseg
from xjointseg.testing import synthetic_scene

TILES = (32, 48, 64, 96, 128, 192, 256)
CORE_AREA = 2 * 256 * 256  # 10 m pixels of output per measurement, whatever the tile


def tiles_of(data: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """An even number of distinct tiles (with halo) covering CORE_AREA pixels of core."""
    size = tile + 2 * halo
    n = max(2, CORE_AREA // (tile * tile)) // 2 * 2
    room = data.shape[1] - size
    return np.stack(
        [data[:, (i * 7) % room :, (i * 13) % room :][:, :size, :size] for i in range(n)]
    )


def pooled(model, batch: np.ndarray) -> float:
    model.predict(batch[:2], margin=model.halo)  # warm-up: kernels are chosen per shape
    start = time.perf_counter()
    model.predict(batch, margin=model.halo)
    return time.perf_counter() - start


def bare(model, data: np.ndarray) -> float:
    """The network alone in fp32 on all of torch's threads, tiles of 256, no halo."""
    x = torch.from_numpy(np.ascontiguousarray(data[None, :, :256, :256]))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model.network.segment_logits(x, 0)
        start = time.perf_counter()
        for _ in range(CORE_AREA // (256 * 256)):
            model.network.segment_logits(x, 0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg", help="bundled name or weights path")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tile size")
    args = parser.parse_args()
    model = xjointseg.load_model(args.model, device="cpu")
    scene = synthetic_scene(900, 900, seed=0)
    data = np.stack([scene[b].values.astype(np.float32) for b in model.bands])

    rows = [("bare network, tile 256, no halo", None)] + [(f"predict, tile {t}", t) for t in TILES]
    print(
        f"\ntile benchmark: model '{args.model}' (halo {model.halo}), {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{CORE_AREA} px of 10 m output per run, {args.repeat} runs\n"
    )
    print("| run | tile activations MiB | seconds (each run) | µs per 10 m px (best) |")
    print("|---|---:|---|---:|")
    for name, tile in rows:
        if tile is None:
            times, mib = [bare(model, data) for _ in range(args.repeat)], "-"
        else:
            batch = tiles_of(data, tile, model.halo)
            times = [pooled(model, batch) for _ in range(args.repeat)]
            mib = f"{model.activation_bytes(tile) / 2**20:.0f}"
            times = [t * CORE_AREA / (len(batch) * tile * tile) for t in times]  # same area
        per_px = min(times) / CORE_AREA * 1e6
        print(f"| {name} | {mib} | {' / '.join(f'{t:.1f}' for t in times)} | {per_px:.0f} |")


if __name__ == "__main__":
    main()
