"""Train a network on cross-resolution triples: simulated 10 m input, 1 m image, 1 m labels.

Schedule: ``sr_warmup`` steps of super-resolution loss alone (the SR branch must learn
something before segmentation leans on it), then the joint loss
``sr_weight * L1 + seg_weight * (BCE + Dice) [+ adv_weight * GAN]``. Networks without an SR
branch (the bilinear baseline) train on the segmentation loss from the first step, for the
same number of steps, on the same crops.

Every ``eval_every`` steps the model is scored on the held-out places; the best weights by
validation macro-F1 are kept, training stops early after ``patience`` evaluations without
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

import numpy as np
import torch
import torch.nn.functional as F

from .._system import cpu_has_bf16 as _cpu_has_bf16
from ..errors import XJointSegError
from ..models.base import ISANetwork
from .datasets import IGNORE, SCALE, WEAK_NEGATIVE, Scene, TrainingDataError
from .losses import discriminator_loss, generator_adversarial_loss, segmentation_loss, sr_l1
from .simulate import simulate_sentinel2


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
    context: int = 8  # extra input pixels around each crop (fill beyond the image)
    lr: float = 2e-3
    sr_warmup: int = 300
    sr_weight: float = 1.0
    seg_weight: float = 1.0
    adv_weight: float = 0.0
    weak_weight: float = 0.1
    radiometry_augment: bool = True  # random gain / haze / MTF per crop (simulated inputs)
    eval_every: int = 200
    patience: int = 5
    clip_grad: float = 1.0
    amp: bool = True  # bf16 autocast: GPUs, and CPUs with AVX-512 BF16 / AMX
    threads: int | None = None  # torch CPU threads (None: torch's default)
    seed: int = 0
    device: str = "auto"
    val_places: list[str] = field(default_factory=list)


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


BLUR_MARGIN = 2  # 10 m pixels simulated around a crop so its blur sees real neighbours


def sample_batch(scenes: list[Scene], cfg: TrainConfig, fill: np.ndarray, rng: np.random.Generator):
    """Random crops aligned to the 10 m grid: (input with context, 1 m target or None, label).

    Only the window around each crop is simulated (with a fresh random radiometry), so a
    sample costs the same whatever the scene size.
    """
    xs, hrs, labels = [], [], []
    p, c = cfg.crop, cfg.context
    weights = scene_weights(scenes, cfg.weak_weight)
    for _ in range(cfg.batch_size):
        scene = scenes[int(rng.choice(len(scenes), p=weights))]
        h, w = scene.label.shape[0] // SCALE, scene.label.shape[1] // SCALE
        y0 = int(rng.integers(max(h - p, 0) + 1))
        x0 = int(rng.integers(max(w - p, 0) + 1))
        # the input window (crop + context) clipped to the scene, and a blur margin around it
        ya, yb, xa, xb = max(y0 - c, 0), min(y0 + p + c, h), max(x0 - c, 0), min(x0 + p + c, w)
        wy0, wy1 = max(ya - BLUR_MARGIN, 0), min(yb + BLUR_MARGIN, h)
        wx0, wx1 = max(xa - BLUR_MARGIN, 0), min(xb + BLUR_MARGIN, w)
        if scene.lr is not None:
            lr, hr = scene.lr[:, wy0:wy1, wx0:wx1], None
        else:
            window = scene.hr[wy0 * SCALE : wy1 * SCALE, wx0 * SCALE : wx1 * SCALE]
            lr, hr = simulate_sentinel2(
                window, augment=cfg.radiometry_augment, rng=rng, return_hr=True
            )
        big = np.broadcast_to(fill[:, None, None], (3, p + 2 * c, p + 2 * c)).copy()
        big[:, ya - (y0 - c) : yb - (y0 - c), xa - (x0 - c) : xb - (x0 - c)] = lr[
            :, ya - wy0 : yb - wy0, xa - wx0 : xb - wx0
        ]
        label = np.full((p * SCALE, p * SCALE), IGNORE, np.uint8)
        hr_crop = np.zeros((3, p * SCALE, p * SCALE), np.float32)
        yy, xx = min(p, h - y0), min(p, w - x0)
        label[: yy * SCALE, : xx * SCALE] = scene.label[
            y0 * SCALE : (y0 + yy) * SCALE, x0 * SCALE : (x0 + xx) * SCALE
        ]
        if hr is not None:
            oy, ox = (y0 - wy0) * SCALE, (x0 - wx0) * SCALE
            hr_crop[:, : yy * SCALE, : xx * SCALE] = hr[
                :, oy : oy + yy * SCALE, ox : ox + xx * SCALE
            ]
        big, label, hr_crop = _augment([big, label, hr_crop], rng)
        xs.append(big)
        labels.append(label)
        hrs.append(hr_crop if hr is not None else None)
    has_hr = all(h is not None for h in hrs)
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(hrs)) if has_hr else None,
        torch.from_numpy(np.stack(labels)),
    )


def confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """[tp, fp, fn, tn] over pixels whose label is a clean 0 or 1."""
    clean = (label == 0) | (label == 1)
    p, t = pred[clean] == 1, label[clean] == 1
    return np.array([(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()], np.int64)


def scores_from_confusion(c: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = (float(v) for v in c)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    # the not-ISA class's F1, for the paper's macro-F1 over (ISA, not ISA)
    p0 = tn / (tn + fn) if tn + fn else 0.0
    r0 = tn / (tn + fp) if tn + fp else 0.0
    f0 = 2 * p0 * r0 / (p0 + r0) if p0 + r0 else 0.0
    return {
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "macro_f1": (f1 + f0) / 2,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
        "oa": (tp + tn) / max(tp + fp + fn + tn, 1.0),
    }


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 10000.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    if not np.isfinite(mse):
        return float("nan")  # a diverged SR branch: reported, not a crash
    return 10 * math.log10(peak**2 / mse) if mse > 0 else float("inf")


def validation_inputs(scenes: list[Scene], seed: int = 1234) -> list[tuple]:
    """Simulate each held-out scene once, with a fixed seed: (10 m input, 1 m target, label)."""
    rng = np.random.default_rng(seed)
    out = []
    for scene in scenes:
        if scene.lr is not None:
            out.append((scene.lr, None, scene.label))
        else:
            lr, hr = simulate_sentinel2(scene.hr, rng=rng, return_hr=True)
            out.append((lr, hr, scene.label))
    return out


@torch.inference_mode()
def evaluate(net: ISANetwork, inputs: list[tuple], context: int) -> dict:
    """Scores on whole held-out scenes, plus the SR image's PSNR (DN, peak 10000) against the
    1 m target, next to bilinear and bicubic upsampling of the same input."""
    net.eval()
    conf = np.zeros(4, np.int64)
    psnr = {"model": [], "bilinear": [], "bicubic": []}
    fill = net.band_mean.view(-1).cpu().numpy()
    device = next(net.parameters()).device
    for lr, hr, label in inputs:
        shape = (3, lr.shape[1] + 2 * context, lr.shape[2] + 2 * context)
        x = np.broadcast_to(fill[:, None, None], shape).copy()
        x[:, context : context + lr.shape[1], context : context + lr.shape[2]] = lr
        out = net(torch.from_numpy(x)[None].to(device), context)
        pred = (out["logits"][0, 0] >= 0).cpu().numpy().astype(np.uint8)
        conf += confusion(pred, label)
        if hr is not None and out["sr"] is not None:
            t = torch.from_numpy(lr)[None]
            psnr["model"].append(_psnr(out["sr"][0].float().cpu().numpy(), hr))
            for mode in ("bilinear", "bicubic"):
                up = F.interpolate(t, scale_factor=SCALE, mode=mode, align_corners=False)
                psnr[mode].append(_psnr(up[0].numpy(), hr))
    result = scores_from_confusion(conf)
    for k, v in psnr.items():
        if v:
            result[f"psnr_{k}"] = float(np.mean(v))
    net.train()
    return result


def band_statistics(scenes: list[Scene], seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-band mean and std of simulated (or real) 10 m inputs: the network's normalisation."""
    rng = np.random.default_rng(seed)
    values = []
    for scene in scenes[:: max(1, len(scenes) // 20)]:
        lr = scene.lr if scene.lr is not None else simulate_sentinel2(scene.hr, rng=rng)
        values.append(lr.reshape(3, -1))
    v = np.concatenate(values, axis=1)
    return v.mean(1).tolist(), np.maximum(v.std(1), 1.0).tolist()


def train(
    train_scenes: list[Scene],
    val_scenes: list[Scene],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> dict:
    """Train, evaluate, checkpoint; return the best validation scores and where things are.

    Writes to ``out_dir``: ``checkpoint.pt`` (resumable state), ``metrics.jsonl`` (one line
    per evaluation), ``best.safetensors`` (best weights by validation macro-F1).
    """
    from tqdm.auto import tqdm

    from ..models.architectures import build_network, default_config
    from ..models.model import resolve_device, save_model

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
    mean, std = band_statistics(train_scenes, cfg.seed)
    config = {**default_config(cfg.arch, cfg.size), "band_mean": mean, "band_std": std}
    net = build_network(cfg.arch, **config).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, cfg.steps))
    disc = disc_opt = None
    if cfg.adv_weight > 0:
        from ..models.discriminator import UNetDiscriminatorSN

        disc = UNetDiscriminatorSN(in_channels=3).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr / 2, betas=(0.5, 0.999))

    state = {"step": 0, "best": -1.0, "best_eval": None, "stale": 0}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = _resume(ckpt, cfg, net, opt, sched, disc, disc_opt)
    fill = np.asarray(mean, np.float32)
    std_t = net.band_std.to(device)
    use_amp = cfg.amp and (device.type == "cuda" or _cpu_has_bf16())
    val_inputs = validation_inputs(val_scenes)
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc=cfg.arch)
    started = time.perf_counter()
    net.train()
    while state["step"] < cfg.steps and state["stale"] < cfg.patience:
        # crops drawn from (seed, step): a resumed run redoes exactly the steps it lost
        rng = np.random.default_rng([cfg.seed, state["step"]])
        x, hr, label = sample_batch(train_scenes, cfg, fill, rng)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        label = label.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x, cfg.context)
        loss = torch.zeros((), device=device)
        warm = state["step"] < cfg.sr_warmup and pred["sr"] is not None
        if pred["sr"] is not None and hr is not None:
            hr = hr.to(device)
            loss = loss + cfg.sr_weight * sr_l1(pred["sr"], hr, std_t)
            if disc is not None and not warm:
                loss = loss + cfg.adv_weight * generator_adversarial_loss(disc, pred["sr"], std_t)
        if not warm:
            loss = loss + cfg.seg_weight * segmentation_loss(pred["logits"], label, cfg.weak_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)  # RRDB trunks can spike
        opt.step()
        if disc is not None and hr is not None and pred["sr"] is not None and not warm:
            # after the generator step, on the detached SR image: the two never share a graph
            disc_opt.zero_grad()
            discriminator_loss(disc, pred["sr"], hr, std_t).backward()
            disc_opt.step()
        sched.step()
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            scores = evaluate(net, val_inputs, cfg.context)
            scores.update(step=state["step"], seconds=time.perf_counter() - started)
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(scores) + "\n")
            if scores["macro_f1"] > state["best"] and state["step"] > cfg.sr_warmup:
                state.update(best=scores["macro_f1"], best_eval=scores, stale=0)
                save_model(
                    net.cpu(),
                    out / "best.safetensors",
                    name=cfg.arch,
                    bands=("B04", "B03", "B02"),
                    extra={"training": asdict(cfg), "metrics": scores},
                )
                net.to(device)
            elif state["step"] > cfg.sr_warmup:
                state["stale"] += 1
            _checkpoint(ckpt, cfg, net, opt, sched, disc, disc_opt, state)
    bar.close()
    return {"best": state["best_eval"], "steps": state["step"], "out": str(out)}


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
    return blob["state"]
