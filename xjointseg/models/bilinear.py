"""The bilinear baseline: segment the input bilinearly up-sampled x10, with no super-resolution.

It answers "what does super-resolution add?", so everything else is held equal to
JointSeg: the same receptive field in metres (``halo``), a similar number of operations per
1 m pixel, the same 10 m RRDB trunk and the same cross-scale fusion and head. Only the
route from 10 m to 1 m differs: no SR stages and no SR supervision, an encoder-decoder over
the interpolated image instead::

    x (10 m DN) -> normalise -> bilinear x10                     u         1 m
    encoder: conv3                                               e1        1 m
             conv 4x4 stride 2 -> conv3                          e2        2 m
             conv 7x7 stride 5 (padding 1)                       d10       10 m
    trunk:   conv3 -> RRDB trunk (residual, as JointSeg's stage 1) feat10   10 m
    decoder: conv3 -> nearest x5, [., e2] -> conv3 -> RRDB trunk  feat2     2 m
             nearest x2 -> conv3, [., e1] -> conv3                feat1     1 m
    fusion:  feat10, feat2, feat1 -> JointSeg's ScaleFusion     -> ISA logits, 1 m

The strides multiply to 10, so the 2 m and 10 m grids of the encoder are the input's own
grids: shifting the tile origin by one input pixel shifts every grid by whole pixels
(``align = 1``). Strided kernels are centred on their output pixel (the 4x4/2 kernel reads
1 m pixels ``2k-1..2k+2`` for 2 m pixel ``k``, the 7x7/5 kernel 2 m pixels ``5j-1..5j+5``
for 10 m pixel ``j``), so there is no half-pixel shift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .base import ISANetwork, Span, crop
from .layers import (
    CoarseHead,
    RRDBTrunk,
    ScaleFusion,
    add_coarse_prior,
    check_margin,
    conv3,
    fit,
    in_fp32,
    init_rrdb,
    lrelu,
    match,
    need_at,
    strided_span,
    up_bilinear,
    up_nearest,
)


@dataclass(frozen=True)
class BilinearConfig:
    """The hyperparameters of :class:`BilinearSegNet` (its ``config`` besides the bands)."""

    enc1_channels: int = 8  # width of the 1 m encoder level
    enc2_channels: int = 16  # width of the 2 m encoder level
    trunk_channels: int = 32  # the 10 m RRDB trunk: width, growth, RRDB count
    trunk_growth: int = 16
    trunk_blocks: int = 2
    dec2_channels: int = 20  # the 2 m decoder trunk: width, growth, RRDB count
    dec2_growth: int = 10
    dec2_blocks: int = 1
    dec1_channels: int = 16  # width of the 1 m decoder level
    seg_channels: int = 16  # width of the cross-scale fusion and head
    first_kernel: int = 3  # odd kernel of the 10 m convolution before the trunk: with the
    # block counts it sets the halo, which the named configurations match to JointSeg's
    coarse_channels: int = 0  # width of the 10 m prior head; 0: none (older weights)


#: Named configurations, each matched to JointSeg's config of the same name: equal halo,
#: similar MACs per 1 m pixel (tests check both).
CONFIGS: dict[str, dict[str, Any]] = {
    "lite": asdict(BilinearConfig(coarse_channels=32)),
    "paper": asdict(
        BilinearConfig(
            enc1_channels=16,
            enc2_channels=32,
            trunk_channels=64,
            trunk_growth=32,
            trunk_blocks=23,
            dec2_channels=48,
            dec2_growth=24,
            dec2_blocks=28,
            dec1_channels=64,
            seg_channels=32,
            first_kernel=5,
            coarse_channels=64,
        )
    ),
}

_DOWN2 = (4, 2, 1)  # kernel, stride, padding of the 1 m -> 2 m convolution
_DOWN5 = (7, 5, 1)  # and of the 2 m -> 10 m one

_GRID = {
    "xn": 1,
    "feat10/seg": 1,
    "feat10/up": 1,
    "feat10/head": 1,
    "e2": 5,
    "m2": 5,
    "feat2/seg": 5,
}
_GRID.update({"feat2/up": 5, "e1": 10, "m1": 10, "feat1/seg": 10})


class BilinearSegNet(ISANetwork):
    """Segmentation of the bilinearly up-sampled input (see the module docstring).

    Parameters
    ----------
    in_bands, band_mean, band_std
        As for :class:`~xjointseg.models.jointseg.JointSegNet`.
    **config
        The fields of :class:`BilinearConfig` (widths, growths, block counts, kernel).

    Examples
    --------
    >>> import torch
    >>> net = BilinearSegNet.lite()
    >>> out = net(torch.full((1, 3, 12, 12), 800.0), margin=2)
    >>> out["logits"].shape, out["sr"] is None
    (torch.Size([1, 1, 80, 80]), True)
    """

    arch = "bilinear"
    hyperparameters = BilinearConfig

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c: BilinearConfig = self.hyper
        in_bands = self.in_bands
        if c.first_kernel % 2 == 0:
            raise ValueError("first_kernel must be odd")
        c1, c2, n, d2, d1 = (
            c.enc1_channels,
            c.enc2_channels,
            c.trunk_channels,
            c.dec2_channels,
            c.dec1_channels,
        )
        k, s, p = _DOWN2
        self.enc1 = conv3(in_bands, c1)
        self.down2 = nn.Conv2d(c1, c2, k, stride=s, padding=p)
        self.enc2 = conv3(c2, c2)
        k, s, p = _DOWN5
        self.down10 = nn.Conv2d(c2, n, k, stride=s, padding=p)
        # as JointSeg's stage 1: a convolution, then the RRDB trunk (its kernel tunes the halo)
        self.first = nn.Conv2d(n, n, c.first_kernel, padding=c.first_kernel // 2)
        self.trunk = RRDBTrunk(n, c.trunk_growth, c.trunk_blocks)
        self.up2 = conv3(n, c2)  # at 10 m, before nearest x5 (cheaper than after)
        self.merge2 = conv3(2 * c2, d2)
        self.trunk2 = RRDBTrunk(d2, c.dec2_growth, c.dec2_blocks)
        self.up1 = conv3(d2, c1)  # after nearest x2, at 1 m
        self.merge1 = conv3(2 * c1, d1)
        self.fusion = ScaleFusion([n, d2, d1], [10, 2, 1], c.seg_channels)
        # the 10 m semantic prior, as JointSeg's
        self.head10 = CoarseHead(n, c.coarse_channels) if c.coarse_channels else None
        init_rrdb(self.trunk.blocks)
        init_rrdb(self.trunk2.blocks)
        self._need = self._context_needs()

    @classmethod
    def lite(cls, **overrides: Any) -> BilinearSegNet:
        """Matched to ``JointSegNet.lite()`` (``CONFIGS["lite"]``)."""
        return cls(**{**CONFIGS["lite"], **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> BilinearSegNet:
        """Matched to ``JointSegNet.paper()`` (``CONFIGS["paper"]``)."""
        return cls(**{**CONFIGS["paper"], **overrides})

    # --- geometry ----------------------------------------------------------------------

    def _spans(self, out: Span) -> dict[str, Span]:
        sp = {
            "feat10/seg": self.fusion.input_span(out, 0),
            "feat2/seg": self.fusion.input_span(out, 1),
            "feat1/seg": self.fusion.input_span(out, 2),
        }
        if self.head10 is not None:
            sp["feat10/head"] = self.head10.span(out)
        sp["m1"] = sp["feat1/seg"].conv(3)  # merge1 reads [up1(...), e1]
        sp["e1"] = sp["m1"]
        sp["feat2/up"] = sp["m1"].conv(3).nearest_up(2)  # up1
        sp["m2"] = self.trunk2.span(sp["feat2/seg"].union(sp["feat2/up"])).conv(3)  # merge2
        sp["feat10/up"] = sp["m2"].nearest_up(5).conv(3)  # up2
        feat10 = sp["feat10/seg"].union(sp["feat10/up"])
        if self.head10 is not None:
            feat10 = feat10.union(sp["feat10/head"])
        d10 = self.trunk.span(feat10).conv(self.first.kernel_size[0])  # trunk, first
        e2 = strided_span(d10, *_DOWN5).union(sp["m2"])  # e2 feeds down10 and the skip
        sp["e2"] = sp["m2"]
        e1 = strided_span(e2.conv(3), *_DOWN2).union(sp["e1"])  # enc2, down2; and the skip
        sp["xn"] = e1.conv(3).bilinear_up(10)  # enc1, then the interpolation
        sp["input"] = sp["xn"]
        return sp

    def _context_needs(self) -> dict[str, int]:
        sp = self._spans(Span(0, self.scale - 1))
        need = {k: need_at(s, _GRID[k]) for k, s in sp.items() if k in _GRID}
        need["feat10"] = max(need["feat10/seg"], need["feat10/up"], need.get("feat10/head", 0))
        need["feat2"] = max(need["feat2/seg"], need["feat2/up"])
        return need

    def input_span(self, out: Span) -> Span:
        return self._spans(out)["input"]

    # --- computation -------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, margin: int = 0, sr: bool = True
    ) -> dict[str, torch.Tensor | None]:
        """``{"logits": (N, 1, H, W), "sr": None}`` for the centre of ``x``, and ``"logits10"``
        (the 10 m prior) when the network has one. ``sr`` is accepted for a common interface:
        this network has no SR branch."""
        check_margin(x, margin)
        need = self._need
        # the encoder runs on everything the 10 m trunk needs; crops happen at 10 m only
        # before the strided layers, so their phases stay those of the input grid
        xn, c = fit(self.normalize(x), margin, need["xn"])
        e1 = lrelu(self.enc1(up_bilinear(xn, 10)))
        e2 = lrelu(self.enc2(lrelu(self.down2(e1))))
        d10 = lrelu(self.down10(e2))
        feat10, c10 = in_fp32(self._trunk10, d10, c, need["feat10"])

        v, cv = fit(feat10, c10, need["feat10/up"])
        v = up_nearest(lrelu(self.up2(v)), 5)
        (v, e2s), cm = match([fit(v, 5 * cv, need["m2"]), fit(e2, 5 * c, need["m2"])])
        feat2, c2 = self.trunk2(self.merge2(torch.cat([v, e2s], 1)), cm, need["feat2"])

        w, cw = fit(feat2, c2, need["feat2/up"])
        w = lrelu(self.up1(up_nearest(w, 2)))
        (w, e1s), cm = match([fit(w, 2 * cw, need["m1"]), fit(e1, 10 * c, need["m1"])])
        feat1 = lrelu(self.merge1(torch.cat([w, e1s], 1)))

        logits, cl = self.fusion(
            [
                fit(feat10, c10, need["feat10/seg"]),
                fit(feat2, c2, need["feat2/seg"]),
                fit(feat1, cm, need["feat1/seg"]),
            ]
        )
        out: dict[str, torch.Tensor | None] = {"sr": None}
        if self.head10 is not None:
            h10, ch10 = fit(feat10, c10, need["feat10/head"])
            logits10 = (in_fp32(self.head10, h10), ch10)
            logits, cl = add_coarse_prior((logits, cl), logits10)
            out["logits10"] = crop(*logits10)
        out["logits"] = crop(logits, cl)
        return out

    def _trunk10(self, d10: torch.Tensor, ctx: int, need: int) -> tuple[torch.Tensor, int]:
        # in fp32 under autocast, as JointSeg's 10 m layers (see layers.in_fp32)
        return self.trunk(self.first(d10), ctx, need)
