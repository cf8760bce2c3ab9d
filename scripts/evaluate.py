"""Score models on places they never saw: aerial test places and real Sentinel-2 cities.

    python scripts/evaluate.py jointseg bilinear [runs/x/best.safetensors ...] \
        [--data ../shared/data] [--split test] [--max-side 400] [--json scores.json]

For each model: ISA F1, precision, recall, macro-F1 and SR PSNR (vs bicubic) on the Dubai
test tiles (and, as a diagnostic, the scores with the simulator's radiometry before its
calibration); per OSCD city of the split, the ROC AUC of the 10 m ISA fraction of the 1 m map
against Dynamic World "built", the ISA share in confidently built / not built pixels (and per
Dynamic World class of the not built), where the ranking is lost (the AUC of the mean 1 m
probability and of the 10 m prior alone), the change F1 against OSCD's labels of new_isa, of
the plain share rise and of Dynamic World (pooled too), and the false change on stable open
land; the ISA share of the Havelland map inside OSM land-use classes (whole polygons and
20 m inside their edges) and the polygons that hold each open class's ISA. See
xjointseg.training.evaluation.
"""

import argparse
import json
from pathlib import Path

import torch

import xjointseg
from xjointseg.training.evaluation import (
    CHANGE_THRESHOLD,
    DW_CLASSES,
    LANDUSE_INSET_M,
    OPEN_LAND,
    aerial_scores,
    landuse_shares,
    real_scores,
)
from xjointseg.training.simulate import UNCALIBRATED
from xjointseg.training.splits import DUBAI_SPLITS, OSCD_SPLITS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registered names or weights files")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument(
        "--max-side", type=int, default=400, help="10 m px per city (centre); 0: whole scenes"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write all scores here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        model = xjointseg.load_model(name, device="cpu")
        dubai, places = args.data / "hr" / "dubai", DUBAI_SPLITS[args.split]
        aerial = aerial_scores(model, dubai, places)
        # diagnostic: the same places simulated with equal gains and no path radiance (the
        # simulator before its calibration on real Sentinel-2)
        aerial["uncalibrated"] = aerial_scores(model, dubai, places, **UNCALIBRATED)
        real = real_scores(
            model, args.data / "s2" / "oscd", OSCD_SPLITS[args.split], args.max_side or None
        )
        gpkg = args.data / "s2" / "havelland_T33UUU_20170216_L1C" / "osm_landuse_water.gpkg"
        landuse = landuse_shares(model, gpkg)
        results[name] = {"sha256": model.sha256, "aerial": aerial, "real": real, "landuse": landuse}
        print_model(name, results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def print_model(name: str, r: dict) -> None:
    print(f"\n## {name} (sha256 {r['sha256'][:12]})")
    print_aerial(r["aerial"])
    print_real(r["real"])
    print_change(r["real"])
    print_landuse(r["landuse"])


def print_aerial(a: dict) -> None:
    print("\nAerial test places (simulated input):")
    print("| ISA F1 | precision | recall | macro-F1 | SR PSNR | bicubic PSNR |")
    print("|---:|---:|---:|---:|---:|---:|")
    psnr = f"{a['psnr_model']:.2f}" if "psnr_model" in a else "—"
    print(
        f"| {a['f1']:.3f} | {a['precision']:.3f} | {a['recall']:.3f} | {a['macro_f1']:.3f} "
        f"| {psnr} | {a.get('psnr_bicubic', float('nan')):.2f} |"
    )
    fine, smooth = a["placement_auc"], a["placement_auc_smooth"]
    print(
        f"Placement inside mixed 10 m pixels (within-pixel AUC, 0.5 = no skill): 1 m "
        f"probability {fine:.3f}, its own 10 m field up-sampled {smooth:.3f} "
        f"(gain {fine - smooth:+.3f})"
    )
    u = a["uncalibrated"]
    print(
        f"Same places simulated with the uncalibrated radiometry (gain {UNCALIBRATED['gain']} "
        f"in every band, no offset): ISA F1 {u['f1']:.3f}, precision {u['precision']:.3f}, "
        f"recall {u['recall']:.3f}, macro-F1 {u['macro_f1']:.3f}"
    )


def print_real(real: dict) -> None:
    print(f"\nReal Sentinel-2 (pooled AUC {real['pooled_auc']:.3f}, lowest {real['min_auc']:.3f}):")
    print(
        "| city | AUC vs DW built | ISA share, built | ISA share, not built "
        "| AUC: mean 1 m probability / 10 m prior |"
    )
    print("|---|---:|---:|---:|---:|")
    for city, s in real["cities"].items():
        prior = f"{s['auc_prior']:.3f}" if "auc_prior" in s else "—"
        print(
            f"| {city} | {s['auc']:.3f} | {s['share_built']:.1%} | {s['share_not_built']:.1%} "
            f"| {s['auc_probability']:.3f} / {prior} |"
        )
    print("\nISA share in confidently not built land, per Dynamic World class:")
    print("| city | " + " | ".join(DW_CLASSES) + " |")
    print("|---|" + "---:|" * len(DW_CLASSES))
    for city, s in real["cities"].items():
        by = s["not_built_by_class"]
        print(f"| {city} | " + " | ".join(f"{by[k]:.1%}" if k in by else "—" for k in DW_CLASSES))


def print_change(real: dict) -> None:
    print(
        "\nChange between the dates: F1 against OSCD's labels of new_isa (default rule), of "
        f"the share rise >= {CHANGE_THRESHOLD} between the maps (each date alone; tied to the "
        "evidence by consistent(images=...)) and of Dynamic World; false change on stable open "
        "land (confidently not built at both dates, same class):"
    )
    print(
        "| city | new_isa F1 (P / R) | share rise F1 | tied rise F1 | DW change F1 "
        "| false new_isa | false share rise | false tied rise |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for city, s in real["cities"].items():
        keys = ("new_isa_f1", "change_f1", "tied_f1", "dw_change_f1")
        f1 = {k: f"{s[k]:.3f}" if k in s else "—" for k in keys}
        pr = ""
        if "new_isa_f1" in s:
            pr = f" ({s['new_isa_precision']:.2f} / {s['new_isa_recall']:.2f})"
        false_keys = ("false_new_isa", "false_rise", "false_rise_tied")
        fr = {k: f"{s[k]:.2%}" if k in s else "—" for k in false_keys}
        print(
            f"| {city} | {f1['new_isa_f1']}{pr} | {f1['change_f1']} | {f1['tied_f1']} "
            f"| {f1['dw_change_f1']} | {fr['false_new_isa']} | {fr['false_rise']} "
            f"| {fr['false_rise_tied']} |"
        )
    if "pooled_new_isa_f1" in real:
        print(
            f"| pooled | {real['pooled_new_isa_f1']:.3f} | {real['pooled_change_f1']:.3f} "
            f"| {real['pooled_tied_f1']:.3f} | {real['pooled_dw_change_f1']:.3f} | | | |"
        )
    aucs = [
        f"{c} {s['magnitude_auc']:.3f} / {s['rise_auc']:.3f}"
        for c, s in real["cities"].items()
        if "magnitude_auc" in s
    ]
    if aucs:
        print(
            "ROC AUC against the change labels, new_isa's magnitude / share rise: "
            + ", ".join(aucs)
        )


def print_landuse(lu: dict) -> None:
    shares, inset = lu["shares"], lu["inset"]
    print(
        "\nHavelland, ISA share inside OSM land use (whole polygons; "
        f"{LANDUSE_INSET_M:g} m inside their edges):"
    )
    print("| | " + " | ".join(shares) + " |")
    print("|---|" + "---:|" * len(shares))
    print("| whole | " + " | ".join(f"{v:.1%}" for v in shares.values()) + " |")
    print("| inset | " + " | ".join(f"{inset.get(k, float('nan')):.1%}" for k in shares) + " |")
    open_land = [shares[k] for k in OPEN_LAND if k in shares]
    print(
        f"residential {shares.get('residential', float('nan')):.1%}, open land max "
        f"{max(open_land):.1%}"
    )
    print("where each open class's ISA lies: its three polygons with the most of it")
    for fclass, rows in lu["polygons"].items():
        top = ", ".join(
            f"osm {r['osm_id']} ({r['km2']:.3f} km2, {r['isa_share']:.1%} ISA, "
            f"{r['of_class']:.0%} of the class's)"
            for r in rows[:3]
        )
        print(f"  {fclass}: {top}")


if __name__ == "__main__":
    main()
