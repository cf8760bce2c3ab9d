"""xjointseg against its closest peer: geoai's ``predict_geotiff_superres``, same network.

geoai (pip ``geoai-py``) runs any PyTorch model that maps a tile to a larger one over a
GeoTIFF: overlapping tiles read with rasterio windows, outputs blended with a spline window
into float64 sums of the whole high-resolution raster, then written as one GeoTIFF.
Here it runs **the bundled ``jointseg`` network** (the same weights, the same precision,
tiles of the same size) against ``segment`` streamed into a Zarr v3 cube, on the same
real-texture scene: the bundled real Havelland crop (384 px) mirrored out to ``N x N`` px
and written as a uint16 GeoTIFF that both read. For each size it prints:

* wall time from the input GeoTIFF to the written 1 m mask (model already loaded),
* peak RSS, each run in a fresh process,
* the share of 1 m pixels where the two masks agree, over the pixels both define.

How the peer is set up (its own API, nothing of it copied): ``tile_size`` = segment's tile
plus twice the halo and ``overlap`` = twice the halo, so each tile sees the same context
and there are as many tiles as segment runs; ``preprocess_fn`` passes DN through (the
network normalises itself; geoai's default would divide by 255); the model is a small
wrapper whose ``forward`` returns the ISA probability at 1 m, under bf16 autocast when
``--precision`` resolves to bf16, as segment's does; geoai's default spline blending
(linear where a tile is under twice the halo: spline does not allow that);
``postprocess_fn`` applies the model's own mask rule to the blended probability (the
threshold, or the fraction rule's allocation in each 10 m pixel: the raster holds whole
10 m pixels) and the GeoTIFF is uint8 with 255 as nodata; ``batch_size`` is segment's (1 on
CPU). Masks are not expected to agree everywhere: geoai pads the scene edges with zeros and
blends tiles, segment gives every tile its exact halo.

**Installing geoai**: ``pip install --no-deps geoai-py`` (pure Python; the inference module
needs only numpy, torch, rasterio and tqdm, all xjointseg dependencies already). It is not a
project requirement. ``predict_geotiff_superres`` imports ``get_device`` from
``geoai.utils``, a package whose ``__init__`` also imports leafmap, geopandas and more that
this function never uses; where that import fails, this script loads geoai's own
``geoai/utils/device.py`` (standard library only) under the name ``geoai.utils`` so the
function runs unchanged. Without geoai the script says so and measures xjointseg alone.

Memory: geoai holds two float64 arrays of the whole 1 m output (16 bytes per 1 m pixel:
6.7 GB for 2048 px) plus a float32 copy; run 2048 px only where that fits.

Usage: ``python benchmarks/bench_peer.py [--sizes 1024 2048] [--precision auto]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _memory import peak_rss_mb  # benchmarks/_memory.py


def import_peer():
    """geoai's ``predict_geotiff_superres``, or None if geoai is not installed."""
    try:
        from geoai.inference import predict_geotiff_superres
    except ImportError:
        return None
    try:
        import geoai.utils  # noqa: F401
    except ImportError:
        # its __init__ needs leafmap & co.; the function only needs get_device, which lives
        # in a standard-library-only file of geoai's own: load that file as geoai.utils
        import geoai

        path = Path(geoai.__file__).parent / "utils" / "device.py"
        spec = importlib.util.spec_from_file_location("geoai.utils", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["geoai.utils"] = module
    return predict_geotiff_superres


def write_scene(size: int, path: Path) -> None:
    """The bundled real crop (red, green, blue: the model's bands), mirrored to size x size."""
    import rasterio
    from rasterio.transform import from_origin

    from xjointseg.data import load_demo_scene

    ds = load_demo_scene().isel(time=0).compute()
    data = np.stack([ds[b].values for b in ("red", "green", "blue")])
    reps = -(-size // data.shape[1])
    data = np.pad(data, ((0, 0), (0, reps * data.shape[1]), (0, reps * data.shape[2])), "symmetric")
    data = np.ascontiguousarray(data[:, :size, :size])
    aff = ds.odc.geobox.affine
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint16",
        crs=ds.odc.crs.to_wkt(),
        transform=from_origin(aff.c, aff.f, 10, 10),
        nodata=0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
    ) as dst:
        dst.write(data)


def read_scene(path: Path):
    import rioxarray

    arr = rioxarray.open_rasterio(path, chunks={"x": 1024, "y": 1024})
    return arr.assign_coords(band=["B04", "B03", "B02"])


class PeerNetwork(torch.nn.Module):
    """What geoai calls: ``(B, 3, h, w)`` DN -> ``(B, 1, 10h, 10w)`` ISA probability, run
    the way ``Model.predict`` runs it (channels-last on a CPU, bf16 autocast if asked)."""

    def __init__(self, model, bf16: bool) -> None:
        super().__init__()
        self.net, self.bf16 = model.network, bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net.segment_logits(x, 0)
        return torch.sigmoid(logits.float())


def run_child(kind: str, scene: Path, out: Path, precision: str) -> None:
    import xjointseg
    from xjointseg.engine import default_tile

    model = xjointseg.load_model("jointseg")  # loaded before the clock starts, for both
    size = int(scene.stem.split("-")[-1])
    tile, _ = default_tile(model, scene=(size, size))
    batch = 8 if model.device.type == "cuda" else 1
    start = time.perf_counter()
    if kind == "geoai":
        predict = import_peer()
        bf16 = model.resolve_precision(precision) == "bf16"
        predict(
            PeerNetwork(model, bf16),
            str(scene),
            str(out),
            scale=model.scale,
            tile_size=tile + 2 * model.halo,
            overlap=2 * model.halo,
            # geoai's default spline window needs overlap <= tile_size / 2 (tiles >= 2 halos)
            blend_mode="spline" if tile >= 2 * model.halo else "linear",
            batch_size=batch,
            num_classes=1,
            output_dtype="uint8",
            output_nodata=255,
            preprocess_fn=lambda t: t.astype(np.float32),
            postprocess_fn=lambda p: model.mask_rule.from_probability(p).astype(np.uint8),
            device=str(model.device),
            verbose=False,
        )
    else:
        isa = read_scene(scene).isa.segment(model=model, precision=precision, tile=tile)
        isa = isa.expand_dims(time=[np.datetime64("2017-02-16", "ns")])
        isa.isa.to_zarr(out)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "tile": tile}))


def in_fresh_process(kind: str, scene: Path, out: Path, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(scene), str(out), precision]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(geoai_tif: Path, store: Path) -> tuple[float, int]:
    import rasterio

    import xjointseg

    with rasterio.open(geoai_tif) as src:
        peer = src.read(1)
    ours = xjointseg.open_cube(store).isel(time=0).values
    both = (peer != 255) & (ours != 255)
    return float((peer == ours)[both].mean()), int(both.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, scene, out, precision = args.child
        return run_child(kind, Path(scene), Path(out), precision)

    import xjointseg

    have_peer = import_peer() is not None
    if not have_peer:
        print("geoai is not installed (pip install --no-deps geoai-py): xjointseg rows only")
    model = xjointseg.load_model("jointseg")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            scene = tmp / f"scene-{size}.tif"
            write_scene(size, scene)
            ours = in_fresh_process("xjointseg", scene, tmp / f"isa-{size}.zarr", args.precision)
            peer = {"error": "not installed"}
            agree = (float("nan"), 0)
            if have_peer:
                peer_tif = tmp / f"geoai-{size}.tif"
                peer = in_fresh_process("geoai", scene, peer_tif, args.precision)
                if "error" not in peer and "error" not in ours:
                    agree = agreement(peer_tif, tmp / f"isa-{size}.zarr")
            rows.append((size, ours, peer, agree))
            for path in tmp.iterdir():  # keep the disk use to one size at a time
                if path.is_file():
                    path.unlink()

    print(
        f"\npeer benchmark: bundled jointseg weights (halo {model.halo}), precision "
        f"{args.precision} = {model.resolve_precision(args.precision)} on {model.device}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; real Havelland texture mirrored "
        "to N x N px; each run in a fresh process\n"
    )
    print("| scene (10 m px) | 1 m px | tool | seconds | peak RSS MB |")
    print("|---|---|---|---|---|")
    for size, ours, peer, _ in rows:
        for tool, r in (("xjointseg `segment` -> Zarr", ours), ("geoai", peer)):
            if "error" in r:
                print(f"| {size} x {size} | {(10 * size) ** 2:,} | {tool} | - | - ({r['error']}) |")
            else:
                print(
                    f"| {size} x {size} | {(10 * size) ** 2:,} | {tool} (tile {r['tile']}) | "
                    f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
                )
    print("\n| scene (10 m px) | 1 m px both define | masks agree |")
    print("|---|---|---|")
    for size, _, _, (share, n) in rows:
        print(f"| {size} x {size} | {n:,} | {share * 100:.3f} % |")


if __name__ == "__main__":
    main()
