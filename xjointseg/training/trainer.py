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
import torch.nn.functional as F

from .._system import cpu_has_bf16 as _cpu_has_bf16
from ..errors import OutputExistsError, XJointSegError
from ..metrics import confusion, roc_auc, scores_from_counts
from ..models.base import ISANetwork
from ..models.decision import MaskRule
from .datasets import IGNORE, SCALE, WEAK_BUILT, WEAK_NEGATIVE, Scene, TrainingDataError, WeakScene
from .losses import (
    discriminator_loss,
    fraction_loss,
    generator_adversarial_loss,
    prior_consistency_loss,
    segmentation_loss,
    sr_l1,
    weak_loss,
)
from .simulate import DEFAULT_OFFSET, hr_dn, simulate_sentinel2

#: The mask of logits before a model's rule is chosen: probability >= 0.5.
PLAIN = MaskRule()


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


def _augment(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / rot90 on every (..., H, W) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def scene_weights(scenes: list[Scene], weak_weight: float) -> np.ndarray:
    """Sampling probabilities in proportion to how much supervision a scene carries: clean
    labels count fully, weak negatives by their loss weight, ignored pixels not at all."""
    w = np.array(
        [
            np.count_nonzero(s.label <= 1)
            + weak_weight * np.count_nonzero(s.label == WEAK_NEGATIVE)
            for s in scenes
        ],
        dtype=np.float64,
    )
    if w.sum() == 0:
        raise TrainingDataError("no scene has a usable label: every pixel is ignored")
    return w / w.sum()


def _crop_origin(n: int, p: int, c: int, rng: np.random.Generator) -> int:
    """First pixel of a crop of ``p`` in a scene of ``n``, with ``c`` pixels of context inside
    the scene on both sides where it fits (else as much as the scene has)."""
    if n >= p + 2 * c:
        return int(rng.integers(n - p - 2 * c + 1)) + c
    return int(rng.integers(max(n - p, 0) + 1))


class SimulationCache:
    """Simulated 10 m versions of the training scenes, made once and reused.

    Simulating the window around every crop would cost more than the training step (the
    blur runs at 1 m over the whole receptive field). Instead each scene is simulated whole,
    ``versions`` times with its own random radiometry (drawn from ``(seed, scene, version)``,
    so a resumed run sees the same inputs), when first drawn; a crop then takes its input
    from one version and makes its 1 m target with that version's gain and offset.
    """

    def __init__(self, versions: int, augment: bool, seed: int) -> None:
        self.versions, self.augment, self.seed = versions, augment, seed
        self._made: dict[tuple[int, int], tuple[np.ndarray, dict]] = {}

    def get(self, index: int, scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        if scene.lr is not None:  # a real 10 m input: nothing to simulate
            return scene.lr, {}
        key = (index, int(rng.integers(self.versions)))
        if key not in self._made:
            draw = np.random.default_rng([self.seed, *key])
            # a scene without lr has hr
            self._made[key] = simulate_sentinel2(
                cast(np.ndarray, scene.hr), augment=self.augment, rng=draw, return_radiometry=True
            )
        return self._made[key]


def sample_batch(
    scenes: list[Scene],
    cfg: TrainConfig,
    context: int,
    fill: np.ndarray,
    rng: np.random.Generator,
    cache: SimulationCache | None = None,
):
    """Random crops aligned to the 10 m grid: (input with context, 1 m target or None, label)."""
    xs, hrs, labels = [], [], []
    p, c = cfg.crop, context
    cache = cache or SimulationCache(1, cfg.radiometry_augment, cfg.seed)
    weights = scene_weights(scenes, cfg.weak_weight)
    for _ in range(cfg.batch_size):
        index = int(rng.choice(len(scenes), p=weights))
        scene = scenes[index]
        h, w = scene.label.shape[0] // SCALE, scene.label.shape[1] // SCALE
        y0, x0 = _crop_origin(h, p, c, rng), _crop_origin(w, p, c, rng)
        lr, radiometry = cache.get(index, scene, rng)
        big = _window(lr, y0, x0, p, c, fill)
        label = np.full((p * SCALE, p * SCALE), IGNORE, np.uint8)
        hr_crop = np.zeros((3, p * SCALE, p * SCALE), np.float32)
        yy, xx = min(p, h - y0), min(p, w - x0)
        ys, xs_ = slice(y0 * SCALE, (y0 + yy) * SCALE), slice(x0 * SCALE, (x0 + xx) * SCALE)
        label[: yy * SCALE, : xx * SCALE] = scene.label[ys, xs_]
        if radiometry:
            # radiometry comes only with a simulation from hr
            hr_crop[:, : yy * SCALE, : xx * SCALE] = hr_dn(
                cast(np.ndarray, scene.hr)[ys, xs_], **radiometry
            )
        big, label, hr_crop = _augment([big, label, hr_crop], rng)
        xs.append(big)
        labels.append(label)
        hrs.append(hr_crop if radiometry else None)
    has_hr = all(h is not None for h in hrs)
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(cast("list[np.ndarray]", hrs))) if has_hr else None,
        torch.from_numpy(np.stack(labels)),
    )


def _window(lr: np.ndarray, y0: int, x0: int, p: int, c: int, fill: np.ndarray) -> np.ndarray:
    """``lr[:, y0-c : y0+p+c, x0-c : x0+p+c]`` with ``fill`` beyond the scene and for NaN."""
    h, w = lr.shape[1:]
    big = np.broadcast_to(fill[:, None, None], (3, p + 2 * c, p + 2 * c)).copy()
    ya, yb, xa, xb = max(y0 - c, 0), min(y0 + p + c, h), max(x0 - c, 0), min(x0 + p + c, w)
    part = lr[:, ya:yb, xa:xb]
    big[:, ya - (y0 - c) : yb - (y0 - c), xa - (x0 - c) : xb - (x0 - c)] = np.where(
        np.isnan(part), fill[:, None, None], part
    )
    return big


def _crop_labels(labels: np.ndarray, y0: int, x0: int, p: int) -> np.ndarray:
    out = np.full((p, p), IGNORE, np.uint8)
    part = labels[y0 : y0 + p, x0 : x0 + p]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def sample_real_batch(
    scenes: list[WeakScene],
    cfg: TrainConfig,
    context: int,
    fill: np.ndarray,
    rng,
    crop: int | None = None,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real crops with ``context`` pixels of real context, and their weak 10 m labels.

    Radiometric augmentation (with ``radiometry_augment``): a gain of x0.9-1.1 per crop, and
    up to the simulator's whole path-radiance offset removed, so L1C training images also
    stand in for atmospherically corrected ones.
    """
    p = crop or cfg.crop
    counts = np.array([s.labelled for s in scenes], np.float64)
    xs, labels = [], []
    for _ in range(batch_size or cfg.real_batch_size):
        scene = scenes[int(rng.choice(len(scenes), p=counts / counts.sum()))]
        h, w = scene.weak.shape
        y0, x0 = _crop_origin(h, p, context, rng), _crop_origin(w, p, context, rng)
        x = _window(scene.lr, y0, x0, p, context, fill)
        if cfg.radiometry_augment:
            haze = 10000 * np.asarray(DEFAULT_OFFSET, np.float32) * rng.uniform(0, 1)
            x = np.clip((x - haze[:, None, None]) * rng.uniform(0.9, 1.1), 1, None)
        x, label = _augment([x.astype(np.float32), _crop_labels(scene.weak, y0, x0, p)], rng)
        xs.append(x)
        labels.append(label)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(labels))


def real_validation_windows(
    scenes: list[WeakScene], context: int, size: int = 32, per_scene: int = 4, seed: int = 1234
) -> list[tuple]:
    """Fixed windows of each real validation scene: (scene, origin, built class, weak)."""
    rng = np.random.default_rng(seed)
    out = []
    for scene in scenes:
        if scene.built_class is None:
            raise TrainingDataError(f"{scene.name}: a validation scene needs its built class")
        h, w = scene.weak.shape
        for _ in range(per_scene):
            y0, x0 = _crop_origin(h, size, context, rng), _crop_origin(w, size, context, rng)
            built = _crop_labels(scene.built_class, y0, x0, size)
            out.append((scene, (y0, x0), built, _crop_labels(scene.weak, y0, x0, size)))
    return out


@torch.inference_mode()
def real_validation_logits(net: ISANetwork, windows: list[tuple], context: int) -> list:
    """The 1 m logits of each real validation window (as float32 numpy)."""
    net.eval()
    fill = net.band_mean.view(-1).cpu().numpy()
    device = next(net.parameters()).device
    out = []
    for scene, (y0, x0), built, _ in windows:
        x = _window(scene.lr, y0, x0, built.shape[0], context, fill)
        out.append(net.segment_logits(torch.from_numpy(x)[None].to(device), context)[0, 0])
    net.train()
    return [t.float().cpu().numpy() for t in out]


def real_scores_at(logits: list, windows: list[tuple], rule: MaskRule = PLAIN) -> dict:
    """ROC AUC of each 10 m pixel's share of 1 m ISA (the mask ``rule`` makes) against
    the built class, pooled over windows; and the mean ISA share in confidently built-up and
    in confidently not built-up 10 m pixels."""
    fracs = [
        rule.numpy(lg).reshape(lg.shape[0] // SCALE, SCALE, -1, SCALE).mean(axis=(1, 3)).ravel()
        for lg in logits
    ]
    frac = np.concatenate(fracs)
    ref = np.concatenate([w[2].ravel() for w in windows])
    weak = np.concatenate([w[3].ravel() for w in windows])
    return {
        "real_auc": roc_auc(frac, ref),
        "real_share_built": float(frac[weak == WEAK_BUILT].mean()),
        "real_share_not_built": float(frac[weak == 0].mean()),
    }


def evaluate_real(
    net: ISANetwork, windows: list[tuple], context: int, rule: MaskRule = PLAIN
) -> dict:
    """:func:`real_scores_at` of the network's logits on the windows."""
    return real_scores_at(real_validation_logits(net, windows, context), windows, rule)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 10000.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    if not np.isfinite(mse):
        return float("nan")  # a diverged SR branch: reported, not a crash
    return 10 * math.log10(peak**2 / mse) if mse > 0 else float("inf")


def validation_inputs(scenes: list[Scene], seed: int = 1234, **radiometry) -> list[tuple]:
    """Simulate each held-out scene once, with a fixed seed: (10 m input, 1 m target, label).

    ``radiometry``: ``gain`` / ``offset`` of the simulation, if not the defaults."""
    rng = np.random.default_rng(seed)
    out = []
    for scene in scenes:
        if scene.lr is not None:
            out.append((scene.lr, None, scene.label))
        else:
            # a scene without lr has hr
            lr, hr = simulate_sentinel2(
                cast(np.ndarray, scene.hr), rng=rng, return_hr=True, **radiometry
            )
            out.append((lr, hr, scene.label))
    return out


@torch.inference_mode()
def validation_outputs(net: ISANetwork, inputs: list[tuple], context: int) -> list[dict]:
    """The network on whole held-out scenes: 1 m logits and SR image (float32 numpy)."""
    net.eval()
    fill = net.band_mean.view(-1).cpu().numpy()
    device = next(net.parameters()).device
    outs = []
    for lr, _, _ in inputs:
        shape = (3, lr.shape[1] + 2 * context, lr.shape[2] + 2 * context)
        x = np.broadcast_to(fill[:, None, None], shape).copy()
        x[:, context : context + lr.shape[1], context : context + lr.shape[2]] = lr
        out = net(torch.from_numpy(x)[None].to(device), context)
        sr = out["sr"][0].float().cpu().numpy() if out["sr"] is not None else None
        outs.append({"logits": out["logits"][0, 0].float().cpu().numpy(), "sr": sr})
    net.train()
    return outs


def scores_at(outputs: list[dict], inputs: list[tuple], rule: MaskRule = PLAIN) -> dict:
    """Scores of the mask ``rule`` makes of :func:`validation_outputs`' logits, plus the SR
    image's PSNR (DN, peak 10000) against the 1 m target, next to bilinear and bicubic
    upsampling of the same input."""
    conf = dict.fromkeys(("tp", "fp", "fn", "tn"), 0)
    psnr: dict[str, list[float]] = {"model": [], "bilinear": [], "bicubic": []}
    for out, (lr, hr, label) in zip(outputs, inputs, strict=True):
        pred = rule.numpy(out["logits"]).astype(np.uint8)
        # only clean labels are scored: weak negatives (2) and ignored pixels (255) are not
        for k, v in confusion(pred, label, ignore=(WEAK_NEGATIVE, IGNORE)).items():
            conf[k] += v
        if hr is not None and out["sr"] is not None:
            t = torch.from_numpy(lr)[None]
            psnr["model"].append(_psnr(out["sr"], hr))
            for mode in ("bilinear", "bicubic"):
                up = F.interpolate(t, scale_factor=SCALE, mode=mode, align_corners=False)
                psnr[mode].append(_psnr(up[0].numpy(), hr))
    result = scores_from_counts(conf)
    for k, values in psnr.items():
        if values:
            result[f"psnr_{k}"] = float(np.mean(values))
    return result


def evaluate(net: ISANetwork, inputs: list[tuple], context: int, rule: MaskRule = PLAIN) -> dict:
    """:func:`scores_at` of the network on whole held-out scenes."""
    return scores_at(validation_outputs(net, inputs, context), inputs, rule)


def band_statistics(
    scenes: list[Scene], seed: int = 0, real: list[WeakScene] | None = None
) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the 10 m inputs (simulated, and real when given, half and
    half): the network's normalisation."""
    rng = np.random.default_rng(seed)

    def pooled(items, get):
        values = [get(s).reshape(3, -1) for s in items[:: max(1, len(items) // 20)]]
        v = np.concatenate(values, axis=1)
        return v[:, ~np.isnan(v).any(0)]

    parts = [
        pooled(scenes, lambda s: s.lr if s.lr is not None else simulate_sentinel2(s.hr, rng=rng))
    ]
    if real:
        parts.append(pooled(real, lambda s: s.lr))
    mean = np.mean([p.mean(1) for p in parts], axis=0)
    var = np.mean([p.var(1) + (p.mean(1) - mean) ** 2 for p in parts], axis=0)
    return mean.tolist(), np.maximum(np.sqrt(var), 1.0).tolist()


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
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
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
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)  # RRDB trunks can spike
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
