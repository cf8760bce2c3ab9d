"""JointSeg against the bilinear baseline over seeds: best validation scores per run, and the
same networks on the aerial test places, with mean +- spread.

Usage: ``python scripts/seed_table.py [RUNS_DIR] [--dubai DUBAI_DIR]`` after
``scripts/train_default_weights.sh`` for seeds 0, 1, 2 (folders
``RUNS_DIR/{jointseg,bilinear}-s{seed}``). The best evaluation of a run is the one
``best.safetensors`` holds: the highest validation ``selection`` (macro-F1, or the mean of
macro-F1 and the real-scene AUC) after the SR warm-up. With ``--dubai`` each run's
``best.safetensors`` is also scored on the Dubai test tiles (never trained on, never used to
select), under its own mask rule.
"""

import argparse
import json
import statistics
from pathlib import Path

from xjointseg.models.weights import read_weights

ARCHS = ("jointseg", "bilinear")


def best_evaluation(run: Path, warmup: int) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    eligible = [r for r in rows if r["step"] > warmup]
    # first of equals, as the trainer keeps
    return max(eligible, key=lambda r: r.get("selection", r["macro_f1"]))


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summary(title: str, rows: dict[str, list[dict]]) -> None:
    print(f"\n{title}\n")
    print("| model | seeds | ISA F1 mean ± sd | macro-F1 mean ± sd |")
    print("|---|---:|---:|---:|")
    for arch, scores in rows.items():
        if scores:
            f1, macro = [s["f1"] for s in scores], [s["macro_f1"] for s in scores]
            print(f"| {arch} | {len(scores)} | {mean_sd(f1)} | {mean_sd(macro)} |")
    if all(rows.get(a) for a in ARCHS):
        gap = statistics.mean(s["f1"] for s in rows["jointseg"]) - statistics.mean(
            s["f1"] for s in rows["bilinear"]
        )
        print(f"\nJointSeg - bilinear, mean ISA F1: {100 * gap:+.1f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs", type=Path)
    parser.add_argument("--dubai", type=Path, default=None, help="also score the test tiles")
    args = parser.parse_args()
    print(
        "| model | seed | step | ISA F1 | precision | recall | macro-F1 | real AUC | SR PSNR dB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    val: dict[str, list[dict]] = {}
    runs: dict[str, list[Path]] = {}
    for arch in ARCHS:
        runs[arch] = [r for r in sorted(args.runs.glob(f"{arch}-s[0-9]*")) if r.is_dir()]
        runs[arch] = [r for r in runs[arch] if (r / "best.safetensors").exists()]
        val[arch] = []
        for run in runs[arch]:
            training = read_weights(run / "best.safetensors").metadata["training"]
            best = best_evaluation(run, training["sr_warmup"])
            val[arch].append(best)
            psnr = f"{best['psnr_model']:.2f}" if "psnr_model" in best else "—"
            auc = f"{best['real_auc']:.3f}" if "real_auc" in best else "—"
            print(
                f"| {arch} | {run.name.rsplit('-s', 1)[1]} | {best['step']} | {best['f1']:.3f} "
                f"| {best['precision']:.3f} | {best['recall']:.3f} | {best['macro_f1']:.3f} "
                f"| {auc} | {psnr} |"
            )
    summary("Validation places (they selected each run's checkpoint):", val)
    js = val["jointseg"]
    if js and all("psnr_model" in b for b in js):
        print(
            "JointSeg SR PSNR on the validation places (mean over seeds): "
            f"{statistics.mean(b['psnr_model'] for b in js):.2f} dB; bilinear up-sampling "
            f"{statistics.mean(b['psnr_bilinear'] for b in js):.2f} dB; bicubic "
            f"{statistics.mean(b['psnr_bicubic'] for b in js):.2f} dB"
        )
    if args.dubai is None:
        return
    from xjointseg import load_model
    from xjointseg.training.evaluation import aerial_scores
    from xjointseg.training.splits import DUBAI_SPLITS

    print("\n| model | seed | test ISA F1 | precision | recall | macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    test: dict[str, list[dict]] = {}
    for arch in ARCHS:
        test[arch] = []
        for run in runs[arch]:
            s = aerial_scores(
                load_model(run / "best.safetensors"), args.dubai, DUBAI_SPLITS["test"]
            )
            test[arch].append(s)
            print(
                f"| {arch} | {run.name.rsplit('-s', 1)[1]} | {s['f1']:.3f} | {s['precision']:.3f} "
                f"| {s['recall']:.3f} | {s['macro_f1']:.3f} |"
            )
    summary(
        f"Test places ({', '.join(DUBAI_SPLITS['test'])}; never trained on nor selected on):", test
    )


if __name__ == "__main__":
    main()
