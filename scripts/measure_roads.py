"""Measure how the maps count roads, on every place here with a road reference.

    python scripts/measure_roads.py jointseg bilinear [--data ../shared/data] \
        [--split test] [--massachusetts-every 4]

Places: the Dubai aerial places of the split (held out; road and building are separate
classes of their masks) and the Massachusetts tiles (road centrelines drawn ~7 px wide;
buildings not labelled; every tile trains the bundled weights, so they say what the
training reached, not how it generalises). Each is simulated to Sentinel-2 with the default
radiometry (fixed seed) and segmented by the network with its own halo and the model's mask
rule, as the trainer's validation does. Printed per model and place group, by
xjointseg.metrics.road_scores: the 1 m road recall, and on the 10 m pixels at least 30 %
road (Dubai: with at most 5 % building) the map's mean ISA share next to the roads' real
cover there; for Dubai also the mean ISA share of 10 m pixels labelled wholly not ISA.

Then one real Sentinel-2 check: eo-learn's Slovenia sample (1 km² of L1C TOA reflectance,
five dates of which the clear ones are used, with a 10 m land-cover raster whose class
"artificial surface" is a rural road through a forested valley and a few houses), segmented
as a user would (``segment`` at the defaults): the ISA share of the artificial 10 m pixels and
of the open land (forest, grassland, shrubland), and the ROC AUC of the share, artificial
against open.
"""

import argparse
import json
from pathlib import Path

import numpy as np

import xjointseg
from xjointseg.metrics import road_counts, road_scores_from_counts
from xjointseg.training.datasets import load_dubai, load_massachusetts, read_rgb_image
from xjointseg.training.evaluation import real_road_scores, road_sample
from xjointseg.training.splits import DUBAI_SPLITS
from xjointseg.training.validation import validation_inputs, validation_outputs


def dubai_classes(root: Path, scene) -> tuple[np.ndarray, np.ndarray]:
    """Road and building masks of a Dubai scene, cropped as its ISA label is."""
    colours = json.loads((root / "classes.json").read_text())["classes"]
    _, tile, stem = scene.name.split("/")
    mask = read_rgb_image(root / tile / "masks" / f"{stem}.png")
    h, w = scene.label.shape
    road = (mask == colours["road"]).all(-1)[:h, :w]
    building = (mask == colours["building"]).all(-1)[:h, :w]
    return road, building


def cells(a: np.ndarray) -> np.ndarray:
    """(H, W) -> one row of 100 pixels per 10 m pixel."""
    h, w = a.shape
    return a.reshape(h // 10, 10, w // 10, 10).swapaxes(1, 2).reshape(-1, 100)


def open_land_share(mask: np.ndarray, label: np.ndarray) -> tuple[float, int]:
    """Sum of the ISA share over 10 m pixels labelled wholly not ISA, and their number."""
    open_cells = (cells(label) == 0).all(axis=1)
    return float((cells(mask) == 1).mean(axis=1)[open_cells].sum()), int(open_cells.sum())


def measure(model, scenes, classes) -> dict:
    net = model.network
    inputs = validation_inputs(scenes)
    totals = dict.fromkeys(("road_px", "road_hit", "cells", "share", "cover"), 0.0)
    open_sum, open_n = 0.0, 0
    for out, scene in zip(validation_outputs(net, inputs, net.halo), scenes, strict=True):
        mask = model.mask_rule.numpy(out["logits"]).astype(np.uint8)
        road, other = classes(scene)
        for k, v in road_counts(mask, road, other).items():
            totals[k] += v
        if other is not None:
            s, n = open_land_share(mask, scene.label)
            open_sum, open_n = open_sum + s, open_n + n
    scores = road_scores_from_counts(totals)
    scores["open_share"] = open_sum / open_n if open_n else float("nan")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registered names or weights files")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--massachusetts-every", type=int, default=4, help="every n-th tile")
    args = parser.parse_args()
    dubai_root = args.data / "hr" / "dubai"
    dubai = [s for s in load_dubai(dubai_root) if s.place in DUBAI_SPLITS[args.split]]
    mass = load_massachusetts(args.data / "hr" / "massachusetts_roads")
    groups = {
        f"Dubai {args.split} ({len(dubai)} images, held out)": (
            dubai,
            lambda s: dubai_classes(dubai_root, s),
        ),
        f"Massachusetts ({len(mass[:: args.massachusetts_every])} tiles, trained on)": (
            mass[:: args.massachusetts_every],
            lambda s: (s.label == 1, None),
        ),
    }
    print(
        "| model | places | 1 m road recall | road 10 m pixels | ISA share there "
        "| road cover there | ISA share, open 10 m pixels |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        model = xjointseg.load_model(name, device="cpu")
        for group, (scenes, classes) in groups.items():
            s = measure(model, scenes, classes)
            open_share = "—" if np.isnan(s["open_share"]) else f"{s['open_share']:.1%}"
            print(
                f"| {name} | {group} | {s['recall_1m']:.3f} | {s['cells']:.0f} "
                f"| {s['share']:.3f} | {s['cover']:.3f} | {open_share} |"
            )
    scenes, labels = road_sample(args.data / "s2" / "eolearn_slovenia_L1C")
    print(
        f"\nReal Sentinel-2, Slovenia sample ({len(scenes)} clear L1C dates): ISA share of the "
        "10 m pixels labelled artificial surface (a rural road, a few houses) and of the open "
        "land (forest, grassland, shrubland), per date; AUC of the share, artificial vs open"
    )
    print("| model | artificial 10 m pixels | ISA share there | ISA share, open land | AUC |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        r = real_road_scores(xjointseg.load_model(name, device="cpu"), scenes, labels)
        art = " / ".join(f"{v:.3f}" for v in r["artificial"])
        open_ = " / ".join(f"{v:.2%}" for v in r["open"])
        print(f"| {name} | {r['artificial_px']} | {art} | {open_} | {r['auc']:.3f} |")


if __name__ == "__main__":
    main()
