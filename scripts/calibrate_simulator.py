"""Calibrate the Sentinel-2 simulator's radiometry on real Sentinel-2 (OSCD training cities).

The simulator maps linear aerial intensity to DN with ``DN = 10000 * (offset + gain * linear)``
per band. The line is fitted per band by least squares between the 2nd-98th percentiles of
the simulated 10 m pixels (training aerial tiles, unit gain, no offset) and of the real ones
(OSCD training cities, L1C): the simulated distribution is moved onto the real one, haze
(the offset, largest in blue) included. Prints the fitted gain and offset and, before and
after, each band's mean and spread and the 1-Wasserstein distance between simulated and real
DN, for all pixels and per surface type: built-up (aerial ISA vs Dynamic World's confident
"built") and trees (aerial vegetation vs Dynamic World's trees), 10 m pixels with >= 80 % of
one class.

    python scripts/calibrate_simulator.py [../shared/data]
"""

import json
import sys
from pathlib import Path

import numpy as np
import rasterio

from xjointseg.training.datasets import load_oscd, read_rgb_image
from xjointseg.training.simulate import DEFAULT_GAIN, DEFAULT_OFFSET, simulate_sentinel2
from xjointseg.training.splits import DUBAI_SPLITS, OSCD_SPLITS

BANDS = ("B04", "B03", "B02")


def w1(a: np.ndarray, b: np.ndarray, n: int = 1000) -> float:
    """1-Wasserstein distance of two samples (mean absolute difference of quantiles)."""
    q = (np.arange(n) + 0.5) / n
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def real_pixels(data: Path) -> dict[str, np.ndarray]:
    scenes = load_oscd(data / "s2" / "oscd", OSCD_SPLITS["train"])
    out = {"built": [], "trees": [], "all": []}
    for s in scenes:
        ok = ~np.isnan(s.lr).any(0)
        out["built"].append(s.lr[:, ok & (s.weak == 1)])
        city, date = s.name.split("/")[1:]
        with rasterio.open(data / "s2" / "oscd" / city / date / "dynamicworld.tif") as src:
            dw_class = src.read(2)
        out["trees"].append(s.lr[:, ok & (s.weak == 0) & (dw_class == 1)])
        out["all"].append(s.lr[:, ok])
    return {k: np.concatenate(v, 1) for k, v in out.items()}


def class_share(mask: np.ndarray, colours: dict, names: list[str]) -> np.ndarray:
    """Share of each 10 m pixel's 1 m mask pixels that have one of the colours ``names``."""
    m = np.zeros(mask.shape[:2], bool)
    for n in names:
        m |= (mask == colours[n]).all(-1)
    h, w = m.shape
    return m.reshape(h // 10, 10, w // 10, 10).mean((1, 3))


def aerial_pixels(data: Path) -> dict[str, np.ndarray]:
    """Linear aerial intensity x 10000 at 10 m (unit gain, no offset, no noise)."""
    root = data / "hr" / "dubai"
    spec = json.loads((root / "classes.json").read_text())
    colours = {k: tuple(v) for k, v in spec["classes"].items()}
    out = {"built": [], "trees": [], "all": []}
    train_tiles = {p.split("/")[1] for p in DUBAI_SPLITS["train"]}
    for image in sorted(root.glob("tile*/images/*.jpg")):
        if image.parent.parent.name not in train_tiles:
            continue
        rgb, mask = (
            read_rgb_image(image),
            read_rgb_image(image.parent.parent / "masks" / (image.stem + ".png")),
        )
        h, w = rgb.shape[0] // 10 * 10, rgb.shape[1] // 10 * 10
        rgb, mask = rgb[:h, :w], mask[:h, :w]
        lr = simulate_sentinel2(rgb, gain=1.0, offset=0.0, noise_dn=0)

        out["built"].append(lr[:, class_share(mask, colours, spec["isa"]) >= 0.8])
        out["trees"].append(lr[:, class_share(mask, colours, ["vegetation"]) >= 0.8])
        out["all"].append(lr.reshape(3, -1))
    return {k: np.concatenate(v, 1) for k, v in out.items()}


def report(title, sim, real):
    print(f"\n{title}")
    print("| surface | band | real mean ± sd | simulated mean ± sd | W1 (DN) |")
    print("|---|---|---:|---:|---:|")
    for kind in ("built", "trees", "all"):
        for i, band in enumerate(BANDS):
            r, s = real[kind][i], sim[kind][i]
            print(
                f"| {kind} | {band} | {r.mean():.0f} ± {r.std():.0f} | {s.mean():.0f} ± "
                f"{s.std():.0f} | {w1(s, r):.0f} |"
            )


def main(data: str = "../shared/data") -> None:
    data = Path(data)
    real, lin = real_pixels(data), aerial_pixels(data)
    g0 = np.broadcast_to(np.asarray(DEFAULT_GAIN, np.float64), (3,))
    o0 = np.broadcast_to(np.asarray(DEFAULT_OFFSET, np.float64), (3,))
    before = {k: v * g0[:, None] + 1e4 * o0[:, None] for k, v in lin.items()}
    report("Before (current defaults)", before, real)
    q = np.linspace(0.02, 0.98, 49)
    gain, offset = np.zeros(3), np.zeros(3)
    for i in range(3):
        sq, rq = np.quantile(lin["all"][i], q), np.quantile(real["all"][i], q)
        gain[i], o = np.polyfit(sq, rq, 1)
        offset[i] = o / 1e4
    after = {k: v * gain[:, None] + 1e4 * offset[:, None] for k, v in lin.items()}
    report("After (fitted)", after, real)
    print("\ngain (B04, B03, B02):", np.round(gain, 4).tolist())
    print("offset (reflectance):", np.round(offset, 4).tolist())


if __name__ == "__main__":
    main(*sys.argv[1:])
