"""A tiny network with a known receptive field, for tests, examples and engine benchmarks.

``depth`` 3x3 convolutions (tanh) at 10 m, nearest-neighbour x10 up-sampling, one 3x3
convolution at 1 m. It obeys the full :class:`ISANetwork` contract, so the engine cannot tell
it from JointSeg, but it has not been trained: its masks mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ISANetwork, Span, crop


@dataclass(frozen=True)
class ToyConfig:
    """The hyperparameters of :class:`ToyNet` (its ``config`` besides the bands)."""

    depth: int = 2  # 3x3 convolutions at 10 m
    width: int = 8  # their channels
    seed: int = 0  # of the random weights


#: Named configurations (``lite`` only).
CONFIGS = {"lite": asdict(ToyConfig())}


class ToyNet(ISANetwork):
    arch = "toy"
    hyperparameters = ToyConfig

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c: ToyConfig = self.hyper
        in_bands = self.in_bands
        gen = torch.Generator().manual_seed(c.seed)
        chans = [in_bands] + [c.width] * c.depth
        self.body = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.head = nn.Conv2d(c.width, 1, 3, padding=1)
        with torch.no_grad():  # seeded init: the same config gives the same network
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def input_span(self, out: Span) -> Span:
        s = out.conv(3).nearest_up(self.scale)
        for _ in self.body:
            s = s.conv(3)
        return s

    def forward(
        self, x: torch.Tensor, margin: int = 0, sr: bool = True
    ) -> dict[str, torch.Tensor | None]:
        f = self.normalize(x)
        for conv in self.body:
            f = torch.tanh(conv(f))
        need = Span(0, self.scale - 1).conv(3).nearest_up(self.scale).radius()
        f = crop(f, margin - need)  # keep only the context the 1 m layer reads
        keep = min(margin, need)
        f = F.interpolate(f, scale_factor=self.scale, mode="nearest")
        logits = crop(self.head(f), keep * self.scale)
        return {"logits": logits, "sr": None}
