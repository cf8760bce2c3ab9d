"""Choose new_isa's rule on the validation cities: the thresholds and windows with the best
pooled change F1 against OSCD's labels.

    python scripts/calibrate_change.py [--model jointseg] [--data ../shared/data] \
        [--split val] [--max-side 0] [--top 10]

Each city's two dates are segmented as a user would (xjointseg.training.evaluation.
segment_city); for every window pair (Gaussian sigma, context window) the evidence is
computed once and every threshold pair scored on it. The surface tests keep the values of
the default rule (NDWI 0 and NDVI 0.5: physical levels, not tuned). Printed: the best rules,
their pooled F1 and their false change on stable open land per city (ties go to less false
change, then the stricter context gate and the wider window: the rule that flags less), and
where the default rule stands. OSCD's change labels are used here only to choose thresholds
on validation cities, never to train.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.change import DEFAULT_RULE, ChangeRule, change_evidence
from xjointseg.training.datasets import WEAK_NOT_BUILT, dynamic_world_weak_labels
from xjointseg.training.evaluation import segment_city
from xjointseg.training.splits import OSCD_SPLITS

SIGMAS = (1.5, 2.0, 3.0)
CONTEXT_WINDOWS = (11, 21, 41)
MAGNITUDES = tuple(np.round(np.arange(0.40, 0.776, 0.025), 3))
CONTEXTS = (0.0, 0.02, 0.05, 0.1, 0.2)


def city_layers(model, city: Path, max_side: int | None) -> dict:
    """The evidence of every window pair on one city, with its labels and stable open land."""
    pair = segment_city(model, city, max_side)
    s1, s2 = (x.values for x in pair["shares"])
    dw1, dw2 = pair["dw"]
    weak = [dynamic_world_weak_labels(*dw) for dw in (dw1, dw2)]
    evidence = {}
    for sigma, window in itertools.product(SIGMAS, CONTEXT_WINDOWS):
        rule = ChangeRule(smooth_sigma=sigma, context_px=window)
        ev = change_evidence(*pair["maps"], images=tuple(pair["images"]), rule=rule).compute()
        evidence[sigma, window] = ev
    ev = next(iter(evidence.values()))
    surface = ~(ev["ndwi"].values > DEFAULT_RULE.water_ndwi) & ~(
        ev["ndvi_after"].values > DEFAULT_RULE.vegetation_ndvi
    )
    valid = ~np.isnan(s1) & ~np.isnan(s2) & ~np.isnan(ev["magnitude"].values)
    stable = valid & (weak[0] == WEAK_NOT_BUILT) & (weak[1] == WEAK_NOT_BUILT)
    stable &= dw1[1] == dw2[1]
    return {
        "evidence": evidence,
        "surface": surface,
        "valid": valid,
        "stable": stable,
        "y": pair["change"],
    }


def score(layers: dict[str, dict], rule: ChangeRule) -> tuple[float, dict[str, float]]:
    """Pooled F1 and the false change on stable open land per city."""
    tp = npred = npos = 0
    false = {}
    for city, c in layers.items():
        ev = c["evidence"][rule.smooth_sigma, rule.context_px]
        new = (ev["magnitude"].values >= rule.magnitude) & (ev["context"].values >= rule.context)
        new &= c["surface"] & c["valid"]
        y = c["y"] & c["valid"]
        tp, npred, npos = tp + (new & y).sum(), npred + new.sum(), npos + y.sum()
        false[city] = float(new[c["stable"]].mean()) if c["stable"].any() else float("nan")
    return 2 * tp / max(npred + npos, 1), false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--max-side", type=int, default=0, help="10 m px per city; 0: whole")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    model = xjointseg.load_model(args.model, device="cpu")
    root = args.data / "s2" / "oscd"
    cities = [c for c in OSCD_SPLITS[args.split] if (root / c / "change.tif").exists()]
    layers = {c: city_layers(model, root / c, args.max_side or None) for c in cities}
    rows = []
    for (sigma, window), magnitude, context in itertools.product(
        itertools.product(SIGMAS, CONTEXT_WINDOWS), MAGNITUDES, CONTEXTS
    ):
        rule = ChangeRule(float(magnitude), context, smooth_sigma=sigma, context_px=window)
        f1, false = score(layers, rule)
        rows.append((f1, -max(false.values()), context, window, rule, false))
    # ties: the rule with less false change, then the stricter context gate, the wider window
    rows.sort(key=lambda r: r[:4], reverse=True)
    print(f"{args.split} cities {cities}; pooled change F1 and false change on stable open land")
    print("| F1 | magnitude | context | sigma | context px | " + " | ".join(cities) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(cities))
    default_f1, default_false = score(layers, DEFAULT_RULE)
    for f1, *_, r, false in rows[: args.top]:
        print(
            f"| {f1:.4f} | {r.magnitude} | {r.context} | {r.smooth_sigma} | {r.context_px} | "
            + " | ".join(f"{false[c]:.3%}" for c in cities)
            + " |"
        )
    print(
        f"default rule: F1 {default_f1:.4f}, false change "
        + ", ".join(f"{c} {v:.3%}" for c, v in default_false.items())
    )


if __name__ == "__main__":
    main()
