"""Losses for joint super-resolution and segmentation, all with ignore masks.

Label codes: 0 not ISA, 1 ISA, 2 weak negative (unlabelled, probably not ISA), 255 ignore.
No loss needs pretrained weights from the internet (no VGG perceptual loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets import IGNORE, WEAK_NEGATIVE


def segmentation_loss(
    logits: torch.Tensor, label: torch.Tensor, weak_weight: float = 0.1, pos_weight: float = 2.0
) -> torch.Tensor:
    """BCE + soft Dice on ISA; ignored pixels count nowhere, weak negatives only in BCE.

    ``logits`` (N, 1, H, W); ``label`` (N, H, W) uint8. ISA pixels weigh ``pos_weight`` in
    the BCE: ISA is the minority class (10-25 % of labelled pixels here).
    """
    logits = logits[:, 0].float()
    target = (label == 1).float()
    weight = torch.where(label == IGNORE, 0.0, torch.where(label == 1, pos_weight, 1.0))
    weight = torch.where(label == WEAK_NEGATIVE, weak_weight, weight)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    bce = bce / weight.sum().clamp_min(1.0)
    clean = ((label == 0) | (label == 1)).float()
    prob = torch.sigmoid(logits) * clean
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + (target * clean).sum() + 1)
    return bce + dice


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
