"""What a cascade could save: rural and urban real scenes at the defaults, and how much of the
1 m work a 10 m gate would let a cascade skip with the bundled ``jointseg``.

A cascade runs the 2.5 m and 1 m stages only on the sub-tiles that can hold ISA, where the
10 m layers (trunk and prior) say so. Its speed-up is bounded by three numbers measured here:

* the share of a tile's time spent in the 10 m layers (they run everywhere);
* the share of S x S sub-tiles (10 m pixels) whose every cell is below a gate on the 10 m
  prior's probability (what could be skipped), and the ISA the gate removes from the mask;
* the context the 2.5 m and 1 m stages need around a sub-tile (the 2.5 m trunk's receptive
  field): a sub-tile of S costs that much more per pixel than a whole tile.

Prints, per scene (a rural crop of the Havelland L1C scene and an urban OSCD city, same
size): km2/s of 1 m output at the defaults, the gate's shares, the time split of a tile by
grid (forward hooks), and the best speed-up a cascade with sub-tiles of S could reach, the
gate and the rule being free: the skipped share of each stage's time saved, the rest paying
the sub-tile's context.

Usage: ``python benchmarks/bench_cascade.py [--size 384] [--gate 0.05] [--data ../shared/data]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xjointseg

SUBTILES = (8, 16, 32, 64)


def load_crop(item: Path, size: int) -> xr.Dataset:
    """The centre ``size`` x ``size`` px of a scene's red, green and blue bands, in memory."""
    import odc.stac
    import pystac

    ds = odc.stac.load([pystac.Item.from_file(item)], bands=["red", "green", "blue"])
    y0, x0 = (ds.sizes["y"] - size) // 2, (ds.sizes["x"] - size) // 2
    return ds.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size)).compute()


#: The top-level layers of ``jointseg`` by the grid they compute on
STAGES = {
    "10 m": ("s1_first", "s1_trunk", "head10"),
    "2.5 m": ("s1_up1", "s1_up2", "s1_hr", "s1_last", "s2_first", "s2_trunk"),
    "1 m": ("s2_up", "s2_hr", "fusion"),
}


def stage_split(model, tile: int) -> dict[str, float]:
    """Share of one tile's time in the layers of each grid (forward hooks, 3 runs)."""
    import torch

    net, halo = model.network, model.halo
    x = torch.rand(1, 3, tile + 2 * halo, tile + 2 * halo).mul(3000)
    x = x.contiguous(memory_format=torch.channels_last)
    spent = dict.fromkeys(STAGES, 0.0)
    started: dict[str, float] = {}
    hooks = []
    for stage, names in STAGES.items():
        for name in names:
            module = getattr(net, name)
            hooks.append(
                module.register_forward_pre_hook(
                    lambda *_, n=name: started.__setitem__(n, time.perf_counter())
                )
            )
            hooks.append(
                module.register_forward_hook(
                    lambda *_, n=name, g=stage: spent.__setitem__(
                        g, spent[g] + time.perf_counter() - started[n]
                    )
                )
            )
    with torch.inference_mode():
        net.segment_logits(x, halo)  # warm-up
        spent.update(dict.fromkeys(STAGES, 0.0))
        start = time.perf_counter()
        for _ in range(3):
            net.segment_logits(x, halo)
        total = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    return {stage: t / total for stage, t in spent.items()}


def prior_probability(model, ds) -> np.ndarray:
    """The 10 m prior's probability for every pixel of the crop (edges reflected)."""
    import torch

    halo = model.network.prior_halo
    x = np.stack([ds[b].isel(time=0).values for b in ("red", "green", "blue")]).astype(np.float32)
    x = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")[None]
    with torch.inference_mode():
        logits = model.network.prior_logits(torch.from_numpy(x), halo)
    return torch.sigmoid(logits)[0, 0].numpy()


def overhead(model, tile: int, sub: int, point: str) -> float:
    """Work per output pixel of a stage run on a sub-tile of ``sub`` against a whole tile,
    from the context (in 2.5 m pixels) the network needs at ``point``."""
    need = model.network._needs[False][point] / 4  # in 10 m pixels
    return ((sub + 2 * need) / sub) ** 2 / ((tile + 2 * need) / tile) ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="crop side, 10 m pixels")
    parser.add_argument("--gate", type=float, default=0.05, help="10 m prior probability")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    import torch

    model = xjointseg.load_model("jointseg", device="cpu")
    scenes = {
        "Havelland (rural)": args.data / "s2/havelland_T33UUU_20170216_L1C/item.json",
        "Paris (urban)": args.data / "s2/oscd/paris/date1/item.json",
    }
    rows = []
    tile = None
    for name, item in scenes.items():
        ds = load_crop(item, args.size)
        ds.isa.segment(model=model).compute()  # warm-up
        start = time.perf_counter()
        isa = ds.isa.segment(model=model).compute()
        seconds = time.perf_counter() - start
        tile = int(isa.attrs["tile"])
        mask = isa.values[0] == 1
        gated = prior_probability(model, ds) < args.gate
        cells = mask.reshape(args.size, 10, args.size, 10).sum(axis=(1, 3))
        lost = cells[gated].sum() / max(int(cells.sum()), 1)
        skip = {}
        for s in SUBTILES:
            n = args.size // s
            sub = gated[: n * s, : n * s].reshape(n, s, n, s).all(axis=(1, 3))
            skip[s] = float(sub.mean())
        km2 = args.size**2 * 1e-4
        rows.append((name, seconds, km2 / seconds, mask.mean(), gated.mean(), lost, skip))

    split = stage_split(model, tile)
    rest = 1 - sum(split.values())  # glue between the layers (crops, up-sampling, the rule)
    print(
        f"\nbundled jointseg, {args.size} x {args.size} px crops ({args.size**2 * 1e-4:.1f} km2), "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"precision {model.resolve_precision()}, tile {tile}, gate: 10 m prior < {args.gate}\n"
    )
    shares = ", ".join(f"{stage} layers {t:.1%}" for stage, t in split.items())
    print(f"A tile's time: {shares}, the rest {rest:.1%}.\n")
    print("| scene | seconds | km2/s | ISA share | cells gated | ISA the gate removes |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, rate, share, gated, lost, _ in rows:
        print(f"| {name} | {seconds:.1f} | {rate:.2f} | {share:.1%} | {gated:.1%} | {lost:.2%} |")
    print(f"\nurban / rural time: {rows[1][1] / rows[0][1]:.2f}\n")
    print_projection(model, tile, split, rest, rows)


def print_projection(model, tile: int, split: dict, rest: float, rows: list) -> None:
    """The best speed-up of two cascades: (a) the 2.5 m and 1 m stages on the sub-tiles that
    can hold ISA, (b) the 1 m stages only (the 2.5 m trunk on the whole tile, as now)."""
    ov25 = {s: overhead(model, tile, s, "z") for s in SUBTILES}
    ov1 = {s: overhead(model, tile, s, "feat25/up") for s in SUBTILES}
    print(f"| sub-tiles of S (10 m px) | {' | '.join(f'S={s}' for s in SUBTILES)} |")
    print("|---|" + "---:|" * len(SUBTILES))
    for label, ov in (("2.5 m", ov25), ("1 m", ov1)):
        cells = " | ".join(f"{ov[s]:.2f}x" for s in SUBTILES)
        print(f"| {label} work per pixel, sub-tile vs whole tile | {cells} |")
    for name, *_, skip in rows:
        run = {s: 1 - skip[s] for s in SUBTILES}
        both = {
            s: 1
            / (split["10 m"] + rest + (split["2.5 m"] * ov25[s] + split["1 m"] * ov1[s]) * run[s])
            for s in SUBTILES
        }
        fine = {
            s: 1 / (split["10 m"] + rest + split["2.5 m"] + split["1 m"] * ov1[s] * run[s])
            for s in SUBTILES
        }
        for label, values, fmt in (
            ("sub-tiles skipped", skip, "{:.1%}"),
            ("speed-up, (a) 2.5 m and 1 m skipped", both, "{:.2f}x"),
            ("speed-up, (b) 1 m skipped", fine, "{:.2f}x"),
        ):
            cells = " | ".join(fmt.format(values[s]) for s in SUBTILES)
            print(f"| {name}: {label} | {cells} |")


if __name__ == "__main__":
    main()
