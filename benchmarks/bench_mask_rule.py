"""What the fraction mask rule costs: the bundled ``jointseg`` under its own rule (sub-pixel
allocation in each 10 m pixel) against the same tensors under a plain threshold.

Segments the bundled Havelland crop (real Sentinel-2) with ``segment(...).compute()`` at
the defaults, alternating the two rules ``--repeat`` times, and prints the median seconds,
their ratio, the ISA share under each rule and the share of 10 m pixels the fraction rule
had to rank (neither empty nor full). The models differ only in their mask rule.

Usage: ``python benchmarks/bench_mask_rule.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import xjointseg
from xjointseg.data import load_demo_scene
from xjointseg.models.decision import MaskRule
from xjointseg.models.model import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    shipped = xjointseg.load_model("jointseg", device="cpu")
    rule = shipped.mask_rule
    threshold = MaskRule("threshold", rule.threshold, rule.scale)
    plain = Model.from_network(
        shipped.network, name="jointseg-threshold", bands=shipped.bands, mask_rule=threshold
    )
    ds = load_demo_scene()[["red", "green", "blue"]]
    seconds: dict[str, list[float]] = {"fraction": [], "threshold": []}
    masks = {}
    ds.isa.segment(model=shipped).compute()  # warm-up: threads, caches
    for _ in range(args.repeat):
        for name, model in (("fraction", shipped), ("threshold", plain)):
            start = time.perf_counter()
            masks[name] = ds.isa.segment(model=model).compute().values
            seconds[name].append(time.perf_counter() - start)
    isa = masks["fraction"][0] == 1
    count = isa.reshape(isa.shape[0] // 10, 10, -1, 10).sum(axis=(1, 3))  # per 10 m pixel
    mixed = float(((count > 0) & (count < 100)).mean())

    print(
        f"\nbundled jointseg on the Havelland crop ({ds.sizes['y']} x {ds.sizes['x']} px), "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, precision "
        f"{shipped.resolve_precision()}, median of {args.repeat}\n"
    )
    print("| mask rule | seconds | ISA share |")
    print("|---|---:|---:|")
    for name, label in (
        ("threshold", f"threshold {rule.threshold}"),
        ("fraction", f"fraction, slope {rule.slope:g}, threshold {rule.threshold} (shipped)"),
    ):
        m = masks[name]
        share = (m == 1).sum() / (m != 255).sum()
        print(f"| {label} | {statistics.median(seconds[name]):.2f} | {share * 100:.2f} % |")
    ratio = statistics.median(seconds["fraction"]) / statistics.median(seconds["threshold"])
    print(f"\nfraction / threshold time: {ratio:.3f}; 10 m pixels ranked: {mixed * 100:.1f} %")


if __name__ == "__main__":
    main()
