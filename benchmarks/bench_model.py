"""Size, compute and inference speed of the networks: JointSeg lite and paper, the bilinear
baseline. Prints markdown tables.

Run: ``python benchmarks/bench_model.py [--repeats 3] [--tile 128]``

* CPU: 2 threads, ``torch.inference_mode()``, channels_last, ``segment_logits`` (what the
  engine runs) on tiles of ``tile`` x ``tile`` input pixels with margin = halo; one warm-up,
  the median of ``repeats`` runs. The ``paper`` config's halo (436 px) makes even one such
  tile several minutes of CPU, so its CPU speed is *estimated*: the GFLOP/s it reaches on a
  small tile without margin, divided by the GFLOP per km^2 of a full tile with margin.
* GPU (when ``torch.cuda.is_available()``): fp32 and bf16 autocast, batches of tiles, the
  achieved TFLOP/s, and lite's distance from 610 km^2/s (the 2.2 million km^2 of the Yangtze
  River Economic Belt at 1 m in one GPU-hour).

Areas are of 1 m *output*: a tile of 128 x 128 input pixels is 1.6384 km^2.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from xjointseg.models.bilinear import BilinearSegNet
from xjointseg.models.flops import count_macs, count_params
from xjointseg.models.jointseg import JointSegNet

YANGTZE_KM2_PER_S = 2.2e6 / 3600  # ~610 km^2/s


def km2(tile: int, batch: int = 1) -> float:
    """1 m output area of ``batch`` tiles of ``tile`` x ``tile`` input pixels, in km^2."""
    return batch * (10 * tile) ** 2 / 1e6


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up (oneDNN / cuDNN pick and cache their kernels for these shapes)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = {"lite": JointSegNet.lite, "paper": JointSegNet.paper, "bilinear": BilinearSegNet.lite}
    return net[name]().eval()


def cpu_table(names: list[str], tile: int, repeats: int) -> list[str]:
    torch.set_num_threads(2)
    rows = [
        "| model | params | halo (px) | kMAC / 1 m px (no halo) "
        "| GFLOP / km^2 (tile, margin = halo) | CPU s / tile | CPU km^2/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        net = build(name)
        h = net.halo
        bare = count_macs(net, 16, 16, logits_only=True) / (100 * 16 * 16)
        n = tile + 2 * h
        macs = count_macs(net, n, n, h, logits_only=True)
        gflop_km2 = 2 * macs / 1e9 / km2(tile)
        net = net.to(memory_format=torch.channels_last)
        if name == "paper":
            # estimate: the GFLOP/s of these layers on a small tile, over the full-tile cost
            small = 24
            x = torch.rand(1, net.in_bands, small, small) * 3000
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                dt = timed(lambda x=x, net=net: net.segment_logits(x, 0), max(1, repeats - 1))
            gflops = 2 * count_macs(net, small, small, 0, logits_only=True) / 1e9 / dt
            s_tile = 2 * macs / 1e9 / gflops
            speed = f"{km2(tile) / s_tile:.4f} (est.)"
            s_tile_txt = f"{s_tile:.0f} (est.)"
        else:
            x = torch.rand(1, net.in_bands, n, n) * 3000
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                dt = timed(lambda x=x, net=net, h=h: net.segment_logits(x, h), repeats)
            speed, s_tile_txt = f"{km2(tile) / dt:.3f}", f"{dt:.2f}"
        rows.append(
            f"| {name} | {count_params(net) / 1e6:.2f} M | {h} | {bare / 1e3:.1f} "
            f"| {gflop_km2:.0f} | {s_tile_txt} | {speed} |"
        )
    return rows


def gpu_table(names: list[str], repeats: int) -> list[str]:
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    rows = [
        f"GPU: {torch.cuda.get_device_name(dev)}",
        "",
        "| model | tile x batch | precision | s / batch | km^2/s | TFLOP/s achieved |",
        "|---|---|---|---:|---:|---:|",
    ]
    lite_best = 0.0
    for name in names:
        net = build(name).to(dev)
        h = net.halo
        tile, batch = (512, 1) if name == "paper" else (256, 8)
        n = tile + 2 * h
        flops = 2 * count_macs(net, n, n, h, logits_only=True) * batch
        x = torch.rand(batch, net.in_bands, n, n, device=dev) * 3000
        for precision in ("fp32", "bf16"):
            ctx = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if precision == "bf16"
                else torch.autocast("cuda", enabled=False)
            )

            def step(net=net, x=x, h=h, ctx=ctx):
                with torch.inference_mode(), ctx:
                    return net.segment_logits(x, h)

            dt = timed(step, repeats, sync)
            speed = km2(tile, batch) / dt
            if name == "lite":
                lite_best = max(lite_best, speed)
            rows.append(
                f"| {name} | {tile} x {batch} | {precision} | {dt:.3f} | {speed:.1f} "
                f"| {flops / dt / 1e12:.1f} |"
            )
        del net, x
        torch.cuda.empty_cache()
    if lite_best:
        rows += [
            "",
            f"lite, best: {lite_best:.1f} km^2/s = {lite_best / YANGTZE_KM2_PER_S:.2f} x the "
            f"{YANGTZE_KM2_PER_S:.0f} km^2/s that maps the Yangtze River Economic Belt "
            "(2.2 million km^2) in one GPU-hour",
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128, help="input pixels per tile side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["lite", "paper", "bilinear"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    print(f"\nCPU, 2 threads, tile {args.tile}^2 input px, margin = halo, segment_logits\n")
    print("\n".join(cpu_table(args.models, args.tile, args.repeats)))
    if torch.cuda.is_available():
        print()
        print("\n".join(gpu_table(args.models, args.repeats)))
    else:
        print("\n(no CUDA device: GPU section skipped)")


if __name__ == "__main__":
    main()
