"""What every xjointseg network is: a torch module from 10 m Sentinel-2 DN to 1 m ISA logits.

The engine relies on three facts a network declares about itself:

* ``scale`` — output pixels per input pixel along each axis (10: 10 m -> 1 m);
* ``halo`` — input pixels of context each output pixel can depend on. It is *computed*
  from the architecture by walking the layers backwards with :class:`Span` (exact index
  arithmetic for convolutions, up-sampling and pixel shuffles), never guessed;
* ``align`` — the input-pixel multiple that tile origins must keep so that strided layers
  see the same phase (1 for networks with no stride below the input resolution).

``forward(x, margin)`` receives a tile with ``margin`` input pixels of context on every side
and returns outputs for the centre only; a network may crop its feature maps stage by stage
(see :func:`crop`) so that expensive high-resolution layers do not run on context they do
not need.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn


@dataclass(frozen=True)
class Span:
    """An inclusive range of pixel indices on one axis of some grid.

    Receptive fields are computed by starting from the output pixels of one input pixel
    (``Span(0, scale - 1)`` on the 1 m grid) and applying, in reverse order, the inverse of
    each layer: the result is the range of input pixels those outputs depend on.
    """

    lo: int
    hi: int

    def conv(self, kernel: int, dilation: int = 1) -> Span:
        """Back through a 'same'-padded convolution (stride 1)."""
        r = dilation * (kernel // 2)
        return Span(self.lo - r, self.hi + r)

    def nearest_up(self, factor: int) -> Span:
        """Back through nearest-neighbour up-sampling by an integer factor."""
        return Span(self.lo // factor, self.hi // factor)

    def pixel_shuffle(self, factor: int) -> Span:
        """Back through ``nn.PixelShuffle(factor)``: like nearest up-sampling."""
        return self.nearest_up(factor)

    def pixel_unshuffle(self, factor: int) -> Span:
        """Back through ``nn.PixelUnshuffle(factor)``: each output reads ``factor`` inputs."""
        return Span(self.lo * factor, self.hi * factor + factor - 1)

    def bilinear_up(self, factor: float) -> Span:
        """Back through ``F.interpolate(mode='bilinear', align_corners=False)`` by ``factor``.

        Output pixel ``i`` samples the input at ``(i + 0.5) / factor - 0.5`` and reads the two
        input pixels around that point.
        """
        lo = math.floor((self.lo + 0.5) / factor - 0.5)
        hi = math.floor((self.hi + 0.5) / factor - 0.5) + 1
        return Span(lo, hi)

    def union(self, other: Span) -> Span:
        return Span(min(self.lo, other.lo), max(self.hi, other.hi))

    def radius(self) -> int:
        """Context needed on either side of input pixel 0 (the span started at pixel 0)."""
        return max(-self.lo, self.hi, 0)


def crop(t: torch.Tensor, n: int) -> torch.Tensor:
    """Remove ``n`` pixels from each side of the last two axes."""
    if n <= 0:
        return t
    return t[..., n:-n, n:-n]


class ISANetwork(nn.Module):
    """Base class of xjointseg networks (10 m DN in, 1 m ISA logits out).

    Subclasses set ``arch`` and ``hyperparameters``, and implement :meth:`input_span` and
    :meth:`forward`. Inputs are Sentinel-2 L2A DN (reflectance x 10000); the per-band
    normalisation statistics are buffers, so they travel with the weights.
    """

    arch: str = "base"
    scale: int = 10
    align: int = 1
    # buffers registered in __init__ (declared for type checkers only)
    band_mean: torch.Tensor
    band_std: torch.Tensor

    #: The dataclass of the architecture's hyperparameters (keyword arguments of the
    #: constructor besides the bands); the instance is ``self.hyper``.
    hyperparameters: ClassVar[type | None] = None
    hyper: Any

    def __init__(
        self,
        in_bands: int = 3,
        band_mean: list[float] | None = None,
        band_std: list[float] | None = None,
        **config: Any,
    ) -> None:
        super().__init__()
        self.in_bands = in_bands
        mean = torch.tensor(band_mean or [1000.0] * in_bands, dtype=torch.float32)
        std = torch.tensor(band_std or [1000.0] * in_bands, dtype=torch.float32)
        if mean.numel() != in_bands or std.numel() != in_bands:
            raise ValueError("band_mean and band_std need one value per input band")
        self.register_buffer("band_mean", mean.view(1, in_bands, 1, 1))
        self.register_buffer("band_std", std.view(1, in_bands, 1, 1))
        # everything needed to rebuild the network, JSON-serialisable: type(net)(**config)
        self.config: dict[str, Any] = {
            "in_bands": in_bands,
            "band_mean": None if band_mean is None else [float(v) for v in band_mean],
            "band_std": None if band_std is None else [float(v) for v in band_std],
        }
        if self.hyperparameters is None:
            if config:
                raise TypeError(f"{type(self).__name__} takes no {sorted(config)}")
        else:
            self.hyper = self.hyperparameters(**config)
            self.config.update(asdict(self.hyper))

    # --- declared geometry --------------------------------------------------------------

    def input_span(self, out: Span) -> Span:
        """Input (10 m) pixels that the 1 m output pixels ``out`` depend on."""
        raise NotImplementedError

    @property
    def halo(self) -> int:
        """Receptive-field radius in input pixels, exact for this architecture."""
        return self.input_span(Span(0, self.scale - 1)).radius()

    # --- computation --------------------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.band_mean) / self.band_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.band_std + self.band_mean

    def forward(self, x: torch.Tensor, margin: int = 0) -> dict[str, torch.Tensor | None]:
        """Map DN ``(N, bands, h, w)`` to ``{"logits": (N, 1, H, W), "sr": (N, bands, H, W)}``.

        ``H = scale * (h - 2 * margin)``: the first and last ``margin`` input pixels of each
        axis are context only. ``sr`` is the 1 m super-resolved image in DN, or ``None`` for
        networks without a super-resolution branch.
        """
        raise NotImplementedError

    def segment_logits(self, x: torch.Tensor, margin: int = 0) -> torch.Tensor:
        """ISA logits only (inference); networks may skip work the mask does not need."""
        return cast(torch.Tensor, self.forward(x, margin)["logits"])
