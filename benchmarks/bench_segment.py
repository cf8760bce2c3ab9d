"""Engine benchmark: how much of the model's own speed reaches the user, and memory vs scene size.

Prints, from one run on this machine:

(a) the bare model in fp32 over the same pixels, tile by tile (tiles of ``--bare-tile``,
    256 by default: the fixed default tile of earlier versions), without halo or Dask;
(b) ``segment(...).compute()`` with every default: precision (fp32 on a CPU, bf16 autocast
    on a GPU), tile (from the memory there is) and chunking;
(c) ``segment(...)`` at the defaults streamed into a Zarr v3 store;

the ratio (a)/(b) (how much faster the defaults are than the bare fp32 model; it was the
pipeline efficiency, >= 0.85, when both ran the same fp32 tiles), and the peak RSS of (c)
for a scene and one 4x larger (target ratio <= 1.2: memory is bounded by the block, not the
scene), each in a fresh process.

Usage: ``python benchmarks/bench_segment.py [--size 1024] [--rss-size 768] [--model lite]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import peak_rss_mb  # benchmarks/_memory.py

import xjointseg
from xjointseg.engine import default_tile
from xjointseg.testing import synthetic_scene, untrained_weights


def build_weights(kind: str, folder: Path) -> Path:
    arch, size = ("toy", "lite") if kind == "toy" else ("jointseg", kind)
    return untrained_weights(folder / f"{kind}.safetensors", arch, size)


def model_alone(model, ds, tile: int) -> float:
    """Seconds for the bare network in fp32 over every tile of the scene, no context, no Dask:
    plain torch, one tile at a time on all of torch's threads (what `Model.predict` did
    before it ran each tile on one thread), thresholded at 0.5."""
    import torch

    data = np.stack([ds[b].values.astype(np.float32) for b in model.bands])
    ny, nx = data.shape[1:]
    start = time.perf_counter()
    with torch.inference_mode():
        for y in range(0, ny - tile + 1, tile):
            for x in range(0, nx - tile + 1, tile):
                t = torch.from_numpy(
                    np.ascontiguousarray(data[None, :, y : y + tile, x : x + tile])
                )
                logits = model.network.segment_logits(
                    t.contiguous(memory_format=torch.channels_last), 0
                )
                (logits > 0).to(torch.uint8).numpy()
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
    peak_mb = peak_rss_mb()
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
    parser.add_argument("--rss-size", type=int, default=768, help="side of the 1x RSS scene")
    parser.add_argument("--bare-tile", type=int, default=256, help="tile of the bare model (a)")
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
        bt = args.bare_tile
        model_alone(model, ds.isel(y=slice(0, bt), x=slice(0, bt)), bt)  # warm-up
        a = model_alone(model, ds, bt)
        isa = ds.isa.segment(model=model)
        tile, why = default_tile(model, scene=(args.size, args.size))
        precision = model.resolve_precision(isa.attrs["precision"])
        warm = ds.isel(y=slice(0, tile), x=slice(0, tile)).isa.segment(model=model, tile=tile)
        warm.compute()  # the same warm-up as (a): kernels are chosen on a shape's first tile
        start = time.perf_counter()
        isa.compute()
        b = time.perf_counter() - start
        c = stream_to_zarr(ds, weights, tmp / "isa.zarr")
        small, large = peak_rss(args.rss_size, weights), peak_rss(2 * args.rss_size, weights)

    km2 = (args.size * 10 / 1000) ** 2
    print(
        f"\nsegment benchmark: model '{args.model}' (halo {model.halo}), {args.size} x "
        f"{args.size} px scene ({km2:.0f} km2), {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); defaults here: precision "
        f"{precision}, tile {why}, {isa.data.npartitions} blocks\n"
    )
    print("| step | seconds | km2/s of 1 m output |")
    print("|---|---|---|")
    for name, sec in [
        (f"(a) bare model, fp32, tiles of {bt}, no halo", a),
        ("(b) segment().compute(), defaults", b),
        ("(c) segment() -> Zarr, defaults", c),
    ]:
        print(f"| {name} | {sec:.1f} | {km2 / sec:.3f} |")
    print(f"\n(a)/(b) = {a / b:.2f} (target >= 1.3); (a)/(c) = {a / c:.2f}\n")
    print("| scene streamed to Zarr | peak RSS MB | seconds |")
    print("|---|---|---|")
    for r in (small, large):
        print(f"| {r['size']} x {r['size']} px | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
    print(f"\npeak RSS 4x / 1x = {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
