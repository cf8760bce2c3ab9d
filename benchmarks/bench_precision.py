"""bf16 autocast against fp32: do the 1 m masks agree on real Sentinel-2 scenes?

``precision="auto"`` (the default) runs bf16 autocast on GPUs and fp32 on every CPU (bf16
on a CPU depends on the thread count); ``precision="bf16"`` asks for it on a CPU. This
segments real scenes with the bundled ``jointseg`` weights twice, with
``precision="fp32"`` and ``precision="bf16"`` (explicitly, so the bf16 row is measured
even where ``"auto"`` would stay in fp32), at the same default tile and chunking, and
prints per scene: the share of 1 m mask pixels that agree (target >= 99.9 %), the ISA
share under each precision, and the IoU of the two ISA masks (agreement alone would look
good on a scene with hardly any ISA), and how often each 10 m pixel's ISA share (what area
and growth statistics add up) is the same. A model whose mask rule allocates each 10 m
pixel's ISA to its highest-ranked 1 m pixels (``fraction``) decides between near-equal
logits, so bf16 rounding moves ISA inside a 10 m pixel more often than it moves a
threshold's contour. Nodata pixels (255 in both) are left out.

Scenes: the real Havelland crop bundled with the package, and one OSCD city
(``<shared>/s2/oscd/<city>/date1``, read offline with ``odc.stac.load``; skipped with a
note if that folder is absent). Not a timing benchmark: the numbers do not depend on load.

Usage: ``python benchmarks/bench_precision.py [--city paris] [--crop 0] [--shared ../shared]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.data import load_demo_scene

HERE = Path(__file__).resolve().parents[1]


def load_oscd(shared: Path, city: str):
    import odc.stac
    import pystac

    item_path = shared / "data" / "s2" / "oscd" / city / "date1" / "item.json"
    if not item_path.exists():
        return None, f"{item_path} not found"
    item = pystac.Item.from_file(item_path)
    ds = odc.stac.load(
        [item], bands=["red", "green", "blue"], chunks={"x": 512, "y": 512}, resolution=10
    )
    return ds, f"OSCD {city}, date 1 ({item.datetime:%Y-%m-%d})"


def compare(ds, model) -> dict:
    masks = {p: ds.isa.segment(model=model, precision=p).compute().values for p in ("fp32", "bf16")}
    a, b = masks["fp32"], masks["bf16"]
    valid = (a != 255) & (b != 255)
    isa_a, isa_b = (a == 1) & valid, (b == 1) & valid
    union = (isa_a | isa_b).sum()
    # the ISA share of each 10 m pixel (what area and growth statistics add up)
    cells = [
        m.reshape(m.shape[0], -1, 10, m.shape[-1] // 10, 10).sum(axis=(2, 4))
        for m in (isa_a, isa_b)
    ]
    whole = valid.reshape(valid.shape[0], -1, 10, valid.shape[-1] // 10, 10).all(axis=(2, 4))
    return {
        "share_equal": float((cells[0] == cells[1])[whole].mean()),
        "share_diff": float(np.abs(cells[0] - cells[1])[whole].mean() / 100),
        "pixels": int(valid.sum()),
        "agree": float((a == b)[valid].mean()),
        "isa_fp32": float(isa_a.sum() / valid.sum()),
        "isa_bf16": float(isa_b.sum() / valid.sum()),
        "iou": float((isa_a & isa_b).sum() / union) if union else float("nan"),
        "tile": ds.isa.segment(model=model).attrs["tile"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", default="paris", help="an OSCD city under s2/oscd")
    parser.add_argument("--crop", type=int, default=0, help="use only the first N x N px")
    parser.add_argument(
        "--shared", type=Path, default=HERE.parent / "shared", help="the shared data folder"
    )
    args = parser.parse_args()
    import torch

    model = xjointseg.load_model("jointseg")
    scenes = [(load_demo_scene(), "Havelland crop (bundled), 2017-02-16")]
    oscd, label = load_oscd(args.shared, args.city)
    if oscd is None:
        print(f"note: OSCD scene skipped: {label}")
    else:
        scenes.append((oscd, label))
    rows = []
    for ds, name in scenes:
        if args.crop:
            ds = ds.isel(x=slice(0, args.crop), y=slice(0, args.crop))
        rows.append((name, ds.sizes["y"], ds.sizes["x"], compare(ds, model)))

    print(
        f"\nbf16 autocast vs fp32, bundled jointseg weights, {model.device} "
        f"({os.cpu_count()} CPUs, torch {torch.__version__}); precision='auto' here is "
        f"{model.resolve_precision()}\n"
    )
    print(
        "| scene | 10 m px | tile | 1 m px compared | masks agree | ISA fp32 | ISA bf16 | ISA IoU "
        "| 10 m shares equal | mean share difference |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ny, nx, r in rows:
        print(
            f"| {name} | {ny} x {nx} | {r['tile']} | {r['pixels']:,} | {r['agree'] * 100:.3f} % "
            f"| {r['isa_fp32'] * 100:.2f} % | {r['isa_bf16'] * 100:.2f} % | {r['iou']:.4f} "
            f"| {r['share_equal'] * 100:.2f} % | {r['share_diff'] * 100:.3f} points |"
        )
    print("\ntarget: masks agree on >= 99.9 % of the pixels")


if __name__ == "__main__":
    main()
