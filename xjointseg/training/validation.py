"""Validation during training: the held-out aerial places (simulated once, fixed) and the
real Sentinel-2 windows, scored at the mask rule; also the band statistics of the inputs."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import confusion, placement_counts, roc_auc, scores_from_counts, smooth_placement
from ..models.base import ISANetwork
from ..models.decision import MaskRule

#: The mask of logits before a model's rule is chosen: probability >= 0.5.
from .batches import crop_labels, crop_origin, window_of
from .datasets import IGNORE, SCALE, WEAK_BUILT, WEAK_NEGATIVE, Scene, TrainingDataError, WeakScene
from .simulate import simulate_sentinel2

#: The mask of logits before a model's rule is chosen: probability >= 0.5.
PLAIN = MaskRule()


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
            y0, x0 = crop_origin(h, size, context, rng), crop_origin(w, size, context, rng)
            built = crop_labels(scene.built_class, y0, x0, size)
            out.append((scene, (y0, x0), built, crop_labels(scene.weak, y0, x0, size)))
    return out


@torch.inference_mode()
def real_validation_logits(net: ISANetwork, windows: list[tuple], context: int) -> list:
    """The 1 m logits of each real validation window (as float32 numpy)."""
    net.eval()
    fill = net.band_mean.view(-1).cpu().numpy()
    device = next(net.parameters()).device
    out = []
    for scene, (y0, x0), built, _ in windows:
        x = window_of(scene.lr, y0, x0, built.shape[0], context, fill)
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
    upsampling of the same input, and the placement skill inside mixed 10 m pixels
    (:func:`~xjointseg.metrics.within_pixel_auc`) of the 1 m probability
    (``placement_auc``) and of its own 10 m field up-sampled (``placement_auc_smooth``)."""
    conf = dict.fromkeys(("tp", "fp", "fn", "tn"), 0)
    psnr: dict[str, list[float]] = {"model": [], "bilinear": [], "bicubic": []}
    placement = {kind: {"wins": 0.0, "pairs": 0.0} for kind in ("", "_smooth")}
    for out, (lr, hr, label) in zip(outputs, inputs, strict=True):
        pred = rule.numpy(out["logits"]).astype(np.uint8)
        # only clean labels are scored: weak negatives (2) and ignored pixels (255) are not
        for k, v in confusion(pred, label, ignore=(WEAK_NEGATIVE, IGNORE)).items():
            conf[k] += v
        prob = 1 / (1 + np.exp(-out["logits"].astype(np.float64)))
        for kind, score in (("", prob), ("_smooth", smooth_placement(prob))):
            counts = placement_counts(score, label)
            placement[kind]["wins"] += counts["wins"]
            placement[kind]["pairs"] += counts["pairs"]
        if hr is not None and out["sr"] is not None:
            t = torch.from_numpy(lr)[None]
            psnr["model"].append(_psnr(out["sr"], hr))
            for mode in ("bilinear", "bicubic"):
                up = F.interpolate(t, scale_factor=SCALE, mode=mode, align_corners=False)
                psnr[mode].append(_psnr(up[0].numpy(), hr))
    result = scores_from_counts(conf)
    for kind, c in placement.items():
        result[f"placement_auc{kind}"] = c["wins"] / c["pairs"] if c["pairs"] else float("nan")
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
