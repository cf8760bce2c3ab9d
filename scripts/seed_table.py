"""The model card's validation table: best held-out scores per seed, and mean +- spread.

Usage: ``python scripts/seed_table.py [RUNS_DIR]`` after ``scripts/train_default_weights.sh``
for seeds 0, 1, 2 (folders ``RUNS_DIR/{jointseg,bilinear}-s{seed}``). The best evaluation of
a run is the one ``best.safetensors`` holds: the highest validation ``selection`` (macro-F1, or
the mean of macro-F1 and the real-scene AUC) after the SR warm-up.
"""

import json
import statistics
import sys
from pathlib import Path

from xjointseg.models.weights import read_weights

KEYS = (
    "f1",
    "precision",
    "recall",
    "macro_f1",
    "real_auc",
    "psnr_model",
    "psnr_bilinear",
    "psnr_bicubic",
)


def best_evaluation(run: Path, warmup: int) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    eligible = [r for r in rows if r["step"] > warmup]
    # first of equals, as the trainer keeps
    return max(eligible, key=lambda r: r.get("selection", r["macro_f1"]))


def main(root: str = "runs") -> None:
    root = Path(root)
    print(
        "| model | seed | step | ISA F1 | precision | recall | macro-F1 | real AUC | SR PSNR dB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for arch in ("jointseg", "bilinear"):
        runs = sorted(root.glob(f"{arch}-s[0-9]*"))
        runs = [r for r in runs if (r / "best.safetensors").exists()]
        bests = []
        for run in runs:
            training = read_weights(run / "best.safetensors").metadata["training"]
            best = best_evaluation(run, training["sr_warmup"])
            bests.append(best)
            psnr = f"{best['psnr_model']:.2f}" if "psnr_model" in best else "—"
            auc = f"{best['real_auc']:.3f}" if "real_auc" in best else "—"
            print(
                f"| {arch} | {run.name.rsplit('-s', 1)[1]} | {best['step']} | {best['f1']:.3f} "
                f"| {best['precision']:.3f} | {best['recall']:.3f} | {best['macro_f1']:.3f} "
                f"| {auc} | {psnr} |"
            )
        summary[arch] = {
            k: [b[k] for b in bests if k in b] for k in KEYS if any(k in b for b in bests)
        }
    print()
    print("| model | seeds | ISA F1 mean ± sd | macro-F1 mean ± sd |")
    print("|---|---:|---:|---:|")

    def sd(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    for arch, s in summary.items():
        if not s.get("f1"):
            continue
        print(
            f"| {arch} | {len(s['f1'])} | {statistics.mean(s['f1']):.3f} ± {sd(s['f1']):.3f} "
            f"| {statistics.mean(s['macro_f1']):.3f} ± {sd(s['macro_f1']):.3f} |"
        )
    if summary.get("jointseg", {}).get("psnr_model"):
        js = summary["jointseg"]
        print()
        print(
            "JointSeg SR PSNR on the held-out places (mean over seeds): "
            f"{statistics.mean(js['psnr_model']):.2f} dB; bilinear up-sampling "
            f"{statistics.mean(js['psnr_bilinear']):.2f} dB; bicubic "
            f"{statistics.mean(js['psnr_bicubic']):.2f} dB"
        )
    if summary.get("jointseg", {}).get("f1") and summary.get("bilinear", {}).get("f1"):
        gap = statistics.mean(summary["jointseg"]["f1"]) - statistics.mean(
            summary["bilinear"]["f1"]
        )
        print(f"JointSeg - bilinear, mean ISA F1: {100 * gap:+.1f} points")


if __name__ == "__main__":
    main(*sys.argv[1:])
