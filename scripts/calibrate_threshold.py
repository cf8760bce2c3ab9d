"""Choose the mask threshold of trained weights on the validation places; write a copy of the
weights that carries it.

    python scripts/calibrate_threshold.py WEIGHTS OUT.safetensors [--data ../shared/data]

The network's 1 m ISA probability is thresholded at 0.50, 0.55, ..., 0.95 on the validation
places only (the simulated Dubai validation tile, and the windows of the OSCD validation
cities the trainer scores), and each threshold is scored by the trainer's selection rule: the
mean of the aerial macro-F1 and the real AUC of the mask's 10 m share against Dynamic World
built. The best goes into the metadata (``threshold``, read by ``load_model``) with its
validation scores (``metrics``) and the whole sweep (``threshold_sweep``); the tensors are
unchanged. Test places are never looked at.
"""

import argparse
import math
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.training import load_dubai, load_oscd, split_by_place
from xjointseg.training.splits import DUBAI_SPLITS, OSCD_SPLITS
from xjointseg.training.trainer import (
    real_scores_at,
    real_validation_logits,
    real_validation_windows,
    scores_at,
    validation_inputs,
    validation_outputs,
)

THRESHOLDS = [round(t, 2) for t in np.arange(0.5, 0.951, 0.05)]
# what save_weights writes itself; everything else in the metadata is carried over
OWN_KEYS = ("format", "arch", "config", "name", "bands", "scale", "library_version")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a weights file (or a registered name)")
    parser.add_argument("out", type=Path, help="where to write the calibrated copy")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    model = xjointseg.load_model(args.weights, device="cpu")
    net = model.network
    _, val = split_by_place(load_dubai(args.data / "hr" / "dubai"), DUBAI_SPLITS["val"])
    inputs = validation_inputs(val)
    outputs = validation_outputs(net, inputs, net.halo)
    windows = real_validation_windows(
        load_oscd(args.data / "s2" / "oscd", OSCD_SPLITS["val"]), net.halo
    )
    real_logits = real_validation_logits(net, windows, net.halo)
    rows = []
    print(
        "| threshold | precision | recall | ISA F1 | macro-F1 | real AUC "
        "| share built / not built | selection |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in THRESHOLDS:
        cut = math.log(t / (1 - t))
        scores = scores_at(outputs, inputs, cut) | real_scores_at(real_logits, windows, cut)
        scores["selection"] = (scores["macro_f1"] + scores["real_auc"]) / 2
        rows.append({"threshold": t, **scores})
        print(
            f"| {t:.2f} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} "
            f"| {scores['macro_f1']:.3f} | {scores['real_auc']:.3f} | "
            f"{scores['real_share_built']:.1%} / {scores['real_share_not_built']:.1%} "
            f"| {scores['selection']:.4f} |"
        )
    best = max(rows, key=lambda r: r["selection"])
    print(f"chosen: {best['threshold']:.2f} (selection {best['selection']:.4f})")
    extra = {k: v for k, v in model.metadata.items() if k not in OWN_KEYS}
    metrics = {k: v for k, v in best.items() if k != "threshold"}
    extra |= {"threshold": best["threshold"], "metrics": metrics, "threshold_sweep": rows}
    digest = xjointseg.save_model(net, args.out, name=model.name, bands=model.bands, extra=extra)
    print(f"wrote {args.out} sha256 {digest}")


if __name__ == "__main__":
    main()
