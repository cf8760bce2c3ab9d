"""Cube benchmark: write throughput, compression on a real segmented scene, peak memory.

Prints, from one run, three markdown tables:

* write throughput of a multi-period 1 m cube (``to_zarr``: blosc-zstd + bitshuffle, one
  shard per block) against writing the same blocks as raw uint8 bytes to files, and the
  cost of computing the blocks alone;
* the compression ratio on a real Sentinel-2 scene (Havelland, 16 Feb 2017) segmented at
  1 m by the engine (the untrained toy network: its masks mean nothing, but have 1 m
  detail; the seed picked gives an ISA share like a rural district's);
* peak resident memory of writing a cube and of ``area()`` with polygons, for 1x and 4x
  the area (each in a fresh process; target ratio <= 1.2: memory bounded by the block).

Usage: ``python benchmarks/bench_cube.py [--side 8192] [--periods 4]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.cube import open_cube, to_zarr

HAVELLAND = Path(__file__).parents[2] / "shared/data/s2/havelland_T33UUU_20170216_L1C/item.json"
BUNDLED = Path(xjointseg.__file__).parent / "data/havelland/item.json"


def _town_block(block_info=None, *, periods: int) -> np.ndarray:
    """A deterministic town-like ISA pattern for one block: blobs, roads, a cloud."""
    info = block_info[None]
    (t0, t1), (y0, y1), (x0, x1) = info["array-location"]
    out = np.empty((t1 - t0, y1 - y0, x1 - x0), np.uint8)
    rng = np.random.default_rng([y0, x0])
    coarse = rng.random(((y1 - y0) // 8 + 1, (x1 - x0) // 8 + 1), dtype=np.float32)
    roads = (np.arange(y0, y1) % 317 < 6)[:, None] | (np.arange(x0, x1) % 263 < 5)[None, :]
    for k, t in enumerate(range(t0, t1)):
        towns = (coarse > 0.85 - 0.03 * t).astype(np.uint8)  # towns grow period by period
        towns = np.repeat(np.repeat(towns, 8, 0), 8, 1)[: y1 - y0, : x1 - x0]
        out[k] = towns | roads
        if t == 1 and y0 == 0:  # a cloud over part of the first block row in period 1
            out[k, : (y1 - y0) // 3, : (x1 - x0) // 2] = 255
    return out


def synthetic_cube(side: int, periods: int, block: int) -> xr.DataArray:
    """A lazy (time, y, x) uint8 cube on a 1 m grid, computed block by block on demand."""
    gbox = GeoBox.from_bbox(
        (330000, 5822000 - side, 330000 + side, 5822000), "EPSG:32633", resolution=1
    )
    blocks = ((1,) * periods, *(da.core.normalize_chunks(block, (side, side))))
    data = da.map_blocks(
        _town_block, periods=periods, chunks=blocks, dtype=np.uint8, meta=np.empty((0, 0, 0))
    )
    coords = {
        "time": np.array([f"{2017 + 2 * t}-01-01" for t in range(periods)], "datetime64[ns]"),
        **xr_coords(gbox),
    }
    attrs = {"model": "synthetic", "model_sha256": "0" * 64, "nodata": 255}
    arr = xr.DataArray(data, dims=("time", "y", "x"), coords=coords, attrs=attrs, name="isa")
    return arr.odc.assign_crs("EPSG:32633")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_raw(data: da.Array, folder: Path) -> None:
    """The baseline: every block as raw uint8 bytes in its own file, no compression."""
    folder.mkdir(parents=True)

    def put(block, block_info=None):
        loc = "_".join(str(i) for i in block_info[0]["chunk-location"])
        block.tofile(folder / f"{loc}.u8")
        return np.zeros((1,) * block.ndim, np.uint8)

    data.map_blocks(put, chunks=(1, 1, 1), dtype=np.uint8).compute()


def throughput(side: int, periods: int, block: int, work: Path) -> list[tuple]:
    cube = synthetic_cube(side, periods, block)
    raw_mb = cube.size / 1e6
    rows = []
    cube.data.blocks[0, 0, 0].compute()  # warm up (imports, first allocations)
    start = time.perf_counter()
    cube.data.map_blocks(lambda b: np.zeros((1, 1, 1), np.uint8), chunks=(1, 1, 1)).compute()
    rows.append(("compute blocks only (no write)", time.perf_counter() - start, None))
    start = time.perf_counter()
    write_raw(cube.data, work / "raw")
    rows.append(("raw uint8 files", time.perf_counter() - start, du(work / "raw")))
    start = time.perf_counter()
    to_zarr(cube, work / "cube.zarr")
    rows.append(("to_zarr (Zarr v3 cube)", time.perf_counter() - start, du(work / "cube.zarr")))
    start = time.perf_counter()
    to_zarr(cube, work / "cube.zarr")
    rows.append(("to_zarr again (resume, nothing to do)", time.perf_counter() - start, None))
    return [(name, secs, raw_mb / secs, size) for name, secs, size in rows]


def real_scene(work: Path) -> dict:
    import odc.stac
    import pystac

    from xjointseg.testing import toy_weights

    path = HAVELLAND if HAVELLAND.exists() else BUNDLED
    ds = odc.stac.load(
        [pystac.Item.from_file(str(path))],
        bands=["red", "green", "blue"],
        chunks={"x": 512, "y": 512},
        resolution=10,
    )
    weights = toy_weights(work / "toy.safetensors", depth=2, seed=5)
    isa = ds.isa.segment(model=str(weights), device="cpu")
    start = time.perf_counter()
    cube = to_zarr(isa, work / "real.zarr")
    secs = time.perf_counter() - start
    stored = du(work / "real.zarr" / "isa")
    values = cube.isel(time=0)
    share = float((values == 1).mean().compute())
    return {
        "scene": path.parent.name,
        "shape": cube.shape,
        "raw": cube.size,
        "stored": stored,
        "share": share,
        "secs": secs,
        "block": isa.data.chunksize[1:],
    }


class _RSSSampler(threading.Thread):
    """The largest resident set size seen while the work runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def child(kind: str, side: int, periods: int, block: int, work: Path) -> None:
    """Run in a fresh process: write (or analyse) one cube, print its memory as JSON."""
    dask.config.set(scheduler="threads", num_workers=2)
    import geopandas  # noqa: F401  (imports are not what is measured)

    base = psutil.Process().memory_info().rss
    sampler = _RSSSampler()
    sampler.start()
    store = work / f"mem-{side}.zarr"
    if kind == "write":
        to_zarr(synthetic_cube(side, periods, block), store)
    else:
        import geopandas as gpd
        from shapely.geometry import box

        cube = open_cube(store)
        n = max(1, side // 1024)  # districts of 1 km x 1 km: 4x the area, 4x the districts
        step = side / n
        cells = [
            box(
                330000 + i * step,
                5822000 - (j + 1) * step,
                330000 + (i + 1) * step,
                5822000 - j * step,
            )
            for i in range(n)
            for j in range(n)
        ]
        regions = gpd.GeoDataFrame({"name": range(n * n)}, geometry=cells, crs="EPSG:32633")
        cube.isa.area(regions)
    sampler.stop.set()
    sampler.join()
    peak = max(sampler.peak, psutil.Process().memory_info().rss)
    print(json.dumps({"base_mb": base / 2**20, "peak_mb": peak / 2**20}))


def peak_memory(side: int, periods: int, block: int, work: Path) -> list[tuple]:
    rows = []
    for kind in ("write", "area"):
        for s in (side, 2 * side):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    kind,
                    "--side",
                    str(s),
                    "--periods",
                    str(periods),
                    "--block",
                    str(block),
                    "--work",
                    str(work),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((kind, s, json.loads(out.stdout.strip().splitlines()[-1])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8192, help="1 m pixels per side (throughput)")
    ap.add_argument("--periods", type=int, default=4)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--mem-side", type=int, default=4096, help="side of the 1x memory run")
    ap.add_argument("--child", choices=("write", "area"))
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.side, args.periods, args.block, args.work)
        return

    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="bench-cube-"))
    try:
        raw_gb = args.periods * args.side**2 / 1e9
        print(
            f"## Write throughput: {args.periods} periods x {args.side}^2 px at 1 m "
            f"({raw_gb:.2f} GB of uint8), blocks {args.block}^2, {os.cpu_count()} cores\n"
        )
        print("| write | seconds | MB/s of 1 m uint8 | on disk (MB) | ratio raw/disk |")
        print("|---|---|---|---|---|")
        for name, secs, rate, size in throughput(args.side, args.periods, args.block, work):
            disk = f"{size / 1e6:,.1f}" if size else "-"
            ratio = f"{raw_gb * 1e9 / size:,.1f}" if size else "-"
            print(f"| {name} | {secs:.2f} | {rate:,.0f} | {disk} | {ratio} |")

        r = real_scene(work)
        print(f"\n## Compression on a real segmented scene ({r['scene']}, toy network)\n")
        print(
            "| 1 m cube shape | ISA share | raw uint8 (MB) | stored (MB) | ratio | "
            "segment + write (s) |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {r['shape']} | {r['share'] * 100:.1f} % | {r['raw'] / 1e6:,.1f} | "
            f"{r['stored'] / 1e6:,.2f} | {r['raw'] / r['stored']:,.0f} | {r['secs']:.1f} |"
        )

        mem_block = min(args.block, 2048)
        print(
            f"\n## Peak memory, 1x vs 4x area ({args.periods} periods, blocks "
            f"{mem_block}^2, fresh process each, 2 threads)\n"
        )
        print(
            "| task | side (px) | area (km2) | RSS before (MB) | peak RSS (MB) | "
            "peak - before (MB) | 4x / 1x peak | 4x / 1x peak - before |"
        )
        print("|---|---|---|---|---|---|---|---|")
        rows = peak_memory(args.mem_side, args.periods, mem_block, work)
        for i, (kind, s, m) in enumerate(rows):
            extra = m["peak_mb"] - m["base_mb"]
            ratios = " | "
            if i % 2:
                prev = rows[i - 1][2]
                ratios = (
                    f"{m['peak_mb'] / prev['peak_mb']:.2f} | "
                    f"{extra / max(prev['peak_mb'] - prev['base_mb'], 1e-9):.2f}"
                )
            print(
                f"| {kind} | {s} | {s * s / 1e6:.1f} | {m['base_mb']:,.0f} | "
                f"{m['peak_mb']:,.0f} | {extra:,.0f} | {ratios} |"
            )
        print("\ntarget: 4x / 1x <= 1.2")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
