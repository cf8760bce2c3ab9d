"""Training batches: crops of the aerial scenes (simulated to Sentinel-2 once per version,
cached) and of real Sentinel-2 with weak labels, with flips and rotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from .datasets import IGNORE, SCALE, WEAK_NEGATIVE, Scene, TrainingDataError, WeakScene
from .simulate import DEFAULT_OFFSET, degrade, hr_dn, simulate_sentinel2

#: The mask of logits before a model's rule is chosen: probability >= 0.5.

if TYPE_CHECKING:  # a type only: trainer imports this module
    from .trainer import TrainConfig


def _augment(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / rot90 on every (..., H, W) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def scene_source(scene: Scene) -> str:
    """The dataset a scene comes from: the first part of its place (``dubai/tile4``)."""
    return scene.place.split("/")[0]


def scene_weights(
    scenes: list[Scene], weak_weight: float, shares: dict[str, float] | None = None
) -> np.ndarray:
    """Sampling probabilities in proportion to how much supervision a scene carries: clean
    labels count fully, weak negatives by their loss weight, ignored pixels not at all.

    ``shares`` (source -> fraction of the crops, :func:`scene_source`) fixes the part of the
    crops some sources get (scenes within a source keep their proportions); the sources it
    does not name share the rest in proportion to their supervision. A source whose labels
    are sparse (Massachusetts: roads only) is otherwise drawn as rarely as its few labels."""
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
    w /= w.sum()
    if not shares:
        return w
    source = np.array([scene_source(s) for s in scenes])
    unknown = sorted(set(shares) - set(source))
    if unknown:
        raise TrainingDataError(
            f"source shares name {unknown}, which no training scene comes from (sources: "
            f"{sorted(set(source))})"
        )
    if any(not 0 < f <= 1 for f in shares.values()) or sum(shares.values()) > 1 + 1e-9:
        raise TrainingDataError(
            f"source shares {shares} must each be in (0, 1] and sum to at most 1"
        )
    rest = ~np.isin(source, list(shares))
    left = 1.0 - sum(shares.values())
    if not rest.any() and abs(left) > 1e-9:
        raise TrainingDataError(f"source shares {shares} name every source, so they must sum to 1")
    if rest.any() and (left <= 1e-9 or w[rest].sum() == 0):
        raise TrainingDataError(
            f"source shares {shares} leave nothing for {sorted(set(source[rest]))}: lower "
            "them or name every source"
        )
    out = np.zeros_like(w)
    for name, fraction in shares.items():
        mine = source == name
        if w[mine].sum() == 0:
            raise TrainingDataError(f"source {name!r} has no usable label to draw crops from")
        out[mine] = fraction * w[mine] / w[mine].sum()
    if rest.any():
        out[rest] = left * w[rest] / w[rest].sum()
    return out


def crop_origin(n: int, p: int, c: int, rng: np.random.Generator) -> int:
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
    weights: np.ndarray | None = None,
):
    """Random crops aligned to the 10 m grid: (input with context, 1 m target or None, label).

    ``weights``: each scene's probability of being drawn (:func:`scene_weights`, worked out
    here when not given; a run passes its own, computed once)."""
    xs, hrs, labels = [], [], []
    p, c = cfg.crop, context
    cache = cache or SimulationCache(1, cfg.radiometry_augment, cfg.seed)
    if weights is None:
        weights = scene_weights(scenes, cfg.weak_weight, cfg.source_shares)
    for _ in range(cfg.batch_size):
        index = int(rng.choice(len(scenes), p=weights))
        scene = scenes[index]
        h, w = scene.label.shape[0] // SCALE, scene.label.shape[1] // SCALE
        y0, x0 = crop_origin(h, p, c, rng), crop_origin(w, p, c, rng)
        lr, radiometry = cache.get(index, scene, rng)
        big = window_of(lr, y0, x0, p, c, fill)
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


def window_of(lr: np.ndarray, y0: int, x0: int, p: int, c: int, fill: np.ndarray) -> np.ndarray:
    """``lr[:, y0-c : y0+p+c, x0-c : x0+p+c]`` with ``fill`` beyond the scene and for NaN."""
    h, w = lr.shape[1:]
    big = np.broadcast_to(fill[:, None, None], (3, p + 2 * c, p + 2 * c)).copy()
    ya, yb, xa, xb = max(y0 - c, 0), min(y0 + p + c, h), max(x0 - c, 0), min(x0 + p + c, w)
    part = lr[:, ya:yb, xa:xb]
    big[:, ya - (y0 - c) : yb - (y0 - c), xa - (x0 - c) : xb - (x0 - c)] = np.where(
        np.isnan(part), fill[:, None, None], part
    )
    return big


def crop_labels(labels: np.ndarray, y0: int, x0: int, p: int) -> np.ndarray:
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
        y0, x0 = crop_origin(h, p, context, rng), crop_origin(w, p, context, rng)
        x = window_of(scene.lr, y0, x0, p, context, fill)
        if cfg.radiometry_augment:
            haze = 10000 * np.asarray(DEFAULT_OFFSET, np.float32) * rng.uniform(0, 1)
            x = np.clip((x - haze[:, None, None]) * rng.uniform(0.9, 1.1), 1, None)
        x, label = _augment([x.astype(np.float32), crop_labels(scene.weak, y0, x0, p)], rng)
        xs.append(x)
        labels.append(label)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(labels))


def sample_wald_batch(
    scenes: list[WeakScene],
    size: int,
    batch_size: int,
    context: int,
    fill: np.ndarray,
    rng: np.random.Generator,
    tries: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real 10 m crops as super-resolution targets, by Wald's protocol: each ``size`` crop
    (a multiple of 10, wholly valid) is degraded 10x with the sensor's optics
    (:func:`~xjointseg.training.simulate.degrade`) into the network's input, given
    ``context`` pixels of ``fill`` around it; the crop itself is the target. Returns
    ``(inputs, targets)``, ``(N, 3, size/10 + 2 context, ...)`` and ``(N, 3, size, size)``."""
    xs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    big = [s for s in scenes if min(s.lr.shape[1:]) >= size]
    if not big:
        raise TrainingDataError(f"no real scene holds a {size} px crop for Wald's protocol")
    while len(xs) < batch_size:
        for _ in range(tries):  # a crop without missing pixels
            scene = big[int(rng.integers(len(big)))]
            h, w = scene.lr.shape[1:]
            y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            crop = scene.lr[:, y0 : y0 + size, x0 : x0 + size]
            if not np.isnan(crop).any():
                break
        else:
            raise TrainingDataError(f"no {size} px crop without missing pixels found")
        (target,) = _augment([crop.astype(np.float32)], rng)
        low = degrade(target)
        n = low.shape[1]
        x = np.broadcast_to(fill[:, None, None], (3, n + 2 * context, n + 2 * context)).copy()
        x[:, context : context + n, context : context + n] = low
        xs.append(x.astype(np.float32))
        targets.append(target)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(targets))


def date_pairs(scenes: list[WeakScene]) -> list[tuple[WeakScene, WeakScene]]:
    """Scenes of one place on one grid, two by two (the dates of an OSCD city)."""
    by_place: dict[str, list[WeakScene]] = {}
    for scene in scenes:
        by_place.setdefault(scene.place, []).append(scene)
    pairs = []
    for group in by_place.values():
        for i, a in enumerate(group):
            pairs += [(a, b) for b in group[i + 1 :] if b.lr.shape == a.lr.shape]
    return pairs


def sample_pair_batch(
    pairs: list[tuple[WeakScene, WeakScene]],
    context: int,
    fill: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same window of both dates of a place (one flip / rotation for both), and where
    the land is confidently in one state on both: weak labels equal and not ignored."""
    if not pairs:
        raise TrainingDataError("no two dates of one place on one grid to pair")
    xa, xb, stable = [], [], []
    for _ in range(batch_size):
        a, b = pairs[int(rng.integers(len(pairs)))]
        h, w = a.weak.shape
        y0, x0 = crop_origin(h, crop, context, rng), crop_origin(w, crop, context, rng)
        wa, wb = crop_labels(a.weak, y0, x0, crop), crop_labels(b.weak, y0, x0, crop)
        same = ((wa == wb) & (wa != IGNORE)).astype(np.uint8)
        pa = window_of(a.lr, y0, x0, crop, context, fill).astype(np.float32)
        pb = window_of(b.lr, y0, x0, crop, context, fill).astype(np.float32)
        pa, pb, same = _augment([pa, pb, same], rng)
        xa.append(pa)
        xb.append(pb)
        stable.append(same)
    return (
        torch.from_numpy(np.stack(xa)),
        torch.from_numpy(np.stack(xb)),
        torch.from_numpy(np.stack(stable)).bool(),
    )
