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

With ``anchor_sources`` the crops of those aerial sources leave the labelled batches and form
a third kind: their labels unused, the network's outputs held to those of its starting
weights (:func:`~xjointseg.training.losses.anchor_loss`), so one source can teach something
new while another keeps what the start does well.

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

import copy
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import torch

from .._system import cpu_has_bf16 as _cpu_has_bf16
from ..models.base import ISANetwork
from ..models.decision import MaskRule
from .batches import (
    SimulationCache,
    date_pairs,
    sample_batch,
    sample_pair_batch,
    sample_real_batch,
    sample_wald_batch,
    scene_source,
    scene_weights,
)
from .checkpoints import (
    CheckpointError,
    refuse_other_run,
    resume,
    save_checkpoint,
    write_history,
)
from .datasets import Scene, TrainingDataError, WeakScene
from .losses import (
    anchor_loss,
    date_consistency_loss,
    discriminator_loss,
    fraction_loss,
    generator_adversarial_loss,
    placement_loss,
    prior_consistency_loss,
    segmentation_loss,
    skeleton_recall_loss,
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
    # part of the aerial crops per source (batches.scene_weights); {}: by supervision
    source_shares: dict[str, float] = field(default_factory=dict)
    pos_weight: float = 2.0  # BCE weight of ISA pixels in the 1 m loss
    dice_weight: float = 1.0  # soft Dice in the 1 m loss (0: BCE alone)
    fraction_weight: float = 1.0  # the 10 m prior against the labels' ISA fraction
    real_batch_size: int = 8  # real Sentinel-2 crops with weak 10 m labels per step
    real_weight: float = 2.0
    built_floor: float = 0.4  # ISA share a confidently built-up 10 m pixel must reach
    not_built_max: float = 15.0  # real labels: Dynamic World built % of a negative (recorded)
    hard_negatives: float = 0.0  # weak loss: also the mean of the hardest negatives' share
    mask_sharpness: float = 1.0  # weak loss on sigmoid(k * logit): k > 1 nears the 0/1 mask
    consistency_weight: float = 0.0  # real crops: 1 m share held to the 10 m prior's
    placement_weight: float = 0.0  # ranking inside mixed 10 m pixels (losses.placement_loss)
    skeleton_weight: float = 0.0  # recall along the labels' centrelines (skeleton_recall_loss)
    date_weight: float = 0.0  # two dates of a real place agree on stable land
    date_batch_size: int = 4  # window pairs per step for date_weight
    wald_weight: float = 0.0  # SR L1 on real crops degraded 10x (Wald's protocol)
    wald_batch_size: int = 2  # real crops per step for wald_weight
    wald_crop: int = 200  # their side in 10 m pixels (a multiple of 10)
    # crops of these aerial sources hold the network to its --init-from weights (anchor_loss)
    # instead of training on their labels: what the start does well there is kept
    anchor_sources: list[str] = field(default_factory=list)
    anchor_weight: float = 0.0
    anchor_batch_size: int = 8
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
    from ..progress import bar as progress_bar

    # the mask that selection scores (checked before any work: MaskRule refuses other kinds)
    rule = MaskRule(cast("Literal['threshold', 'fraction']", cfg.mask_rule))
    _refuse_empty_sets(train_scenes, val_scenes)
    train_scenes, anchor_scenes = _anchor_split(train_scenes, cfg)
    scene_weights(train_scenes, cfg.weak_weight, cfg.source_shares)  # shares checked
    pairs = _training_pairs(cfg, real_train)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _set_up(cfg, train_scenes, real_train, pairs, anchor_scenes)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = resume(ckpt, run)
        write_history(out, state)  # an evaluation after the checkpoint was redone: drop it
    else:
        refuse_other_run(out)
        state = {"step": 0, "best": -1.0, "best_eval": None, "stale": 0, "history": []}
    windows = real_validation_windows(real_val, run.context) if real_val else None
    validation = _Validation(validation_inputs(val_scenes), windows, rule)
    bar = progress_bar(
        cfg.steps, initial=state["step"], enabled=progress, desc=cfg.arch, unit="step"
    )
    started = time.perf_counter()
    run.net.train()
    while state["step"] < cfg.steps and state["stale"] < cfg.patience:
        loss = _train_step(run, state["step"])
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            scores = validation.scores(run.net, run.context)
            scores.update(step=state["step"], seconds=time.perf_counter() - started)
            state["history"].append(scores)
            _keep_if_best(run, state, scores, out / "best.safetensors")
            save_checkpoint(ckpt, run, state)
            write_history(out, state)  # after the checkpoint, so it never runs ahead of it
    bar.close()
    return {"best": state["best_eval"], "steps": state["step"], "out": str(out)}


class _Adversary(NamedTuple):
    """The discriminator of the adversarial term and its optimiser."""

    disc: torch.nn.Module
    opt: torch.optim.Optimizer


class _Anchor(NamedTuple):
    """The frozen starting network and the scenes whose crops it holds the network to."""

    teacher: ISANetwork
    scenes: list[Scene]
    draw_weights: np.ndarray
    sim_cache: SimulationCache


@dataclass
class TrainingRun:
    """What every step of a run works with: its network, optimisers and training data."""

    cfg: TrainConfig
    net: ISANetwork
    device: torch.device
    use_amp: bool
    context: int  # input pixels around each crop
    fill: np.ndarray  # the band means: a crop's window outside its scene
    band_std: torch.Tensor  # the SR and adversarial losses' unit, per band
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    adversary: _Adversary | None  # with adv_weight > 0
    train_scenes: list[Scene]
    draw_weights: np.ndarray  # each training scene's chance per crop (scene_weights)
    sim_cache: SimulationCache
    real_train: list[WeakScene] | None
    pairs: list[tuple[WeakScene, WeakScene]]  # two dates of a real place, for date_weight
    anchor: _Anchor | None  # with anchor_weight > 0

    def forward(self, x: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor | None]:
        """The network on a batch, with the run's context, device and autocast."""
        x = self.on_device(x)
        with self.autocast():
            return self.net(x, self.context, **kw)

    def on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=torch.channels_last)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)


@dataclass
class _Validation:
    """The held-out places, fixed for the run, and the mask rule their scores are taken at."""

    inputs: list[tuple]
    real_windows: list[tuple] | None
    rule: MaskRule

    def scores(self, net: ISANetwork, context: int) -> dict:
        """Macro-F1 (and, with real windows, ROC AUC) and the ``selection`` they make."""
        scores = evaluate(net, self.inputs, context, self.rule)
        scores["selection"] = scores["macro_f1"]
        if self.real_windows:
            scores.update(evaluate_real(net, self.real_windows, context, self.rule))
            scores["selection"] = (scores["macro_f1"] + scores["real_auc"]) / 2
        return scores


def _refuse_empty_sets(train_scenes: list[Scene], val_scenes: list[Scene]) -> None:
    if not train_scenes:
        raise TrainingDataError("the training set is empty after filtering")
    if not val_scenes:
        raise TrainingDataError("the validation set is empty: hold out at least one place")


def _anchor_split(scenes: list[Scene], cfg: TrainConfig) -> tuple[list[Scene], list[Scene]]:
    """The scenes trained on their labels, and those of ``cfg.anchor_sources`` (no label
    used: their crops hold the network to its starting weights)."""
    if not cfg.anchor_sources and not cfg.anchor_weight:
        return scenes, []
    if not cfg.anchor_sources or cfg.anchor_weight <= 0:
        raise TrainingDataError(
            f"anchor_weight {cfg.anchor_weight} and anchor_sources {cfg.anchor_sources} go "
            "together: give a positive weight and the sources whose crops it holds"
        )
    if cfg.init_from is None:
        raise TrainingDataError(
            "anchor_weight holds the network to the weights it starts from: give init_from"
        )
    sources = [scene_source(s) for s in scenes]
    unknown = sorted(set(cfg.anchor_sources) - set(sources))
    if unknown:
        raise TrainingDataError(
            f"anchor_sources name {unknown}, which no training scene comes from (sources: "
            f"{sorted(set(sources))})"
        )
    labelled = [
        s for s, source in zip(scenes, sources, strict=True) if source not in cfg.anchor_sources
    ]
    if not labelled:
        raise TrainingDataError(
            f"anchor_sources {cfg.anchor_sources} take every training scene: nothing is left "
            "to train on its labels"
        )
    anchored = [
        s for s, source in zip(scenes, sources, strict=True) if source in cfg.anchor_sources
    ]
    return labelled, anchored


def _training_pairs(
    cfg: TrainConfig, real_train: list[WeakScene] | None
) -> list[tuple[WeakScene, WeakScene]]:
    """The date pairs the date term trains on; none without ``date_weight``."""
    pairs = date_pairs(real_train or []) if cfg.date_weight else []
    if cfg.date_weight and not pairs:
        raise TrainingDataError(
            "date_weight needs real scenes with two dates of one place on one grid "
            "(e.g. load_oscd: both dates of each city)"
        )
    return pairs


def _set_up(
    cfg: TrainConfig,
    train_scenes: list[Scene],
    real_train: list[WeakScene] | None,
    pairs: list[tuple[WeakScene, WeakScene]],
    anchor_scenes: list[Scene] | None = None,
) -> TrainingRun:
    """Seed the run, then make its network, optimiser, schedule, discriminator and anchor."""
    from ..models.model import resolve_device

    _set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    net, mean = _network(cfg, train_scenes, real_train, device)
    anchor = None
    if anchor_scenes:
        # the starting weights, before any step (a resumed run reloads them the same way)
        teacher = copy.deepcopy(net).eval().requires_grad_(False)
        anchor = _Anchor(
            teacher,
            anchor_scenes,
            scene_weights(anchor_scenes, cfg.weak_weight),
            SimulationCache(cfg.sim_versions, cfg.radiometry_augment, cfg.seed + 1),
        )
    opt = torch.optim.Adam(_trainable(net, cfg.train_only), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, cfg.steps))
    adversary = None
    if cfg.adv_weight > 0:
        from ..models.discriminator import UNetDiscriminatorSN

        disc = UNetDiscriminatorSN(in_channels=3).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr / 2, betas=(0.5, 0.999))
        adversary = _Adversary(disc, disc_opt)
    return TrainingRun(
        cfg=cfg,
        net=net,
        device=device,
        use_amp=cfg.amp and (device.type == "cuda" or _cpu_has_bf16()),
        context=net.halo if cfg.context is None else cfg.context,
        fill=np.asarray(mean, np.float32),
        band_std=net.band_std.to(device),
        opt=opt,
        sched=sched,
        adversary=adversary,
        train_scenes=train_scenes,
        draw_weights=scene_weights(train_scenes, cfg.weak_weight, cfg.source_shares),
        sim_cache=SimulationCache(cfg.sim_versions, cfg.radiometry_augment, cfg.seed),
        real_train=real_train,
        pairs=pairs,
        anchor=anchor,
    )


def _network(
    cfg: TrainConfig,
    train_scenes: list[Scene],
    real_train: list[WeakScene] | None,
    device: torch.device,
) -> tuple[ISANetwork, list[float]]:
    """A fresh network, or one started from ``cfg.init_from``, on ``device``; and its band
    means."""
    from ..models.architectures import build_network, default_config

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
    return net, mean


def _train_step(run: TrainingRun, step: int) -> torch.Tensor:
    """One optimiser step (and, with the adversarial term, one of the discriminator's);
    returns the step's loss."""
    cfg = run.cfg
    # crops drawn from (seed, step): a resumed run redoes exactly the steps it lost
    rng = np.random.default_rng([cfg.seed, step])
    x, hr, label = sample_batch(
        run.train_scenes, cfg, run.context, run.fill, rng, run.sim_cache, run.draw_weights
    )
    pred = run.forward(x)
    label = label.to(run.device)
    sr = pred["sr"]
    warm = step < cfg.sr_warmup and sr is not None
    if sr is not None and hr is not None:
        hr = hr.to(run.device)
    loss = torch.zeros((), device=run.device)
    for term in _loss_terms(run, pred, hr, label, rng, warm):
        loss = loss + term
    run.opt.zero_grad()
    loss.backward()
    # RRDB trunks can spike
    torch.nn.utils.clip_grad_norm_(run.opt.param_groups[0]["params"], cfg.clip_grad)
    run.opt.step()
    if run.adversary is not None and hr is not None and sr is not None and not warm:
        # after the generator step, on the detached SR image: the two never share a graph
        run.adversary.opt.zero_grad()
        discriminator_loss(run.adversary.disc, sr, hr, run.band_std).backward()
        run.adversary.opt.step()
    run.sched.step()
    return loss


def _loss_terms(
    run: TrainingRun,
    pred: dict[str, torch.Tensor | None],
    hr: torch.Tensor | None,
    label: torch.Tensor,
    rng: np.random.Generator,
    warm: bool,
) -> Iterator[torch.Tensor]:
    """The step's weighted loss terms, in the order they are summed: the SR terms (in the
    warm-up the SR L1 alone), then the 1 m labels' terms and the real batches' terms."""
    cfg, sr = run.cfg, pred["sr"]
    if sr is not None and hr is not None:
        yield cfg.sr_weight * sr_l1(sr, hr, run.band_std)
        if run.adversary is not None and not warm:
            yield cfg.adv_weight * generator_adversarial_loss(run.adversary.disc, sr, run.band_std)
    if warm:
        return
    yield from _label_terms(cfg, pred, label)
    if run.real_train and cfg.real_batch_size > 0:
        yield from _weak_terms(run, run.real_train, rng)
    if run.pairs:
        yield _date_term(run, rng)
    if run.real_train and cfg.prior_batch_size > 0 and hasattr(run.net, "prior_logits"):
        yield _prior_term(run, run.real_train, rng)
    if run.real_train and cfg.wald_weight and sr is not None:
        yield _wald_term(run, run.real_train, rng)
    if run.anchor is not None:
        yield _anchor_term(run, run.anchor, rng)


def _label_terms(
    cfg: TrainConfig, pred: dict[str, torch.Tensor | None], label: torch.Tensor
) -> Iterator[torch.Tensor]:
    """The simulated crops against their 1 m labels: segmentation, placement inside mixed
    10 m pixels, and the 10 m prior against each pixel's ISA fraction."""
    logits = cast(torch.Tensor, pred["logits"])
    yield cfg.seg_weight * segmentation_loss(
        logits, label, cfg.weak_weight, cfg.pos_weight, cfg.dice_weight
    )
    if cfg.placement_weight:
        yield cfg.placement_weight * placement_loss(logits, label)
    if cfg.skeleton_weight:
        yield cfg.skeleton_weight * skeleton_recall_loss(logits, label)
    logits10 = pred.get("logits10")
    if logits10 is not None:
        yield cfg.fraction_weight * fraction_loss(logits10, label)


def _weak_terms(
    run: TrainingRun, real_train: list[WeakScene], rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    """Real crops against their weak 10 m labels, and their 1 m share against the 10 m
    prior."""
    cfg = run.cfg
    x, weak = sample_real_batch(real_train, cfg, run.context, run.fill, rng)
    real = run.forward(x, sr=False)
    logits = cast(torch.Tensor, real["logits"])
    logits10 = real.get("logits10")
    yield cfg.real_weight * weak_loss(
        logits,
        logits10,
        weak.to(run.device),
        cfg.built_floor,
        cfg.mask_sharpness,
        cfg.hard_negatives,
    )
    if cfg.consistency_weight and logits10 is not None:
        yield cfg.consistency_weight * prior_consistency_loss(logits, logits10, cfg.mask_sharpness)


def _date_term(run: TrainingRun, rng: np.random.Generator) -> torch.Tensor:
    """Two dates of a real place agree on land stable in both."""
    cfg = run.cfg
    xa, xb, stable = sample_pair_batch(
        run.pairs, run.context, run.fill, rng, cfg.crop, cfg.date_batch_size
    )
    # both dates in one batch: the first half is date a, the rest b
    dated = run.forward(torch.cat([xa, xb]), sr=False)
    n = len(xa)
    logits = cast(torch.Tensor, dated["logits"])
    prior = dated.get("logits10")
    return cfg.date_weight * date_consistency_loss(
        logits[:n],
        logits[n:],
        stable.to(run.device),
        None if prior is None else prior[:n],
        None if prior is None else prior[n:],
        cfg.mask_sharpness,
    )


def _wald_term(
    run: TrainingRun, real_train: list[WeakScene], rng: np.random.Generator
) -> torch.Tensor:
    """The SR branch restores real 10 m crops from their 10x degraded copies: real sensor
    structure for the 2.5 m and 1 m stages, which the aerial triples only simulate."""
    cfg = run.cfg
    x, target = sample_wald_batch(
        real_train, cfg.wald_crop, cfg.wald_batch_size, run.context, run.fill, rng
    )
    sr = cast(torch.Tensor, run.forward(x)["sr"])
    return cfg.wald_weight * sr_l1(sr, target.to(run.device), run.band_std)


def _anchor_term(run: TrainingRun, anchor: _Anchor, rng: np.random.Generator) -> torch.Tensor:
    """Crops of the anchor sources: the 1 m logits and the 10 m prior stay the starting
    network's (their labels are not used)."""
    cfg = run.cfg
    x, _, _ = sample_batch(
        anchor.scenes,
        replace(cfg, batch_size=cfg.anchor_batch_size),
        run.context,
        run.fill,
        rng,
        anchor.sim_cache,
        anchor.draw_weights,
    )
    student = run.forward(x, sr=False)
    with torch.no_grad(), run.autocast():
        teacher = anchor.teacher(run.on_device(x), run.context, sr=False)
    loss = anchor_loss(cast(torch.Tensor, student["logits"]), teacher["logits"])
    if student.get("logits10") is not None:
        loss = loss + anchor_loss(cast(torch.Tensor, student["logits10"]), teacher["logits10"])
    return cfg.anchor_weight * loss


def _prior_term(
    run: TrainingRun, real_train: list[WeakScene], rng: np.random.Generator
) -> torch.Tensor:
    """Many more real 10 m pixels against their weak labels, through the 10 m layers only."""
    cfg = run.cfg
    net: Any = run.net  # one with a 10 m prior: prior_logits and prior_halo
    margin = net.prior_halo
    x, weak = sample_real_batch(
        real_train, cfg, margin, run.fill, rng, cfg.prior_crop, cfg.prior_batch_size
    )
    x = run.on_device(x)
    with run.autocast():
        prior = net.prior_logits(x, margin)
    return cfg.real_weight * weak_loss(
        None, prior, weak.to(run.device), cfg.built_floor, hard_negatives=cfg.hard_negatives
    )


def _keep_if_best(run: TrainingRun, state: dict, scores: dict, path: Path) -> None:
    """Save the weights to ``path`` when ``scores`` select them over the best so far, else
    count the evaluation as stale; evaluations in the SR warm-up count for neither."""
    from ..models.weights import save_model

    cfg = run.cfg
    if scores["selection"] > state["best"] and state["step"] > cfg.sr_warmup:
        state.update(best=scores["selection"], best_eval=scores, stale=0)
        save_model(
            run.net.cpu(),
            path,
            name=cfg.arch,
            bands=("B04", "B03", "B02"),
            extra={"training": asdict(cfg), "metrics": scores, "mask_rule": cfg.mask_rule},
        )
        run.net.to(run.device)
    elif state["step"] > cfg.sr_warmup:
        state["stale"] += 1


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
