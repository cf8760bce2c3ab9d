"""Engine benchmark: how much of the model's own speed reaches the user, and memory vs scene size.

Prints, from one run on this machine:

(a) the model alone over the same pixels, tile by tile, without halo or Dask;
(b) ``segment(...).compute()`` at the default chunking;
(c) ``segment(...)`` streamed into a Zarr v3 store;

the pipeline efficiency (a)/(b) (target >= 0.85), and the peak RSS of (c) for a scene and
one 4x larger (target ratio <= 1.2: memory is bounded by the block, not the scene), each in
a fresh process.

Usage: ``python benchmarks/bench_segment.py [--size 1024] [--rss-size 512] [--model lite]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.segment import DEFAULT_TILE
from xjointseg.testing import synthetic_scene, untrained_weights


def build_weights(kind: str, folder: Path) -> Path:
    arch, size = ("toy", "lite") if kind == "toy" else ("jointseg", kind)
    return untrained_weights(folder / f"{kind}.safetensors", arch, size)


def model_alone(model, ds) -> float:
    """Seconds for model.predict over every tile of the scene, no context, no Dask."""
    data = np.stack([ds[b].values.astype(np.float32) for b in model.bands])
    t = DEFAULT_TILE
    ny, nx = data.shape[1:]
    start = time.perf_counter()
    for y in range(0, ny - t + 1, t):
        for x in range(0, nx - t + 1, t):
            model.predict(data[None, :, y : y + t, x : x + t], margin=0)
    return time.perf_counter() - start


def stream_to_zarr(ds, weights: Path, store: Path) -> float:
    start = time.perf_counter()
    isa = ds.isa.segment(model=str(weights), device="cpu")
    isa = isa.expand_dims(time=[np.datetime64("2017-02-16", "ns")])
    isa.isa.to_zarr(store)  # the project's resumable cube writer
    return time.perf_counter() - start


def rss_child(size: int, weights: Path) -> None:
    ds = synthetic_scene(size, size, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = stream_to_zarr(ds, weights, Path(tmp) / "isa.zarr")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": size, "seconds": seconds, "peak_rss_mb": peak_mb}))


def peak_rss(size: int, weights: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(size), "--weights", str(weights)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="scene side in 10 m pixels")
    parser.add_argument("--rss-size", type=int, default=512, help="side of the 1x RSS scene")
    parser.add_argument("--model", default="lite", help="lite, paper or toy")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.weights)

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = build_weights(args.model, tmp)
        model = xjointseg.load_model(weights, device="cpu")
        ds = synthetic_scene(args.size, args.size, seed=0)
        model_alone(model, ds.isel(y=slice(0, DEFAULT_TILE), x=slice(0, DEFAULT_TILE)))  # warm-up
        a = model_alone(model, ds)
        start = time.perf_counter()
        ds.isa.segment(model=model).compute()
        b = time.perf_counter() - start
        c = stream_to_zarr(ds, weights, tmp / "isa.zarr")
        small, large = peak_rss(args.rss_size, weights), peak_rss(2 * args.rss_size, weights)

    km2 = (args.size * 10 / 1000) ** 2
    print(
        f"\nsegment benchmark: model '{args.model}' (halo {model.halo}, tile {DEFAULT_TILE}), "
        f"{args.size} x {args.size} px scene ({km2:.0f} km2), {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n"
    )
    print("| step | seconds | km2/s of 1 m output |")
    print("|---|---|---|")
    for name, sec in [
        ("(a) model alone, no halo", a),
        ("(b) segment().compute()", b),
        ("(c) segment() -> Zarr", c),
    ]:
        print(f"| {name} | {sec:.1f} | {km2 / sec:.3f} |")
    print(f"\npipeline efficiency (a)/(b) = {a / b:.2f} (target >= 0.85); (a)/(c) = {a / c:.2f}\n")
    print("| scene streamed to Zarr | peak RSS MB | seconds |")
    print("|---|---|---|")
    for r in (small, large):
        print(f"| {r['size']} x {r['size']} px | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
    print(f"\npeak RSS 4x / 1x = {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
