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
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

import xjointseg
from xjointseg.metrics import road_counts, road_scores_from_counts, roc_auc
from xjointseg.training.datasets import load_dubai, load_massachusetts, read_rgb_image
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


SLOVENIA_ARTIFICIAL = 8  # the sample's land-cover class "artificial surface"
SLOVENIA_OPEN = (2, 3, 4)  # forest, grassland, shrubland
SLOVENIA_BANDS = {"B02": 1, "B03": 2, "B04": 3}  # band positions in its 13-band frames


def slovenia(data: Path) -> tuple[list[xr.Dataset], np.ndarray]:
    """The clear dates of the Slovenia sample as L1C DN Datasets, and its land-cover labels.

    Its grid is 101 x 100 pixels of 9.995 m from the corner of ``bbox.geojson``; the
    Datasets put them on 10 m pixels from the same corner (a drift of at most 0.5 m)."""
    folder = data / "s2" / "eolearn_slovenia_L1C"
    frames = np.load(folder / "reference_scenes.npy")  # (date, y, x, 13) TOA reflectance
    labels = np.load(folder / "lulc.npy")[..., 0]
    corners = json.loads((folder / "bbox.geojson").read_text())["coordinates"][0]
    x0, y1 = min(c[0] for c in corners), max(c[1] for c in corners)
    grid = GeoBox(labels.shape, Affine(10, 0, x0, 0, -10, y1), "EPSG:32633")
    coords = xr_coords(grid, crs_coord_name="spatial_ref")
    scenes = []
    for frame in frames:
        if np.median(frame[..., SLOVENIA_BANDS["B02"]]) > 0.15:  # cloud over the square
            continue
        bands = {b: (("y", "x"), frame[..., i] * 10000) for b, i in SLOVENIA_BANDS.items()}
        scenes.append(xr.Dataset(bands, coords=coords).odc.assign_crs(grid.crs))
    return scenes, labels


def measure_real(model, scenes: list[xr.Dataset], labels: np.ndarray) -> dict:
    """ISA share of the artificial and open 10 m pixels over the dates, and the AUC."""
    artificial, open_land = labels == SLOVENIA_ARTIFICIAL, np.isin(labels, SLOVENIA_OPEN)
    shares = []
    for ds in scenes:
        mask = ds.isa.segment(model=model).values
        ny, nx = labels.shape
        shares.append((mask == 1).reshape(ny, 10, nx, 10).mean(axis=(1, 3)))
    both = artificial | open_land
    pooled = np.concatenate([s[both] for s in shares])
    truth = np.concatenate([artificial[both]] * len(shares)).astype(int)
    return {
        "dates": len(shares),
        "artificial_px": int(artificial.sum()),
        "artificial": [float(s[artificial].mean()) for s in shares],
        "open": [float(s[open_land].mean()) for s in shares],
        "auc": roc_auc(pooled, truth),
    }


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
    scenes, labels = slovenia(args.data)
    print(
        f"\nReal Sentinel-2, Slovenia sample ({len(scenes)} clear L1C dates): ISA share of the "
        "10 m pixels labelled artificial surface (a rural road, a few houses) and of the open "
        "land (forest, grassland, shrubland), per date; AUC of the share, artificial vs open"
    )
    print("| model | artificial 10 m pixels | ISA share there | ISA share, open land | AUC |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        r = measure_real(xjointseg.load_model(name, device="cpu"), scenes, labels)
        art = " / ".join(f"{v:.3f}" for v in r["artificial"])
        open_ = " / ".join(f"{v:.2%}" for v in r["open"])
        print(f"| {name} | {r['artificial_px']} | {art} | {open_} | {r['auc']:.3f} |")


if __name__ == "__main__":
    main()
