"""Choose the mask rule and threshold of trained weights on the validation places; write a copy
of the weights that carries them.

    python scripts/calibrate_threshold.py WEIGHTS OUT.safetensors [--data ../shared/data]

Both mask rules (xjointseg.models.decision: ``threshold`` and ``fraction``, the latter with
Platt slopes 1, 1.5, 2, 3 and 5) are applied with thresholds 0.30, 0.35, ..., 0.95 to the
network's 1 m logits on the validation places only (the simulated Dubai validation tile, and
the windows of the OSCD validation cities the trainer scores), and each is scored by the
trainer's selection rule: the mean of the aerial macro-F1 and the real AUC of the mask's 10 m
share against Dynamic World built. The best goes into the metadata (``mask_rule``,
``threshold``, ``mask_slope``, read by ``load_model``) with its validation scores
(``metrics``) and the whole sweep (``threshold_sweep``); the tensors are
unchanged. Test places are never looked at.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.models.decision import MaskRule
from xjointseg.training import load_dubai, load_oscd, split_by_place
from xjointseg.training.splits import DUBAI_SPLITS, OSCD_SPLITS
from xjointseg.training.validation import (
    real_scores_at,
    real_validation_logits,
    real_validation_windows,
    scores_at,
    validation_inputs,
    validation_outputs,
)

THRESHOLDS = [round(t, 2) for t in np.arange(0.3, 0.951, 0.05)]
# (rule, slope): the slope changes nothing under a threshold rule
RULES = [("threshold", 1.0)] + [("fraction", a) for a in (1.0, 1.5, 2.0, 3.0, 5.0)]
# what save_model writes itself; everything else in the metadata is carried over
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
        "| rule | slope | threshold | precision | recall | ISA F1 | macro-F1 | real AUC "
        "| share built / not built | selection |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (kind, slope), t in itertools.product(RULES, THRESHOLDS):
        rule = MaskRule(kind, t, net.scale, slope)
        scores = scores_at(outputs, inputs, rule) | real_scores_at(real_logits, windows, rule)
        scores["selection"] = (scores["macro_f1"] + scores["real_auc"]) / 2
        rows.append({"mask_rule": kind, "mask_slope": slope, "threshold": t, **scores})
        print(
            f"| {kind} | {slope:g} | {t:.2f} | {scores['precision']:.3f} | {scores['recall']:.3f} "
            f"| {scores['f1']:.3f} | {scores['macro_f1']:.3f} | {scores['real_auc']:.3f} | "
            f"{scores['real_share_built']:.1%} / {scores['real_share_not_built']:.1%} "
            f"| {scores['selection']:.4f} |"
        )
    best = max(rows, key=lambda r: r["selection"])
    print(
        f"chosen: {best['mask_rule']}, slope {best['mask_slope']:g}, {best['threshold']:.2f} "
        f"(selection {best['selection']:.4f})"
    )
    extra = {k: v for k, v in model.metadata.items() if k not in OWN_KEYS}
    chosen = {k: best[k] for k in ("mask_rule", "mask_slope", "threshold")}
    metrics = {k: v for k, v in best.items() if k not in chosen}
    extra |= chosen | {"metrics": metrics, "threshold_sweep": rows}
    digest = xjointseg.save_model(net, args.out, name=model.name, bands=model.bands, extra=extra)
    print(f"wrote {args.out} sha256 {digest}")


if __name__ == "__main__":
    main()
