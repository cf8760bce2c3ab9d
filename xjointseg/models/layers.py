"""Building blocks shared by the xjointseg networks, each with its receptive-field arithmetic.

Every block that changes the receptive field has a ``span(out)`` method: the inverse of the
block on one axis (see :class:`~xjointseg.models.base.Span`), so a network's
``input_span`` is written by composing them in reverse.

Blocks that are deep at a fixed resolution (the RRDB trunks) also crop as they go: they take
the context their input carries (``ctx``, pixels on each side beyond the centre) and the
context their output must keep (``need``), and drop what the remaining layers will not read
before each sub-block. See :func:`fit`.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .base import Span, crop

#: Negative slope of every LeakyReLU (ESRGAN's value).
SLOPE = 0.2
#: Residual scaling of dense blocks and RRDBs (ESRGAN's value).
RES_SCALE = 0.2


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) *in place*: only ever applied to a fresh convolution output (saves a
    pass over memory, which dominates at these widths)."""
    return F.leaky_relu(x, SLOPE, inplace=True)


def in_fp32(fn, *args):
    """``fn(*args)`` in fp32 even under bf16 autocast.

    For the 10 m layers: the mask is mostly their up-sampled prior, a smooth field, so bf16
    rounding there moves the 0.5 contour across whole patches of 1 m pixels (0.12 % of a dense
    Paris crop flipped; 0.007 % with these layers in fp32), at 14-18 % of lite's MACs.
    """
    device = next(a.device for a in args if torch.is_tensor(a)).type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return fn(*args)
    with torch.autocast(device, enabled=False):
        return fn(*(a.float() if torch.is_tensor(a) else a for a in args))


def conv3(cin: int, cout: int) -> nn.Conv2d:
    """A 'same'-padded 3x3 convolution (zero padding)."""
    return nn.Conv2d(cin, cout, 3, padding=1)


def conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


# --- context bookkeeping ----------------------------------------------------------------


def need_at(span: Span, per_input: int) -> int:
    """Context (pixels on each side) a grid must keep so the centre outputs can be computed.

    Parameters
    ----------
    span
        Pixels of this grid that the 1 m outputs of input pixel 0 depend on (pixel 0 of this
        grid is the first of the ``per_input`` pixels covering input pixel 0).
    per_input
        Pixels of this grid per input pixel and axis (1 at 10 m, 4 at 2.5 m, 10 at 1 m).

    The first centre pixel fixes the context needed before the centre and, by translation
    over whole input pixels, the last one fixes the context after it.
    """
    return max(-span.lo, span.hi - (per_input - 1), 0)


def fit(t: torch.Tensor, ctx: int, need: int, q: int = 1) -> tuple[torch.Tensor, int]:
    """Crop ``t`` (carrying ``ctx`` pixels of context) down to ``need``; return it and its ctx.

    Crops only in multiples of ``q`` (the pixel phase later layers rely on) and never below
    ``need``; a tile given less context than needed is left whole (its edge outputs then see
    zero padding, as a network without cropping would).
    """
    k = (ctx - need) // q * q if ctx > need else 0
    return crop(t, k), ctx - k


def match(items: list[tuple[torch.Tensor, int]], q: int = 1) -> tuple[list[torch.Tensor], int]:
    """Crop tensors of one grid to their smallest context, so they can be merged."""
    c = min(ctx for _, ctx in items)
    out = []
    for t, ctx in items:
        if (ctx - c) % q:
            raise AssertionError(f"contexts {ctx} and {c} differ by a non-multiple of {q}")
        out.append(crop(t, ctx - c))
    return out, c


def up_bilinear(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear up-sampling by ``factor`` (align_corners=False), exact in pixel geometry.

    The output is ``factor`` times the input along each axis; for the x2.5 factor the input
    size must be even (the callers keep 2.5 m maps at even sizes and even crops).
    """
    out = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    if out.shape[-2] != h * factor or out.shape[-1] != w * factor:
        raise AssertionError(f"x{factor} up-sampling of {h}x{w} is not exact")
    return out


def up_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def strided_span(s: Span, kernel: int, stride: int, padding: int) -> Span:
    """Back through a strided convolution: output ``k`` reads inputs
    ``k*stride - padding`` ... ``k*stride - padding + kernel - 1``."""
    return Span(s.lo * stride - padding, s.hi * stride - padding + kernel - 1)


# --- residual-in-residual dense blocks (ESRGAN) -----------------------------------------


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each reading the block input and all earlier outputs.

    ``growth`` channels per inner convolution; the last maps back to ``channels`` and is
    added to the input, scaled by 0.2 so deep stacks start close to the identity.
    """

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3(channels + i * growth, growth) for i in range(4))
        self.last = conv3(channels + 4 * growth, channels)

    radius = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(lrelu(conv(torch.cat(feats, 1))))
        return torch.add(x, self.last(torch.cat(feats, 1)), alpha=RES_SCALE)

    def span(self, out: Span) -> Span:
        # the i-th output of the chain reads the input through i convolutions; the deepest
        # path (five convolutions) contains all the others, and the skip reads ``out`` itself
        s = out
        for _ in range(self.radius):
            s = s.conv(3)
        return s.union(out)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks inside a scaled residual."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResidualDenseBlock(channels, growth) for _ in range(3))

    radius = 3 * ResidualDenseBlock.radius

    def forward(
        self, x: torch.Tensor, ctx: int = 0, need: int = 0, q: int = 1
    ) -> tuple[torch.Tensor, int]:
        """Apply the block to ``x`` (with ``ctx`` px of context); keep at least ``need``."""
        h, c = x, ctx
        for i, block in enumerate(self.blocks):
            # each dense block reads 5 px around what the next ones need
            h, c = fit(h, c, need + (3 - i) * ResidualDenseBlock.radius, q)
            h = block(h)
        return torch.add(crop(x, ctx - c), h, alpha=RES_SCALE), c

    def span(self, out: Span) -> Span:
        s = out
        for block in reversed(self.blocks):
            s = cast(ResidualDenseBlock, block).span(s)
        return s.union(out)


class RRDBTrunk(nn.Module):
    """``x + conv(RRDB_n(...RRDB_1(x)))``: ESRGAN's trunk, cropping after every block."""

    def __init__(self, channels: int, growth: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RRDB(channels, growth) for _ in range(blocks))
        self.conv = conv3(channels, channels)

    def forward(self, x: torch.Tensor, ctx: int, need: int, q: int = 1) -> tuple[torch.Tensor, int]:
        h, c = x, ctx
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            h, c = block(h, c, need + 1 + (n - 1 - i) * RRDB.radius, q)
        h, c = fit(h, c, need + 1, q)
        return crop(x, ctx - c) + self.conv(h), c

    def span(self, out: Span) -> Span:
        s = out.conv(3)
        for block in reversed(self.blocks):
            s = cast(RRDB, block).span(s)
        return s.union(out)


def init_rrdb(module: nn.Module, scale: float = 0.1) -> None:
    """ESRGAN's initialisation of dense-block convolutions: Kaiming normal scaled down, so
    every residual branch starts small and a deep trunk starts near the identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            m.weight.data.mul_(scale)
            nn.init.zeros_(cast(torch.Tensor, m.bias))


# --- exact x2.5 up-sampling -------------------------------------------------------------


class Up2p5(nn.Module):
    """2.5 m -> 1 m, exactly: conv to ``25*c`` channels, ``PixelShuffle(5)``, ``PixelUnshuffle(2)``.

    A 2.5 m pixel ``k`` covers 0.5 m pixels ``5k .. 5k+4`` after the shuffle, and the 1 m
    pixel ``m`` gathers 0.5 m pixels ``2m, 2m+1`` into ``4*c`` channels: every pixel edge
    stays where it is in metres, and nothing is computed at 0.5 m (shuffles are reshapes).
    The 1 m pixels come in 5 phases (which 0.5 m sub-pixels of which 2.5 m pixels they
    hold); phases are tied to the 5 m grid, so maps entering this block must start on an
    even 2.5 m pixel (crop 2.5 m maps in steps of 2).

    The convolution is initialised ICNR-style (one kernel per output channel repeated over
    the 25 sub-pixels), so at initialisation the block is nearest-neighbour x5 then a 2x2
    gather: phase-free, no checkerboard.
    """

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.c = c
        self.conv = conv3(cin, 25 * c)
        self.shuffle = nn.PixelShuffle(5)
        self.unshuffle = nn.PixelUnshuffle(2)
        with torch.no_grad():
            base = nn.Conv2d(cin, c, 3)
            nn.init.kaiming_normal_(base.weight, a=SLOPE)
            # PixelShuffle reads channel c*25 + sub for sub-pixel ``sub`` of channel ``c``
            self.conv.weight.copy_(base.weight.repeat_interleave(25, dim=0))
            assert self.conv.bias is not None  # conv3 makes a bias
            nn.init.zeros_(self.conv.bias)

    @property
    def out_channels(self) -> int:
        return 4 * self.c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise AssertionError("x2.5 up-sampling needs even 2.5 m sizes")
        return self.unshuffle(self.shuffle(lrelu(self.conv(x))))

    def span(self, out: Span) -> Span:
        return out.pixel_unshuffle(2).pixel_shuffle(5).conv(3)


# --- cross-scale fusion and the segmentation head ---------------------------------------


class ScaleFusion(nn.Module):
    """Fuse features from several grids at 1 m with per-pixel attention, then a light head.

    Each input is projected (1x1) to ``channels`` on its own grid — cheap at coarse grids —
    and brought to 1 m by exact bilinear interpolation. A 3x3 convolution over all of them
    gives one weight map per scale, softmax-normalised *per pixel* (local attention: nothing
    is pooled over the tile, so outputs do not depend on the tile's extent). The weighted sum
    goes through a 3x3 convolution and a 1x1 to the ISA logit.

    Parameters
    ----------
    in_channels
        Channels of each input, coarse to fine.
    factors
        Up-sampling factor of each input to 1 m (10 for 10 m, 2.5 for 2.5 m, 1 for 1 m).
    channels
        Width of the projections and of the head.
    """

    def __init__(self, in_channels: list[int], factors: list[float], channels: int) -> None:
        super().__init__()
        if len(in_channels) != len(factors):
            raise ValueError("one factor per input")
        self.factors = list(factors)
        self.proj = nn.ModuleList(conv1(c, channels) for c in in_channels)
        self.attention = conv3(len(in_channels) * channels, len(in_channels))
        self.head = conv3(channels, channels)
        self.out = conv1(channels, 1)

    def value_span(self, out: Span) -> Span:
        """1 m pixels of the up-sampled projections that logits ``out`` read."""
        fused = out.conv(3)  # head (the 1x1 adds nothing)
        return fused.conv(3).union(fused)  # attention weights, and the values themselves

    def input_span(self, out: Span, i: int) -> Span:
        """Pixels of input ``i`` (on its own grid) that logits ``out`` read."""
        s = self.value_span(out)
        f = self.factors[i]
        return s if f == 1 else s.bilinear_up(f)

    def forward(self, feats: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
        """``feats``: (map, context in its own pixels) per input; returns (logits, 1 m ctx)."""
        ups = []
        for (t, ctx), proj, f in zip(feats, self.proj, self.factors, strict=True):
            a = proj(t)
            if f != 1:
                a = up_bilinear(a, f)
            ups.append((a, int(ctx * f)))
        values, c = match(ups)
        w = torch.softmax(self.attention(torch.cat(values, 1)), dim=1)
        fused = sum(w[:, i : i + 1] * v for i, v in enumerate(values))
        return self.out(lrelu(self.head(fused))), c


class CoarseHead(nn.Module):
    """ISA logits at 10 m from the 10 m trunk: the semantic prior of the 1 m map.

    Whether a 10 m pixel holds impervious surface is decided mostly by what it and its
    neighbourhood look like at 10 m; the 1 m layers place the boundaries. So a network adds
    these logits, bilinearly up-sampled x10, to its 1 m logits, and training can supervise
    them directly with 10 m targets (the ISA fraction of each 10 m pixel, or weak 10 m
    land-cover labels) without running the 1 m layers.
    ``(conv3 -> LeakyReLU) x 2 -> conv1``: semantic capacity where pixels are cheap (one 10 m
    pixel costs what one 1 m pixel costs, spread over a hundred).
    """

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3(cin, channels)
        self.conv2 = conv3(channels, channels)
        self.out = conv1(channels, 1)
        with torch.no_grad():  # starts near 0: the prior adds nothing before it is trained
            self.out.weight.mul_(0.1)
            assert self.out.bias is not None  # conv1 makes a bias
            self.out.bias.zero_()

    def forward(self, feat10: torch.Tensor) -> torch.Tensor:
        return self.out(lrelu(self.conv2(lrelu(self.conv1(feat10)))))

    @staticmethod
    def span(out: Span) -> Span:
        """10 m trunk pixels that the up-sampled prior at 1 m outputs ``out`` reads."""
        return out.bilinear_up(10).conv(3).conv(3)


def add_coarse_prior(
    logits: tuple[torch.Tensor, int], logits10: tuple[torch.Tensor, int]
) -> tuple[torch.Tensor, int]:
    """1 m logits (with their context) plus the 10 m logits up-sampled x10."""
    t10, c10 = logits10
    (a, b), c = match([logits, (up_bilinear(t10, 10), 10 * c10)])
    return a + b, c


def check_margin(x: torch.Tensor, margin: int) -> None:
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if x.ndim != 4 or min(x.shape[-2:]) <= 2 * margin:
        raise ValueError(
            f"an input of shape {tuple(x.shape)} leaves nothing inside margin {margin}"
        )


__all__ = [
    "CoarseHead",
    "RES_SCALE",
    "RRDB",
    "SLOPE",
    "ResidualDenseBlock",
    "RRDBTrunk",
    "ScaleFusion",
    "Up2p5",
    "add_coarse_prior",
    "check_margin",
    "conv1",
    "conv3",
    "fit",
    "init_rrdb",
    "lrelu",
    "match",
    "need_at",
    "strided_span",
    "up_bilinear",
    "up_nearest",
]
