"""Measure where the 1 m map puts ISA inside each 10 m pixel, on held-out aerial places.

    python scripts/measure_placement.py jointseg bilinear [--data ../shared/data] \
        [--split test] [--register]

For each model: the within-pixel AUC (xjointseg.metrics.within_pixel_auc) of its 1 m
probability in mixed 10 m pixels (label ISA share 0.2-0.8) of the Dubai places of the split,
simulated to Sentinel-2 with the default radiometry, next to the same AUC of its own 10 m
field up-sampled bilinearly (placement by the 10 m field alone). ``--register`` writes both
into the bundled registry entry of each registered model, where ``Model.placement`` and the
demo's captions read them.
"""

import argparse
import json
from pathlib import Path

import xjointseg
from xjointseg.training.evaluation import aerial_scores
from xjointseg.training.splits import DUBAI_SPLITS

REGISTRY = Path(__file__).parents[1] / "xjointseg" / "models" / "weights" / "registry.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registered names or weights files")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--register", action="store_true", help="record in the registry")
    args = parser.parse_args()
    registry = json.loads(REGISTRY.read_text())
    places = DUBAI_SPLITS[args.split]
    print("| model | within-pixel AUC, 1 m | its 10 m field up-sampled | gain |")
    print("|---|---:|---:|---:|")
    for name in args.models:
        model = xjointseg.load_model(name, device="cpu")
        scores = aerial_scores(model, args.data / "hr" / "dubai", places)
        fine, smooth = scores["placement_auc"], scores["placement_auc_smooth"]
        print(f"| {name} | {fine:.3f} | {smooth:.3f} | {fine - smooth:+.3f} |")
        if args.register and registry.get(name, {}).get("sha256") == model.sha256:
            registry[name]["placement"] = {
                "within_pixel_auc": round(fine, 4),
                "smooth_field_auc": round(smooth, 4),
                "places": places,
                "command": f"python scripts/measure_placement.py {name} --split {args.split}",
            }
    if args.register:
        REGISTRY.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
