"""Delegation benchmark: three hand-written kernels against the library that could replace them.

Runs each kernel and its library route on the same synthetic inputs in one run, checks that
the results are equal, and prints one table: the median of ``--repeats`` timings after a
warm-up, the ratio library / hand-written, and the peak RSS one run of each route adds to
its inputs, in a fresh process (Linux: ``VmHWM`` reset once the inputs exist, glibc's mmap
threshold fixed so that freed arrays leave the process):

1. per-region counts of an ISA cube (``change._zonal._region_stats``, behind ``area()`` and
   ``growth()``: a delayed tree of per-block ``bincount``s) against ``flox.xarray.
   xarray_reduce`` (sum) of the boolean arrays each count needs (region pixels; per period
   ISA and valid; for the pair valid in both, ISA before, ISA after, gained, lost), stacked
   and summed as uint8, grouped by the same integer label raster (``--regions``
   Voronoi-like regions, label 0 = no region; flox needs ``expected_groups`` for a dask
   ``by``), and the same summed as bool;
   then ``area()`` with polygons in one corner of the cube (a city and its four districts,
   which overlap) against flox over the same districts as a label raster;
2. cloud-mask dilation (``sentinel2._composite._dilate``: a separable running max over the
   last two axes, pixels beyond the edge count as clear) against ``scipy.ndimage.
   maximum_filter`` with a ``(1, 2n+1, 2n+1)`` window and ``mode="constant", cval=0``;
3. the 10 m ISA share of a 1 m cube (``change.maps.coarse_share``, behind ``fraction()``)
   against ``xarray``'s ``coarsen(y=10, x=10).sum()`` of ``isa == 1`` and ``isa != 255``,
   divided, NaN where no pixel is valid (on the cube cropped to whole 10 px cells).

The cube is uint8 ``(2, side, side)`` (0, 1, 255 = nodata; town patches, growth, scattered
nodata and a cloud per period) in dask chunks of ``--chunk``, held in memory so that no
reading is timed; Dask runs on 2 threads. flox and scipy are not dependencies of xjointseg:
``pip install flox scipy``.

Usage: ``python benchmarks/bench_delegation.py [--side 4096] [--chunk 1024] [--regions 50]
[--mask-side 2048] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import xarray as xr
from _memory import peak_rss_mb  # benchmarks/_memory.py
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.change import area
from xjointseg.change._zonal import _region_stats
from xjointseg.change.maps import coarse_share
from xjointseg.sentinel2._composite import _dilate

X0, Y1 = 330000, 5822000  # top-left corner of the synthetic grid (EPSG:32633, 1 m)
FACTOR = 10  # 1 m -> 10 m
DILATIONS = (1, 3, 10)


def _need(module: str):
    """Import flox or scipy (not dependencies of xjointseg), or exit saying how to get them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        sys.exit(f"bench_delegation.py needs {package}: pip install {package}")


# --- inputs -------------------------------------------------------------------------------


def synthetic_cube(side: int, chunk: int, seed: int = 0) -> xr.DataArray:
    """uint8 (time=2, y, x) ISA cube: town patches that grow, some loss, nodata and clouds."""
    rng = np.random.default_rng(seed)
    towns = rng.random((side // 8 + 1, side // 8 + 1), dtype=np.float32)
    towns = np.repeat(np.repeat(towns, 8, 0), 8, 1)[:side, :side]
    noise = rng.random((side, side), dtype=np.float32)
    isa0 = (towns > 0.8) ^ (noise < 0.03)
    isa1 = (isa0 | ((towns > 0.74) & (noise < 0.9))) & ~(noise > 0.995)
    cube = np.stack([isa0, isa1]).astype(np.uint8)
    cube[rng.random(cube.shape, dtype=np.float32) < 0.02] = 255  # scattered nodata
    s = side / 4096
    cube[0, int(100 * s) : int(900 * s), int(2000 * s) : int(2600 * s)] = 255  # clouds
    cube[1, int(3000 * s) : int(3500 * s), int(500 * s) : int(1500 * s)] = 255
    gbox = GeoBox.from_bbox((X0, Y1 - side, X0 + side, Y1), "EPSG:32633", resolution=1)
    coords = {"time": np.array(["2017-07-01", "2019-07-01"], "datetime64[ns]"), **xr_coords(gbox)}
    data = da.from_array(cube, chunks=(-1, chunk, chunk))
    arr = xr.DataArray(data, dims=("time", "y", "x"), coords=coords, attrs={"nodata": 255})
    return arr.rename("isa").odc.assign_crs("EPSG:32633")


def voronoi_labels(cube: xr.DataArray, regions: int, seed: int = 1) -> xr.DataArray:
    """int32 (y, x) labels 1..regions of Voronoi-like cells (16 px steps), 0 in one more cell."""
    side = cube.sizes["y"]
    rng = np.random.default_rng(seed)
    seeds = rng.random((regions + 1, 2)) * side
    centres = (np.arange(side // 16 + 1) + 0.5) * 16
    d = (centres[:, None, None] - seeds[:, 0]) ** 2 + (centres[None, :, None] - seeds[:, 1]) ** 2
    coarse = d.argmin(axis=-1).astype(np.int32)  # 0 = no region
    lab = np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:side, :side]
    lab = da.from_array(lab, chunks=cube.data.chunks[1:])
    out = xr.DataArray(lab, dims=("y", "x"), coords={k: cube[k] for k in ("y", "x")})
    return out.rename("region").odc.assign_crs("EPSG:32633")


def corner_regions(cube: xr.DataArray):
    """A city (800 m square) and its four districts in the top-left block, as polygons and as
    a label raster of the districts (a pixel of a district is in the city too)."""
    import geopandas as gpd
    from shapely.geometry import box

    def square(c0: int, r0: int, size: int):  # column / row offsets of the top-left pixel
        return box(X0 + c0, Y1 - r0 - size, X0 + c0 + size, Y1 - r0)

    names, geoms = ["city"], [square(100, 100, 800)]
    lab = np.zeros(cube.shape[1:], np.int32)
    for k, (r0, c0) in enumerate([(100, 100), (100, 500), (500, 100), (500, 500)], start=1):
        names.append(k)
        geoms.append(square(c0, r0, 400))
        lab[r0 : r0 + 400, c0 : c0 + 400] = k
    polygons = gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:32633")
    lab = da.from_array(lab, chunks=cube.data.chunks[1:])
    labels = xr.DataArray(lab, dims=("y", "x"), coords={k: cube[k] for k in ("y", "x")})
    return polygons, labels.rename("region").odc.assign_crs("EPSG:32633")


def blocks_touched(cube: xr.DataArray, polygons) -> int:
    """Blocks of the cube that some polygon intersects: those the polygon route reads."""
    from shapely.geometry import box

    ys, xs = (np.cumsum((0, *c)) for c in cube.data.chunks[1:])
    cells = [
        box(X0 + xs[i], Y1 - ys[j + 1], X0 + xs[i + 1], Y1 - ys[j])
        for j in range(len(ys) - 1)
        for i in range(len(xs) - 1)
    ]
    return sum(bool(polygons.intersects(c).any()) for c in cells)


def cloud_mask(side: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).random((4, side, side), dtype=np.float32) < 0.05


# --- routes -------------------------------------------------------------------------------


def hand_counts(cube: xr.DataArray, regions) -> np.ndarray:
    """(region, stat) counts of the library's own zonal kernel, regions in label order."""
    return np.stack([s for _, s in _region_stats(cube, regions, None)])


def flox_counts(
    cube: xr.DataArray, labels: xr.DataArray, groups: np.ndarray, as_uint8: bool = True
) -> np.ndarray:
    """The same (region, stat) counts by flox: sums of boolean arrays grouped by ``labels``.

    The booleans are summed as uint8 (``as_uint8``), flox's fastest way here: a boolean
    array is summed as int64, 8 bytes per pixel and statistic.
    """
    flox_xr = _need("flox.xarray")
    nt = cube.sizes["time"]
    per = [cube.isel(time=t, drop=True) for t in range(nt)]
    isa, valid = [p == 1 for p in per], [p != 255 for p in per]
    stats = [xr.ones_like(labels, dtype=bool), *isa, *valid]
    for t in range(nt - 1):
        both = valid[t] & valid[t + 1]
        a, b = isa[t] & both, isa[t + 1] & both
        stats += [both, a, b, b & ~a, a & ~b]
    stack = xr.concat([s.drop_vars("region", errors="ignore") for s in stats], dim="stat")
    stack = (stack.astype(np.uint8) if as_uint8 else stack).chunk(stat=-1).rename("counts")
    out = flox_xr.xarray_reduce(stack, labels, func="sum", expected_groups=groups)
    return out.transpose("region", "stat").values.astype(np.int64)


def hand_share(cube: xr.DataArray) -> np.ndarray:
    return coarse_share(cube.data, FACTOR, 1).compute()


def xarray_share(cube: xr.DataArray) -> np.ndarray:
    cells = {"y": FACTOR, "x": FACTOR}
    isa = (cube == 1).coarsen(cells).sum()
    valid = (cube != 255).coarsen(cells).sum()
    return (isa / valid.where(valid > 0)).astype(np.float32).values


def scipy_dilate(mask: np.ndarray, n: int) -> np.ndarray:
    ndimage = _need("scipy.ndimage")
    return ndimage.maximum_filter(mask, size=(1, 2 * n + 1, 2 * n + 1), mode="constant", cval=0)


def median_seconds(fn, repeats: int):
    fn()  # warm-up: imports, first allocations, scipy/flox dispatch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


# --- peak memory in a fresh process -------------------------------------------------------


def child(route: str, args: argparse.Namespace) -> None:
    """One run of one route once its inputs exist; prints the RSS it added, in MB.

    The parent starts it with glibc's mmap threshold fixed, so that freed arrays go back to
    the system; the peak is the kernel's high-water mark (``VmHWM``), reset once the inputs
    are built.
    """
    kernel = route.split("-")[0]
    if kernel == "dilate":
        mask = cloud_mask(args.mask_side)
    else:
        cube = synthetic_cube(args.side, args.chunk)
        whole = args.side // FACTOR * FACTOR
        crop = cube.isel(y=slice(0, whole), x=slice(0, whole))
        if kernel == "counts":
            labels = voronoi_labels(cube, args.regions)
    groups = np.arange(1, args.regions + 1)
    runs = {
        "counts-hand": lambda: hand_counts(cube, labels),
        "counts-flox": lambda: flox_counts(cube, labels, groups),
        "dilate-hand": lambda: _dilate(mask, DILATIONS[-1]),
        "dilate-scipy": lambda: scipy_dilate(mask, DILATIONS[-1]),
        "share-hand": lambda: hand_share(crop),
        "share-xarray": lambda: xarray_share(crop),
    }
    _need("flox.xarray"), _need("scipy.ndimage")  # imports are not what is measured
    base = psutil.Process().memory_info().rss / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)
    runs[route]()
    print(json.dumps({"extra_mb": peak_rss_mb() - base}))


def extra_rss(route: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--child", route]
    for opt in ("side", "chunk", "regions", "mask_side"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**17)}  # no dynamic threshold
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096, help="cube side in 1 m pixels")
    parser.add_argument("--chunk", type=int, default=1024, help="dask chunk side of the cube")
    parser.add_argument("--regions", type=int, default=50, help="regions of the label raster")
    parser.add_argument("--mask-side", type=int, default=2048, help="side of the (4, s, s) mask")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per route (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process RSS")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dask.config.set(scheduler="threads", num_workers=2)
    if args.child:
        return child(args.child, args)
    flox = _need("flox")
    scipy = _need("scipy")

    cube = synthetic_cube(args.side, args.chunk)
    labels = voronoi_labels(cube, args.regions)
    groups = np.arange(1, args.regions + 1)
    rows, notes = [], []
    r = args.repeats

    # 1. per-region counts
    present = np.unique(labels.values)
    hand_s, hand = median_seconds(lambda: hand_counts(cube, labels), r)
    area_s, _ = median_seconds(lambda: area(cube, labels), r)
    flox_s, lib = median_seconds(lambda: flox_counts(cube, labels, groups), r)
    equal = np.array_equal(hand, lib[np.isin(groups, present)])
    rows.append(
        [f"per-region counts, {args.regions} label regions", hand_s, flox_s, equal, "counts"]
    )
    bool_s, as_bool = median_seconds(lambda: flox_counts(cube, labels, groups, False), r)
    assert np.array_equal(as_bool, lib)
    notes.append(
        f"per-region counts: `area()` on the same labels takes {area_s:.2f} s (counts + "
        f"table); flox summing the booleans as bool (int64 sums) takes {bool_s:.2f} s."
    )
    polygons, corner_labels = corner_regions(cube)
    corner_s, _ = median_seconds(lambda: area(cube, polygons), r)
    corner = hand_counts(cube, polygons)
    flox_corner_s, flox_corner = median_seconds(
        lambda: flox_counts(cube, corner_labels, np.arange(1, 5)), r
    )
    corner_equal = np.array_equal(corner[1:], flox_corner) and np.array_equal(
        corner[0], corner[1:].sum(axis=0)
    )
    rows.append(
        ["counts, city + 4 districts in one corner", corner_s, flox_corner_s, corner_equal, None]
    )
    read = blocks_touched(cube, polygons)
    blocks = cube.data.numblocks[1] * cube.data.numblocks[2]
    notes.append(
        "per-region counts, what flox cannot express: overlapping regions (one label per "
        "pixel: the city and its districts need a second label raster and a second pass; "
        "`area()` counts both from one polygon table, city = sum of districts checked) and "
        f"skipping blocks no region touches (`area()` with the corner polygons reads {read} of "
        f"{blocks} blocks; flox reduces all of them)."
    )

    # 2. cloud-mask dilation
    mask = cloud_mask(args.mask_side)
    for n in DILATIONS:
        hand_s, hand = median_seconds(lambda n=n: _dilate(mask, n), r)
        lib_s, lib = median_seconds(lambda n=n: scipy_dilate(mask, n), r)
        mem = "dilate" if n == DILATIONS[-1] else None
        rows.append([f"mask dilation, n = {n}", hand_s, lib_s, np.array_equal(hand, lib), mem])
    notes.append(
        "mask dilation: scipy expresses the same square window and edge rule "
        "(`maximum_filter`, `mode='constant'`); nothing the kernel does is missing."
    )

    # 3. 10 m share
    whole = args.side // FACTOR * FACTOR
    crop = cube.isel(y=slice(0, whole), x=slice(0, whole))
    hand_s, hand = median_seconds(lambda: hand_share(crop), r)
    lib_s, lib = median_seconds(lambda: xarray_share(crop), r)
    equal = hand.dtype == lib.dtype and np.array_equal(hand, lib, equal_nan=True)
    rows.append([f"{FACTOR} m ISA share ({whole} px side)", hand_s, lib_s, equal, "share"])
    notes.append(
        "10 m share: nothing missing; `coarsen` also covers the kernel's other uses "
        "(probability maps: `mean` of the finite values; `min_valid`: `where` on the valid "
        "count)."
    )

    memory = {}
    if not args.no_memory and Path("/proc/self/clear_refs").exists():
        for key, lib_route in (("counts", "flox"), ("dilate", "scipy"), ("share", "xarray")):
            memory[key] = (extra_rss(f"{key}-hand", args), extra_rss(f"{key}-{lib_route}", args))

    print(
        f"\ndelegation benchmark: cube 2 x {args.side} x {args.side} uint8 in chunks of "
        f"{args.chunk}, mask 4 x {args.mask_side} x {args.mask_side}, median of {r} runs, "
        f"{os.cpu_count()} CPUs, Dask threads x 2; numpy {np.__version__}, dask "
        f"{dask.__version__}, xarray {xr.__version__}, flox {flox.__version__}, scipy "
        f"{scipy.__version__}\n"
    )
    print(
        "| kernel | hand-written (s) | library route (s) | library / hand-written | equal "
        "| extra peak RSS hand / library (MB) |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for name, h, lib_s, eq, mem in rows:
        rss = f"{memory[mem][0]:.0f} / {memory[mem][1]:.0f}" if mem in memory else "-"
        yes = "yes" if eq else "NO"
        print(f"| {name} | {h:.3f} | {lib_s:.3f} | {lib_s / h:.2f} | {yes} | {rss} |")
    print("\nLibrary routes: flox `xarray_reduce` (sum), scipy `maximum_filter`, xarray `coarsen`.")
    for note in notes:
        print(f"* {note}")


if __name__ == "__main__":
    main()
