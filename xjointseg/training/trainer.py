"""Train a network on cross-resolution triples and on real Sentinel-2 with weak 10 m labels.

Two kinds of batch make one step:

* **triples** — a 10 m input simulated from a 1 m aerial image (the SR target) with 1 m ISA
  labels: SR L1 + segmentation loss on the 1 m outputs, and the 10 m prior against each 10 m
  pixel's ISA fraction (:func:`~xjointseg.training.losses.fraction_loss`);
* **weak** (when real scenes are given) — real Sentinel-2 crops with weak 10 m land-cover
  labels: :func:`~xjointseg.training.losses.weak_loss` on the 10 x 10 means of the 1 m ISA
  probability and on the 10 m prior. Its inputs are real sensor data, so the network learns
  the radiometry it meets at inference (L1C haze, winter, band ratios); the SR head is not
  run on them (there is no 1 m target).

Every crop is given ``context`` input pixels of context (by default the network's halo) from
inside its scene wherever the scene is large enough, as :func:`~xjointseg.segment` gives
every tile: the network trains on the receptive field it uses at inference.

Schedule: ``sr_warmup`` steps of super-resolution loss alone (the SR branch must learn
something before segmentation leans on it), then the joint loss
``sr_weight * L1 + seg_weight * (BCE + Dice) [+ adv_weight * GAN]``. Networks without an SR
branch (the bilinear baseline) train on the segmentation loss from the first step, for the
same number of steps, on the same crops.

Every ``eval_every`` steps the model is scored on the validation places: macro-F1 on the
simulated triples and, with real validation scenes, the ROC AUC of the 10 m mean of the 1 m
mask against the land-cover "built" class. The best weights by ``selection`` (macro-F1, or the
mean of macro-F1 and AUC) are kept, training stops early after ``patience`` evaluations without
improvement, and a checkpoint (network, optimiser, step, RNG state) is written so an
interrupted run resumes where it stopped, losing at most the steps since.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from .._system import cpu_has_bf16 as _cpu_has_bf16
from ..errors import OutputExistsError, XJointSegError
from ..models.base import ISANetwork
from ..models.decision import MaskRule

#: The mask of logits before a model's rule is chosen: probability >= 0.5.
from .batches import (
    SimulationCache,
    date_pairs,
    sample_batch,
    sample_pair_batch,
    sample_real_batch,
)
from .datasets import Scene, TrainingDataError, WeakScene
from .losses import (
    date_consistency_loss,
    discriminator_loss,
    fraction_loss,
    generator_adversarial_loss,
    placement_loss,
    prior_consistency_loss,
    segmentation_loss,
    sr_l1,
    weak_loss,
)
from .validation import (
    band_statistics,
    evaluate,
    evaluate_real,
    real_validation_windows,
    validation_inputs,
)


class CheckpointError(XJointSegError, ValueError):
    """A checkpoint cannot be resumed (another architecture or config, or a corrupt file)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved with the weights)."""

    arch: str = "jointseg"
    size: str = "lite"
    steps: int = 2000
    batch_size: int = 8
    crop: int = 16  # input pixels (10 m) of each crop whose outputs enter the loss
    context: int | None = None  # input pixels around each crop; None: the network's halo
    lr: float = 2e-3
    sr_warmup: int = 300
    sr_weight: float = 1.0
    seg_weight: float = 1.0
    adv_weight: float = 0.0
    weak_weight: float = 0.1  # loss weight of weak-negative 1 m labels (Massachusetts)
    pos_weight: float = 2.0  # BCE weight of ISA pixels in the 1 m loss
    dice_weight: float = 1.0  # soft Dice in the 1 m loss (0: BCE alone)
    fraction_weight: float = 1.0  # the 10 m prior against the labels' ISA fraction
    real_batch_size: int = 8  # real Sentinel-2 crops with weak 10 m labels per step
    real_weight: float = 2.0
    built_floor: float = 0.4  # ISA share a confidently built-up 10 m pixel must reach
    mask_sharpness: float = 1.0  # weak loss on sigmoid(k * logit): k > 1 nears the 0/1 mask
    consistency_weight: float = 0.0  # real crops: 1 m share held to the 10 m prior's
    placement_weight: float = 0.0  # ranking inside mixed 10 m pixels (losses.placement_loss)
    date_weight: float = 0.0  # two dates of a real place agree on stable land
    date_batch_size: int = 4  # window pairs per step for date_weight
    train_only: list[str] = field(default_factory=list)  # layer-name prefixes; []: all
    mask_rule: str = "fraction"  # how the saved weights' mask is made (models.decision)
    prior_batch_size: int = 8  # real crops per step that train the 10 m prior alone
    prior_crop: int = 48  # their side, in 10 m pixels (only the 10 m layers run on them)
    radiometry_augment: bool = True  # random gain / haze / MTF per simulation
    sim_versions: int = 6  # simulations of each training scene, each its own radiometry
    init_from: str | None = None  # weights to start from (layers of matching shape)
    eval_every: int = 200
    patience: int = 5
    clip_grad: float = 1.0
    amp: bool = True  # bf16 autocast: GPUs, and CPUs with AVX-512 BF16 / AMX
    threads: int | None = None  # torch CPU threads (None: torch's default)
    seed: int = 0
    device: str = "auto"
    val_places: list[str] = field(default_factory=list)
    real_places: list[str] = field(default_factory=list)  # real training places (recorded)
    real_val_places: list[str] = field(default_factory=list)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train(
    train_scenes: list[Scene],
    val_scenes: list[Scene],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    real_train: list[WeakScene] | None = None,
    real_val: list[WeakScene] | None = None,
    progress: bool = True,
) -> dict:
    """Train, evaluate, checkpoint; return the best validation scores and where things are.

    ``real_train`` / ``real_val``: real Sentinel-2 scenes with weak 10 m labels (e.g.
    :func:`~xjointseg.training.load_oscd`), trained on in weak batches and scored by ROC AUC.

    Writes to ``out_dir``: ``checkpoint.pt`` (resumable state), ``metrics.jsonl`` (one line
    per evaluation), ``best.safetensors`` (best weights by the validation ``selection``).
    A folder with a checkpoint resumes it (``metrics.jsonl`` then holds exactly the
    evaluations the checkpoint has seen); a folder with the other outputs but no checkpoint
    is refused (:class:`~xjointseg.errors.OutputExistsError`).
    """
    from ..models.architectures import build_network, default_config
    from ..models.model import resolve_device, save_model
    from ..progress import bar as progress_bar

    # the mask that selection scores (checked before any work: MaskRule refuses other kinds)
    rule = MaskRule(cast("Literal['threshold', 'fraction']", cfg.mask_rule))
    if not train_scenes:
        raise TrainingDataError("the training set is empty after filtering")
    if not val_scenes:
        raise TrainingDataError("the validation set is empty: hold out at least one place")
    pairs = date_pairs(real_train or []) if cfg.date_weight else []
    if cfg.date_weight and not pairs:
        raise TrainingDataError(
            "date_weight needs real scenes with two dates of one place on one grid "
            "(e.g. load_oscd: both dates of each city)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    start = _initial_weights(cfg)
    if start is not None:  # the normalisation is part of what the layers learned
        meta = start.metadata["config"]
        mean, std = meta["band_mean"], meta["band_std"]
    else:
        mean, std = band_statistics(train_scenes, cfg.seed, real_train)
    config = {**default_config(cfg.arch, cfg.size), "band_mean": mean, "band_std": std}
    net = build_network(cfg.arch, **config)
    if start is not None:
        _load_matching(net, start, cfg.init_from)
    # torch's stubs lack Module.to(memory_format=...), which torch accepts
    net = net.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(_trainable(net, cfg.train_only), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, cfg.steps))
    disc = disc_opt = None
    if cfg.adv_weight > 0:
        from ..models.discriminator import UNetDiscriminatorSN

        disc = UNetDiscriminatorSN(in_channels=3).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr / 2, betas=(0.5, 0.999))

    state: dict[str, Any] = {"step": 0, "best": -1.0, "best_eval": None, "stale": 0, "history": []}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = _resume(ckpt, cfg, net, opt, sched, disc, disc_opt)
        _write_history(out, state)  # an evaluation after the checkpoint was redone: drop it
    else:
        _refuse_other_run(out)
    fill = np.asarray(mean, np.float32)
    std_t = net.band_std.to(device)
    use_amp = cfg.amp and (device.type == "cuda" or _cpu_has_bf16())
    context = net.halo if cfg.context is None else cfg.context
    val_inputs = validation_inputs(val_scenes)
    real_windows = real_validation_windows(real_val, context) if real_val else None
    sim_cache = SimulationCache(cfg.sim_versions, cfg.radiometry_augment, cfg.seed)
    bar = progress_bar(
        cfg.steps, initial=state["step"], enabled=progress, desc=cfg.arch, unit="step"
    )
    started = time.perf_counter()
    net.train()
    while state["step"] < cfg.steps and state["stale"] < cfg.patience:
        # crops drawn from (seed, step): a resumed run redoes exactly the steps it lost
        rng = np.random.default_rng([cfg.seed, state["step"]])
        x, hr, label = sample_batch(train_scenes, cfg, context, fill, rng, sim_cache)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        label = label.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x, context)
        loss = torch.zeros((), device=device)
        warm = state["step"] < cfg.sr_warmup and pred["sr"] is not None
        if pred["sr"] is not None and hr is not None:
            hr = hr.to(device)
            loss = loss + cfg.sr_weight * sr_l1(pred["sr"], hr, std_t)
            if disc is not None and not warm:
                loss = loss + cfg.adv_weight * generator_adversarial_loss(disc, pred["sr"], std_t)
        if not warm:
            loss = loss + cfg.seg_weight * segmentation_loss(
                pred["logits"], label, cfg.weak_weight, cfg.pos_weight, cfg.dice_weight
            )
            if cfg.placement_weight:
                loss = loss + cfg.placement_weight * placement_loss(pred["logits"], label)
            if pred.get("logits10") is not None:
                loss = loss + cfg.fraction_weight * fraction_loss(pred["logits10"], label)
            if real_train and cfg.real_batch_size > 0:
                xr_, weak = sample_real_batch(real_train, cfg, context, fill, rng)
                xr_ = xr_.to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    real = net(xr_, context, sr=False)
                loss = loss + cfg.real_weight * weak_loss(
                    real["logits"],
                    real.get("logits10"),
                    weak.to(device),
                    cfg.built_floor,
                    cfg.mask_sharpness,
                )
                if cfg.consistency_weight and real.get("logits10") is not None:
                    loss = loss + cfg.consistency_weight * prior_consistency_loss(
                        real["logits"], real["logits10"], cfg.mask_sharpness
                    )
            if pairs:  # both dates in one batch: the first half is date a, the rest b
                xa, xb, stable = sample_pair_batch(
                    pairs, context, fill, rng, cfg.crop, cfg.date_batch_size
                )
                both = torch.cat([xa, xb]).to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    dated = net(both, context, sr=False)
                n = len(xa)
                prior = dated.get("logits10")
                loss = loss + cfg.date_weight * date_consistency_loss(
                    dated["logits"][:n],
                    dated["logits"][n:],
                    stable.to(device),
                    None if prior is None else prior[:n],
                    None if prior is None else prior[n:],
                    cfg.mask_sharpness,
                )
            if real_train and cfg.prior_batch_size > 0 and hasattr(net, "prior_logits"):
                # many more real 10 m pixels, through the 10 m layers only
                margin = net.prior_halo
                xp, weak = sample_real_batch(
                    real_train, cfg, margin, fill, rng, cfg.prior_crop, cfg.prior_batch_size
                )
                xp = xp.to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    prior = net.prior_logits(xp, margin)
                loss = loss + cfg.real_weight * weak_loss(
                    None, prior, weak.to(device), cfg.built_floor
                )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            opt.param_groups[0]["params"], cfg.clip_grad
        )  # RRDB trunks can spike
        opt.step()
        if disc is not None and hr is not None and pred["sr"] is not None and not warm:
            # after the generator step, on the detached SR image: the two never share a graph
            assert disc_opt is not None  # made with disc
            disc_opt.zero_grad()
            discriminator_loss(disc, pred["sr"], hr, std_t).backward()
            disc_opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            scores = evaluate(net, val_inputs, context, rule)
            scores["selection"] = scores["macro_f1"]
            if real_windows:
                scores.update(evaluate_real(net, real_windows, context, rule))
                scores["selection"] = (scores["macro_f1"] + scores["real_auc"]) / 2
            scores.update(step=state["step"], seconds=time.perf_counter() - started)
            state["history"].append(scores)
            if scores["selection"] > state["best"] and state["step"] > cfg.sr_warmup:
                state.update(best=scores["selection"], best_eval=scores, stale=0)
                save_model(
                    net.cpu(),
                    out / "best.safetensors",
                    name=cfg.arch,
                    bands=("B04", "B03", "B02"),
                    extra={"training": asdict(cfg), "metrics": scores, "mask_rule": cfg.mask_rule},
                )
                net.to(device)
            elif state["step"] > cfg.sr_warmup:
                state["stale"] += 1
            _checkpoint(ckpt, cfg, net, opt, sched, disc, disc_opt, state)
            _write_history(out, state)  # after the checkpoint, so it never runs ahead of it
    bar.close()
    return {"best": state["best_eval"], "steps": state["step"], "out": str(out)}


#: what a run writes in its folder besides checkpoint.pt
RUN_OUTPUTS = ("metrics.jsonl", "best.safetensors")


def _refuse_other_run(out: Path) -> None:
    """A fresh run never writes over another run's outputs (nor mixes its metrics with them)."""
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if found:
        raise OutputExistsError(
            f"{out} holds {', '.join(found)} of another run but no checkpoint.pt to resume: "
            "use another output folder, or move them away"
        )


def _write_history(out: Path, state: dict) -> None:
    """``metrics.jsonl``: one line per evaluation the checkpoint holds, replaced atomically."""
    tmp = out / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(scores) + "\n" for scores in state["history"]))
    tmp.replace(out / "metrics.jsonl")


def _initial_weights(cfg: TrainConfig):
    if cfg.init_from is None:
        return None
    from ..models.weights import read_weights

    start = read_weights(cfg.init_from)
    if start.metadata["arch"] != cfg.arch:
        raise CheckpointError(
            f"--init-from {cfg.init_from} holds a '{start.metadata['arch']}' network, not "
            f"'{cfg.arch}'"
        )
    return start


def _load_matching(net: ISANetwork, start, path) -> None:
    """Load every tensor of ``start`` into ``net``; only layers ``start`` lacks (added since it
    was trained) keep their initialisation. Anything else that differs is refused."""
    own = net.state_dict()
    unexpected = sorted(set(start.tensors) - set(own))
    wrong = sorted(k for k, v in start.tensors.items() if k in own and own[k].shape != v.shape)
    if unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit this '{net.arch}' config: unknown tensors {unexpected[:3]}, "
            f"other shapes {wrong[:3]}"
        )
    net.load_state_dict(start.tensors, strict=False)


def _trainable(net: ISANetwork, prefixes: list[str]) -> list[torch.nn.Parameter]:
    """The parameters to train: every one, or those whose names start with one of
    ``prefixes`` (the others are frozen: e.g. ``["fusion."]`` trains the 1 m head alone on
    a trunk that already ranks built-up land)."""
    if not prefixes:
        return list(net.parameters())
    chosen = []
    for name, param in net.named_parameters():
        param.requires_grad_(name.startswith(tuple(prefixes)))
        if param.requires_grad:
            chosen.append(param)
    if not chosen:
        layers = sorted({name.split(".")[0] for name, _ in net.named_parameters()})
        raise TrainingDataError(
            f"train_only {prefixes} names no layer of this '{net.arch}' network; its layers: "
            f"{', '.join(layers)}"
        )
    return chosen


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 5 %."""
    warm = max(1, total // 20)
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


def _checkpoint(path, cfg, net, opt, sched, disc, disc_opt, state) -> None:
    blob = {
        "config": asdict(cfg),
        "arch": net.arch,
        "net_config": net.config,
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "disc": disc.state_dict() if disc is not None else None,
        "disc_opt": disc_opt.state_dict() if disc_opt is not None else None,
        "state": state,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".partial")
    torch.save(blob, tmp)
    tmp.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def _resume(path, cfg, net, opt, sched, disc, disc_opt) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # no code runs
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}; delete it to start over"
        ) from exc
    if blob["arch"] != net.arch or blob["net_config"].keys() != net.config.keys():
        raise CheckpointError(
            f"{path} was written for architecture '{blob['arch']}', not '{net.arch}': use "
            "another output folder or delete the checkpoint"
        )
    try:
        net.load_state_dict(blob["net"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} holds another config of '{net.arch}': {exc}") from exc
    opt.load_state_dict(blob["opt"])
    sched.load_state_dict(blob["sched"])
    if disc is not None and blob["disc"] is not None:
        disc.load_state_dict(blob["disc"])
        disc_opt.load_state_dict(blob["disc_opt"])
    torch.set_rng_state(blob["torch_rng"])
    state = blob["state"]
    if "history" not in state:  # a checkpoint of an earlier version: its metrics file, trimmed
        metrics = Path(path).parent / "metrics.jsonl"
        rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
        state["history"] = [r for r in rows if r["step"] <= state["step"]]
    return state
