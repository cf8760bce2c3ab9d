"""Training curves of runs: validation scores against steps, one line per run.

    python scripts/plot_curves.py runs/real/jointseg-s0 runs/real/bilinear-s0 \
        [--out docs/training_curves.png]

Reads each run's ``metrics.jsonl`` (one line per evaluation) and plots the simulated
validation macro-F1 and, where the run had real validation scenes, the ROC AUC of the 1 m
map's 10 m fraction against Dynamic World "built". Also prints them as a table.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/training_curves.png"))
    args = parser.parse_args()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    print(
        "| run | step | macro-F1 (Dubai val) | ISA F1 | real AUC (OSCD val) "
        "| ISA share built / not |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for run in args.runs:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows]
        ax[0].plot(steps, [r["macro_f1"] for r in rows], marker="o", label=run.name)
        if "real_auc" in rows[0]:
            ax[1].plot(steps, [r["real_auc"] for r in rows], marker="o", label=run.name)
        for r in rows:
            auc = f"{r['real_auc']:.3f}" if "real_auc" in r else "—"
            shares = (
                f"{r['real_share_built']:.2f} / {r['real_share_not_built']:.2f}"
                if "real_share_built" in r
                else "—"
            )
            print(
                f"| {run.name} | {r['step']} | {r['macro_f1']:.3f} | {r['f1']:.3f} | {auc} "
                f"| {shares} |"
            )
    ax[0].set(xlabel="step", ylabel="macro-F1", title="simulated validation place (Dubai tile2)")
    ax[1].set(
        xlabel="step", ylabel="ROC AUC", title="real validation cities vs Dynamic World built"
    )
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
