"""Quickstart: segment the bundled real Sentinel-2 scene at 1 m and save a figure.

Run: ``python examples/quickstart.py [--model jointseg] [--out quickstart-out]``
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import xjointseg  # noqa: E402  (registers the .isa accessor)
from xjointseg.data import load_demo_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg", help="a registered name or weights path")
    parser.add_argument("--out", type=Path, default=Path("quickstart-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    ds = load_demo_scene()  # lazy (time, y, x), 10 m, EPSG:32633
    model = xjointseg.load_model(args.model)
    isa = ds.isa.segment(model=model)  # lazy uint8 (time, y, x), 1 m
    print(f"input {dict(ds.sizes)} at 10 m -> ISA {dict(isa.sizes)} at 1 m, {model}")

    start = time.perf_counter()
    mask = isa.isel(time=0).compute()
    seconds = time.perf_counter() - start
    valid = mask.values != 255
    isa_km2 = float((mask.values == 1).sum()) / 1e6  # 1 m pixels: 1e6 per km2
    valid_km2 = float(valid.sum()) / 1e6
    mpx = mask.size / 1e6
    print(f"computed {mpx:.1f} Mpx in {seconds:.1f} s ({mpx / seconds:.2f} Mpx/s)")
    print(f"ISA: {isa_km2:.2f} km2 of {valid_km2:.2f} km2 valid ({isa_km2 / valid_km2:.1%})")

    rgb = np.stack([ds[b].isel(time=0).values for b in ("red", "green", "blue")], -1)
    rgb = np.clip((rgb.astype(float) - 300) / 2200, 0, 1) ** 0.8
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title("Sentinel-2, 16 Feb 2017, 10 m (Copernicus)")
    axes[1].imshow(np.where(valid, mask.values, np.nan), cmap="magma", interpolation="nearest")
    axes[1].set_title(f"ISA at 1 m ({model.name})")
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(args.out / "quickstart.png", dpi=110)
    print(f"figure: {args.out / 'quickstart.png'}")


if __name__ == "__main__":
    main()
