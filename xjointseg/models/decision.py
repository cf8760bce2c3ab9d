"""How a network's 1 m ISA logits become the 0/1 mask: the model's *mask rule*.

* ``"threshold"``: a 1 m pixel is ISA where its probability reaches the model's ``threshold``.
* ``"fraction"``: sub-pixel allocation (Atkinson 2005, "Sub-pixel target mapping from
  soft-classified, remotely sensed imagery", PE&RS 71(7):839-846). Each 10 m input pixel
  (a ``scale`` x ``scale`` cell of the mask) holds ``k`` ISA pixels, ``k`` the cell's
  expected ISA count (the sum of its 1 m probabilities, rounded), and they are the ``k``
  pixels with the highest logits. The mask's ISA share in every 10 m pixel is then the
  network's own estimate of it, where a threshold turns a probability that is nearly flat
  inside the pixel (as the 10 m evidence is) into all or nothing. Where the cell's
  probabilities are already near 0 or 1 both rules agree.

Both rules read the probabilities calibrated by Platt scaling (Platt 1999, "Probabilistic
outputs for support vector machines"), ``sigmoid(slope * (logit - logit(threshold)))``, both
parameters chosen on validation places: ``threshold`` 0.5 and ``slope`` 1 leave them as they
are. A threshold rule depends on ``threshold`` alone; under the fraction rule a ``slope``
above 1 moves each 10 m pixel's share towards 0 or 1 (a threshold rule in the limit).

A cell is one input pixel, and output tiles always hold whole input pixels, so the fraction
rule is as independent of tiling as the network itself (no seams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import OptionError

MASK_RULES = ("threshold", "fraction")


@dataclass(frozen=True)
class MaskRule:
    """The decision from 1 m logits to the 0/1 ISA mask (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> rule = MaskRule("fraction", threshold=0.5, scale=2)
    >>> logits = torch.tensor([[-0.2, -0.3], [-0.25, -0.35]])  # probabilities 0.41-0.45
    >>> rule(logits).int().tolist()  # 1.73 expected ISA pixels: the two highest logits
    [[1, 0], [1, 0]]
    >>> MaskRule("threshold", 0.5)(logits).int().tolist()  # all or nothing
    [[0, 0], [0, 0]]
    """

    kind: Literal["threshold", "fraction"] = "threshold"
    threshold: float = 0.5
    scale: int = 10
    slope: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in MASK_RULES:
            raise OptionError(f"mask rule must be one of {MASK_RULES}, not {self.kind!r}")
        if not 0 < self.threshold < 1:
            raise OptionError(f"threshold must be between 0 and 1, not {self.threshold!r}")
        if not self.slope > 0:
            raise OptionError(f"slope must be positive, not {self.slope!r}")

    @property
    def logit_shift(self) -> float:
        """The threshold as a logit: subtracted from the logits before deciding."""
        return math.log(self.threshold / (1 - self.threshold))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the same shape as ``logits`` (``(..., H, W)``, whole cells)."""
        shifted = logits.float() - self.logit_shift
        if self.kind == "threshold":
            return shifted >= 0
        return _allocate(shifted, self.scale, self.slope)

    def numpy(self, logits: np.ndarray) -> np.ndarray:
        """:meth:`__call__` for numpy arrays."""
        return self(torch.from_numpy(np.ascontiguousarray(logits))).numpy()

    def from_probability(self, prob: np.ndarray) -> np.ndarray:
        """The mask from 1 m probabilities (as ``segment(output="probability")`` returns);
        NaN (nodata) counts as 0."""
        p = torch.from_numpy(np.nan_to_num(np.asarray(prob, np.float32), nan=0.0))
        return self(torch.logit(p.double()).float()).numpy()


def _allocate(logits: torch.Tensor, s: int, slope: float) -> torch.Tensor:
    """In each ``s`` x ``s`` cell, the ``round(sum of sigmoid(slope * logits))`` highest-logit
    pixels (ties: the first in row-major order)."""
    *lead, height, width = logits.shape
    if height % s or width % s:
        raise ValueError(f"a {height} x {width} map does not hold whole {s} x {s} cells")
    h, w = height // s, width // s
    cells = logits.reshape(*lead, h, s, w, s).transpose(-3, -2).reshape(*lead, h, w, s * s)
    count = torch.sigmoid(slope * cells).sum(-1).round()
    keep = (count >= s * s).unsqueeze(-1).expand_as(cells).clone()
    # only cells that are neither empty nor full need their pixels ranked (the sort is the
    # costly part, and most 10 m pixels of a scene are one or the other)
    mixed = (count > 0) & (count < s * s)
    if mixed.any():
        part = cells[mixed]
        order = part.argsort(dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(s * s, device=cells.device).expand_as(order))
        keep[mixed] = rank < count[mixed].unsqueeze(-1)
    return keep.reshape(*lead, h, w, s, s).transpose(-3, -2).reshape(logits.shape)


__all__ = ["MASK_RULES", "MaskRule"]
