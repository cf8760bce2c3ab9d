"""Losses for joint super-resolution and segmentation, all with ignore masks.

Label codes: 0 not ISA, 1 ISA, 2 weak negative (unlabelled, probably not ISA), 255 ignore.
No loss needs pretrained weights from the internet (no VGG perceptual loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .datasets import IGNORE, SCALE, WEAK_BUILT, WEAK_NEGATIVE, WEAK_NOT_BUILT


def segmentation_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    weak_weight: float = 0.1,
    pos_weight: float = 2.0,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """BCE + ``dice_weight`` x soft Dice on ISA; ignored pixels count nowhere, weak negatives
    only in BCE.

    ``logits`` (N, 1, H, W); ``label`` (N, H, W) uint8. ISA pixels weigh ``pos_weight`` in
    the BCE (ISA is the minority class, 10-25 % of labelled pixels here). Both the weight and
    Dice favour recall: 1 and 0 give plain, balanced BCE.
    """
    logits = logits[:, 0].float()
    target = (label == 1).float()
    weight = torch.where(label == IGNORE, 0.0, torch.where(label == 1, pos_weight, 1.0))
    weight = torch.where(label == WEAK_NEGATIVE, weak_weight, weight)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    bce = bce / weight.sum().clamp_min(1.0)
    if not dice_weight:
        return bce
    clean = ((label == 0) | (label == 1)).float()
    prob = torch.sigmoid(logits) * clean
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + (target * clean).sum() + 1)
    return bce + dice_weight * dice


def sr_l1(sr: torch.Tensor, hr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L1 between the 1 m SR image and the 1 m target, in units of the band std (``scale``)."""
    return (torch.abs(sr.float() - hr) / scale).mean()


def generator_adversarial_loss(
    disc: torch.nn.Module, sr: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Non-saturating GAN loss of the generator on per-pixel realness maps.

    The discriminator is frozen for this pass, so the loss trains the generator only; images
    are normalised by the band std (``scale``).
    """
    disc.requires_grad_(False)
    try:
        return F.softplus(-disc(sr.float() / scale)).mean()
    finally:
        disc.requires_grad_(True)


def discriminator_loss(
    disc: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Discriminator loss: the 1 m target is real, the (detached) SR image fake."""
    real, fake = hr / scale, sr.detach().float() / scale
    return F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()


def fraction_loss(logits10: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE of the 10 m prior against each 10 m pixel's ISA fraction in the 1 m labels.

    Only 10 m pixels whose 100 label pixels are all clean (0 or 1) count: a pixel with
    ignored or weak-negative labels has no known fraction.
    """
    pool = lambda m: F.avg_pool2d(m.float()[:, None], SCALE)[:, 0]  # noqa: E731
    clean = pool((label == 0) | (label == 1))
    frac = pool(label == 1)
    weight = (clean > 0.999).float()
    bce = F.binary_cross_entropy_with_logits(
        logits10[:, 0].float(), frac, weight=weight, reduction="sum"
    )
    return bce / weight.sum().clamp_min(1.0)


def _log_block_means(logits: torch.Tensor, sharpness: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``log m`` and ``log (1 - m)`` of each 10 x 10 block mean ``m`` of
    ``sigmoid(sharpness * logits)``, in log space (gradients never vanish in a clamp)."""
    z = sharpness * logits.float()[:, 0]
    n, h, w = z.shape
    blocks = lambda t: t.reshape(n, h // SCALE, SCALE, w // SCALE, SCALE)  # noqa: E731
    log_count = math.log(SCALE * SCALE)
    log_m = torch.logsumexp(blocks(F.logsigmoid(z)), dim=(2, 4)) - log_count
    log_not = torch.logsumexp(blocks(F.logsigmoid(-z)), dim=(2, 4)) - log_count
    return log_m, log_not


def weak_loss(
    logits: torch.Tensor | None,
    logits10: torch.Tensor | None,
    weak: torch.Tensor,
    floor: float,
    sharpness: float = 1.0,
    hard_negatives: float = 0.0,
) -> torch.Tensor:
    """Weak 10 m supervision of the 1 m map (and of the 10 m prior, if given).

    ``weak`` (N, h, w): :data:`WEAK_NOT_BUILT`, :data:`WEAK_BUILT` or ignore. For each 10 m
    pixel ``m`` is the mean ISA probability of its 10 x 10 1 m pixels (or the prior's
    probability). A confidently not built-up pixel is pushed to ``m = 0`` (``-log(1 - m)``);
    a confidently built-up one only up to the ``floor`` (``max(0, log floor - log m)``), since
    built-up land is a mix of roofs, roads, gardens and trees whose share of ISA the weak
    label does not know. Uncertain pixels count nowhere.

    ``sharpness`` > 1 takes the 1 m probabilities as ``sigmoid(sharpness * logit)``: close to
    the 0/1 mask ``segment`` returns, so ``m`` approaches the *mask's* ISA share. With 1, a
    built-up pixel whose 100 probabilities all sit at 0.45 meets a floor of 0.4 while its mask
    is empty; with 4 it does not.

    ``hard_negatives`` = q > 0 adds, for each map, the mean loss of the hardest fraction q of
    the batch's not built-up pixels (online hard example mining; Shrivastava, Gupta and
    Girshick 2016, "Training region-based object detectors with online hard example mining",
    CVPR): the few open-land pixels the map calls ISA (a dark shore, a bare winter field) are
    drowned by the many easy ones in the plain mean.
    """
    pos, neg = weak == WEAK_BUILT, weak == WEAK_NOT_BUILT
    n = (pos | neg).sum().clamp_min(1)
    logs = []
    if logits is not None:
        logs.append(_log_block_means(logits, sharpness))
    if logits10 is not None:
        z10 = logits10.float()[:, 0]
        logs.append((F.logsigmoid(z10), F.logsigmoid(-z10)))
    total = torch.zeros((), device=weak.device)
    for log_m, log_not in logs:
        loss = torch.where(neg, -log_not, 0.0)
        loss = loss + torch.where(pos, F.relu(math.log(floor) - log_m), 0.0)
        total = total + loss.sum() / n
        if hard_negatives > 0 and neg.any():
            k = max(1, math.ceil(hard_negatives * int(neg.sum())))
            total = total + torch.topk(-log_not[neg], k).values.mean()
    return total


def prior_consistency_loss(
    logits: torch.Tensor, logits10: torch.Tensor, sharpness: float = 1.0
) -> torch.Tensor:
    """BCE of each 10 x 10 block mean of the (sharpened, as in :func:`weak_loss`) 1 m ISA
    probability against the 10 m prior's probability, the prior held fixed.

    The prior is trained to give each 10 m pixel its ISA fraction (:func:`fraction_loss`) and
    ranks built-up land on real imagery better than the 1 m mask does; on real crops, where
    no 1 m label exists, this term has the 1 m map keep the prior's share in every 10 m
    pixel, labelled or not, and only place it.
    """
    log_m, log_not = _log_block_means(logits, sharpness)
    target = torch.sigmoid(logits10.float()[:, 0]).detach()
    return -(target * log_m + (1 - target) * log_not).mean()


def placement_loss(
    logits: torch.Tensor, label: torch.Tensor, shares: tuple[float, float] = (0.05, 0.95)
) -> torch.Tensor:
    """Where, not how much: a pairwise ranking loss inside each mixed 10 m pixel.

    For every 10 x 10 cell whose labels are all clean (0 or 1) and whose ISA share lies in
    ``shares``, each (ISA pixel, non-ISA pixel) pair of the cell adds
    ``softplus(logit_non_isa - logit_isa)`` (RankNet's logistic pair loss; Burges et al.
    2005, "Learning to rank using gradient descent", ICML), averaged over all pairs. A
    constant added to a cell's logits changes nothing, so the term is blind to each 10 m
    pixel's share — what the segmentation and fraction losses train — and only teaches the
    ranking inside the cell that :func:`xjointseg.metrics.within_pixel_auc` scores and the
    fraction mask rule uses to place a pixel's ISA. Zero (with a graph) without a mixed cell.
    """
    z = logits.float()[:, 0]
    n, h, w = z.shape
    as_cells = lambda t: (  # noqa: E731
        t.reshape(n, h // SCALE, SCALE, w // SCALE, SCALE).transpose(2, 3).reshape(-1, SCALE**2)
    )
    cells, y = as_cells(z), as_cells(label)
    clean = ((y == 0) | (y == 1)).all(dim=1)
    share = (y == 1).float().mean(dim=1)
    keep = clean & (share >= shares[0]) & (share <= shares[1])
    if not keep.any():
        return z.sum() * 0.0
    s, pos = cells[keep], (y[keep] == 1).float()
    pairs = pos[:, :, None] * (1 - pos)[:, None, :]  # [cell, ISA pixel, other pixel]
    loss = F.softplus(s[:, None, :] - s[:, :, None]) * pairs
    return loss.sum() / pairs.sum()


def soft_skeleton(mask: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Differentiable morphological skeleton of a (N, H, W) map in [0, 1] (the soft
    skeletonisation of Shit et al. 2021, "clDice - a novel topology-preserving loss function
    for tubular structure segmentation", CVPR): the union, over ``iterations`` successive
    min-pool erosions, of what each opening removes. A binary road ``2k + 1`` pixels wide
    thins to its centreline once ``iterations`` >= k; wider shapes keep a core of width
    ``2 (k - iterations) + 1``."""

    def erode(x: torch.Tensor) -> torch.Tensor:  # cross-shaped 3 x 3 min-pool
        across = -F.max_pool2d(-x, (3, 1), stride=1, padding=(1, 0))
        down = -F.max_pool2d(-x, (1, 3), stride=1, padding=(0, 1))
        return torch.minimum(across, down)

    def opening(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(erode(x), 3, stride=1, padding=1)

    x = mask.float()[:, None]
    skeleton = F.relu(x - opening(x))
    for _ in range(iterations):
        x = erode(x)
        delta = F.relu(x - opening(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton[:, 0]


def skeleton_recall_loss(
    logits: torch.Tensor, label: torch.Tensor, iterations: int = 10
) -> torch.Tensor:
    """One minus the share of the labelled ISA's centrelines that the 1 m map covers.

    Area losses weigh a road by its area, so a rural road a few metres wide counts for
    little beside a roof; along its skeleton every metre of road counts the same whatever
    its width (skeleton recall, Kirchhoff et al. 2024, "Skeleton recall loss for
    connectivity conserving and resource efficient segmentation", ECCV). The label's
    skeleton (:func:`soft_skeleton` of its ISA pixels, ignored pixels left out) is fixed; the
    probabilities on it are what trains. ``logits`` (N, 1, H, W), ``label`` (N, H, W).
    Zero (with a graph) where the batch has no ISA pixel."""
    with torch.no_grad():
        target = soft_skeleton((label == 1).float(), iterations)
    covered = (torch.sigmoid(logits.float()[:, 0]) * target).sum()
    total = target.sum()
    if total <= 0:
        return logits.float().sum() * 0.0
    return 1 - covered / total


def date_consistency_loss(
    logits_a: torch.Tensor | None,
    logits_b: torch.Tensor | None,
    stable: torch.Tensor,
    logits10_a: torch.Tensor | None = None,
    logits10_b: torch.Tensor | None = None,
    sharpness: float = 1.0,
) -> torch.Tensor:
    """Two dates of one place agree where the land did not change.

    ``stable`` (N, h, w) is True at 10 m pixels confidently in the same state on both dates
    (e.g. Dynamic World confidently not built on both). There, each date's ISA share — the
    10 x 10 mean of the (sharpened, as in :func:`weak_loss`) 1 m probability, and the 10 m
    prior's probability when given — is pulled towards the other's: the squared difference,
    averaged over the stable pixels. A date-to-date rise on such land is a false "new ISA"
    in every growth table; this term is what ties the dates of a cube together in training.
    """
    weight = stable.float()
    n = weight.sum().clamp_min(1.0)
    total = torch.zeros((), device=stable.device)
    if logits_a is not None and logits_b is not None:
        share_a = _log_block_means(logits_a, sharpness)[0].exp()
        share_b = _log_block_means(logits_b, sharpness)[0].exp()
        total = total + ((share_a - share_b) ** 2 * weight).sum() / n
    if logits10_a is not None and logits10_b is not None:
        prior_a = torch.sigmoid(logits10_a.float()[:, 0])
        prior_b = torch.sigmoid(logits10_b.float()[:, 0])
        total = total + ((prior_a - prior_b) ** 2 * weight).sum() / n
    return total


def anchor_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean Bernoulli KL divergence of the student's probabilities from the teacher's, on
    logits of the same shape: 0 where the two agree, whatever the teacher's confidence.

    Holds what a network already does well (the teacher: its frozen starting weights) on
    inputs whose labels it should not learn from any further (knowledge distillation,
    Hinton et al. 2015, at temperature 1, per pixel)."""
    student, teacher = student.float(), teacher.float().detach()
    target = torch.sigmoid(teacher)
    cross_entropy = F.binary_cross_entropy_with_logits(student, target)
    return cross_entropy - F.binary_cross_entropy_with_logits(teacher, target)  # its entropy
