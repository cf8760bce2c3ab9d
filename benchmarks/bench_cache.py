"""Per-task overhead of the model cache: what each Dask block task pays to get its model.

Every block task calls ``ModelRef.load()``. Before, ``load_model`` read the weights file,
hashed it and parsed it before it looked in the process cache; now it looks first, by the
sha256 the reference carries. This prints, from one run on this machine:

* microseconds per ``ModelRef.load()`` of the bundled ``jointseg`` weights, the old way
  (read + sha256 + safetensors parse, then the cache) and now (the cache alone);
* milliseconds per block task of ``segment`` on a scene whose pixels are all missing (no
  inference runs, so what is left is the per-task work), both ways, with the threaded
  scheduler.

Usage: ``python benchmarks/bench_cache.py [--repeat 200] [--blocks 64]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from unittest import mock

import numpy as np

import xjointseg
from xjointseg.models import model as model_module
from xjointseg.models.weights import read_weights
from xjointseg.testing import synthetic_scene

_load_model = model_module.load_model


def load_model_before(name_or_path, *, device="auto", sha256=None):
    """What ``load_model`` did before: read, hash and parse the file, then the cache."""
    if isinstance(name_or_path, model_module.Model):
        return name_or_path
    path, expected = model_module._resolve(name_or_path, sha256)
    read_weights(path, expected_sha256=expected)
    return _load_model(name_or_path, device=device, sha256=sha256)


def per_call_us(ref, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ref.load()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def per_task_ms(ds, blocks: int, tile: int) -> float:
    isa = ds.isa.segment(model="jointseg", device="cpu", tile=tile, chunks="keep")
    assert isa.data.npartitions == blocks, isa.data.npartitions
    start = time.perf_counter()
    out = isa.compute(scheduler="threads")
    seconds = time.perf_counter() - start
    assert (out.values == 255).all()  # all missing: no inference ran
    return seconds / blocks * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="ModelRef.load() calls")
    parser.add_argument("--blocks", type=int, default=64, help="block tasks (a square number)")
    args = parser.parse_args()

    model = xjointseg.load_model("jointseg", device="cpu")
    ref = model_module.ModelRef(model.source, model.sha256, "cpu")  # as a worker receives it
    size = os.path.getsize(model.source)
    side = int(round(args.blocks**0.5))
    tile = 64
    ds = synthetic_scene(side * tile, side * tile, nodata=0)
    for v in ds.data_vars:
        ds[v][:] = 0  # every pixel missing
    ds = ds.chunk(y=tile, x=tile)

    rows = []
    for label, loader in (
        ("before: read + hash + parse, then cache", load_model_before),
        ("now: cache first", _load_model),
    ):
        with mock.patch.object(model_module, "load_model", loader):
            calls = per_call_us(ref, args.repeat)
            per_task_ms(ds, side * side, tile)  # warm
            task = per_task_ms(ds, side * side, tile)
        rows.append((label, statistics.median(calls), np.percentile(calls, 90), task))

    print(
        f"\nmodel cache: bundled jointseg weights ({size / 1e6:.1f} MB), {args.repeat} calls; "
        f"{side * side} all-missing blocks of {tile} px, threaded scheduler, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| ModelRef.load() | median µs per call | p90 µs | ms per block task |")
    print("|---|---|---|---|")
    for label, median, p90, task in rows:
        print(f"| {label} | {median:,.0f} | {p90:,.0f} | {task:.2f} |")
    print(f"\nper-call speed-up {rows[0][1] / rows[1][1]:,.0f}x")


if __name__ == "__main__":
    main()
