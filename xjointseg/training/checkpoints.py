"""A training run's folder: ``checkpoint.pt`` (everything to resume), ``metrics.jsonl`` (one
line per evaluation, never ahead of the checkpoint) and the best weights. A fresh run never
writes over another run's outputs; a checkpoint is replaced atomically."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import OutputExistsError, XJointSegError

if TYPE_CHECKING:
    from .trainer import TrainingRun


class CheckpointError(XJointSegError, ValueError):
    """A checkpoint cannot be resumed (another architecture or config, or a corrupt file)."""


#: what a run writes in its folder besides checkpoint.pt
RUN_OUTPUTS = ("metrics.jsonl", "best.safetensors")


def refuse_other_run(out: Path) -> None:
    """A fresh run never writes over another run's outputs (nor mixes its metrics with them)."""
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if found:
        raise OutputExistsError(
            f"{out} holds {', '.join(found)} of another run but no checkpoint.pt to resume: "
            "use another output folder, or move them away"
        )


def write_history(out: Path, state: dict) -> None:
    """``metrics.jsonl``: one line per evaluation the checkpoint holds, replaced atomically."""
    tmp = out / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(scores) + "\n" for scores in state["history"]))
    tmp.replace(out / "metrics.jsonl")


def save_checkpoint(path: Path, run: TrainingRun, state: dict) -> None:
    """Write the run (network, optimisers, schedule, state, torch RNG) to ``path``."""
    disc, disc_opt = run.adversary or (None, None)
    blob = {
        "config": asdict(run.cfg),
        "arch": run.net.arch,
        "net_config": run.net.config,
        "net": run.net.state_dict(),
        "opt": run.opt.state_dict(),
        "sched": run.sched.state_dict(),
        "disc": disc.state_dict() if disc is not None else None,
        "disc_opt": disc_opt.state_dict() if disc_opt is not None else None,
        "state": state,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".partial")
    torch.save(blob, tmp)
    tmp.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def resume(path: Path, run: TrainingRun) -> dict:
    """Load a checkpoint into ``run`` (network, optimisers, schedule, torch RNG); return the
    run's state at it."""
    blob = _read(path)
    net = run.net
    if blob["arch"] != net.arch or blob["net_config"].keys() != net.config.keys():
        raise CheckpointError(
            f"{path} was written for architecture '{blob['arch']}', not '{net.arch}': use "
            "another output folder or delete the checkpoint"
        )
    try:
        net.load_state_dict(blob["net"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} holds another config of '{net.arch}': {exc}") from exc
    run.opt.load_state_dict(blob["opt"])
    run.sched.load_state_dict(blob["sched"])
    if run.adversary is not None and blob["disc"] is not None:
        run.adversary.disc.load_state_dict(blob["disc"])
        run.adversary.opt.load_state_dict(blob["disc_opt"])
    torch.set_rng_state(blob["torch_rng"])
    state = blob["state"]
    if "history" not in state:  # a checkpoint of an earlier version: its metrics file, trimmed
        state["history"] = _history_until(path.parent / "metrics.jsonl", state["step"])
    return state


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # no code runs
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}; delete it to start over"
        ) from exc


def _history_until(metrics: Path, step: int) -> list[dict]:
    """The evaluations of a metrics file up to ``step`` (none without the file)."""
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    return [r for r in rows if r["step"] <= step]
