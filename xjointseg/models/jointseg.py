"""JointSeg: progressive x10 super-resolution (10 m -> 2.5 m -> 1 m) joined with segmentation.

Architecture (after Deng, Hong, Li & Yokoya 2025, arXiv 2505.05367; the paper's exact layers
are not public, so widths and the fusion are this project's choices)::

    x (10 m DN) -> normalise -> xn
    stage 1 (ESRGAN-style, x4):
        conv3 -> RRDB trunk (residual)                           feat10    10 m
        nearest x2 -> conv3 -> nearest x2 -> conv3 -> conv3      h1        2.5 m
        img1 = bilinear_x4(xn) + conv3(h1)                       stage-1 SR image, 2.5 m
    stage 2 (x2.5):
        z = [bilinear_x4(xn), img1, h1] -> conv3 -> RRDB trunk   feat25    2.5 m
        exact x2.5: conv3 to 25*c channels, PixelShuffle(5) (0.5 m), PixelUnshuffle(2)
        (1 m, 4*c channels), conv3                              feat1     1 m
        sr = bilinear_x10(xn) + conv3(conv3(feat1))              SR image, 1 m (DN after
                                                                 de-normalising)
    segmentation: feat10, feat25, feat1 -> 1x1 projections -> exact bilinear to 1 m
        -> per-pixel softmax attention over the three scales (3x3 conv) -> conv3 -> conv1
        -> ISA logits, 1 m

The x2.5 step keeps pixel geometry exact: 2.5 m pixel ``k`` becomes 0.5 m pixels
``5k..5k+4`` and 1 m pixel ``m`` gathers 0.5 m pixels ``2m, 2m+1``, so no output pixel is
shifted and nothing runs at 0.5 m (the shuffles are reshapes). All attention is local (no
pooling, no normalisation over the tile), so outputs do not depend on tile extent.

``forward(x, margin)`` crops every feature map as soon as the layers after it need less
context (inside the RRDB trunks too, block by block), so the expensive 2.5 m and 1 m layers
only run on the centre plus a few input pixels. Every crop amount is derived from the same
:class:`~xjointseg.models.base.Span` walk as :meth:`JointSegNet.input_span`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .base import ISANetwork, Span, crop
from .layers import (
    CoarseHead,
    RRDBTrunk,
    ScaleFusion,
    Up2p5,
    add_coarse_prior,
    check_margin,
    conv3,
    fit,
    in_fp32,
    init_rrdb,
    lrelu,
    match,
    need_at,
    up_bilinear,
    up_nearest,
)


@dataclass(frozen=True)
class JointSegConfig:
    """The hyperparameters of :class:`JointSegNet` (its ``config`` besides the bands)."""

    stage1_channels: int = 32  # width of the 10 m RRDB trunk
    stage1_growth: int = 16  # its dense-block growth
    stage1_blocks: int = 2  # its RRDB count
    stage2_channels: int = 24  # the same three for the 2.5 m trunk
    stage2_growth: int = 12
    stage2_blocks: int = 1
    shuffle_channels: int = 4  # c of the x2.5 step: 25*c channels at 2.5 m, 4*c at 1 m
    hr_channels: int = 16  # width of the 1 m features and SR head
    seg_channels: int = 16  # width of the cross-scale fusion and segmentation head
    coarse_channels: int = 0  # width of the 10 m prior head; 0: none (older weights)


#: Named configurations. ``lite`` (the default) is sized for throughput: 38 kMAC per 1 m
#: output pixel (35 k for the mask alone), 0.55 M parameters, halo 39 px, most of the compute
#: at 2.5 m and 1 m. ``paper`` uses ESRGAN's trunk (23 RRDBs of 64 channels, growth 32) in
#: each stage: 34 M parameters, ~3 MMAC per 1 m pixel and a halo of 436 px (GPU only).
CONFIGS: dict[str, dict[str, Any]] = {
    "lite": asdict(JointSegConfig(coarse_channels=32)),
    "paper": asdict(
        JointSegConfig(
            stage1_channels=64,
            stage1_growth=32,
            stage1_blocks=23,
            stage2_channels=64,
            stage2_growth=32,
            stage2_blocks=23,
            shuffle_channels=16,
            hr_channels=64,
            seg_channels=32,
            coarse_channels=64,
        )
    ),
}

# pixels per input pixel of each named point of the network (see ``_spans``)
_GRID = {
    "xn/trunk": 1,
    "xn/b4": 1,
    "xn/sr": 1,
    "feat10/seg": 1,
    "feat10/up": 1,
    "feat10/head": 1,
    "u5": 2,
    "u25": 4,
    "h1": 4,
    "z": 4,
    "feat25/seg": 4,
    "feat25/up": 4,
    "feat1/seg": 10,
    "feat1/sr": 10,
}


class JointSegNet(ISANetwork):
    """Joint x10 super-resolution and ISA segmentation network (see the module docstring).

    Parameters
    ----------
    in_bands
        Input bands (e.g. 3 for B04, B03, B02); the SR image has the same bands.
    band_mean, band_std
        Per-band normalisation of the DN input (stored as buffers).
    **config
        The fields of :class:`JointSegConfig` (widths, growths and block counts).

    Examples
    --------
    >>> import torch
    >>> net = JointSegNet.lite()
    >>> out = net(torch.full((1, 3, 12, 12), 800.0), margin=2)
    >>> out["logits"].shape, out["sr"].shape
    (torch.Size([1, 1, 80, 80]), torch.Size([1, 3, 80, 80]))
    """

    arch = "jointseg"
    hyperparameters = JointSegConfig

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c: JointSegConfig = self.hyper
        in_bands = self.in_bands
        b, n1, n2 = in_bands, c.stage1_channels, c.stage2_channels
        # stage 1: 10 m -> 2.5 m
        self.s1_first = conv3(b, n1)
        self.s1_trunk = RRDBTrunk(n1, c.stage1_growth, c.stage1_blocks)
        self.s1_up1 = conv3(n1, n1)  # at 5 m
        self.s1_up2 = conv3(n1, n1)  # at 2.5 m
        self.s1_hr = conv3(n1, n1)
        self.s1_last = conv3(n1, b)
        # stage 2: 2.5 m -> 1 m
        self.s2_first = conv3(2 * b + n1, n2)
        self.s2_trunk = RRDBTrunk(n2, c.stage2_growth, c.stage2_blocks)
        self.s2_up = Up2p5(n2, c.shuffle_channels)
        self.s2_hr = conv3(self.s2_up.out_channels, c.hr_channels)
        # 1 m SR image head (skipped by segment_logits)
        self.sr_hr = conv3(c.hr_channels, c.hr_channels)
        self.sr_last = conv3(c.hr_channels, b)
        self.fusion = ScaleFusion([n1, n2, c.hr_channels], [10, 2.5, 1], c.seg_channels)
        # the 10 m semantic prior (0 channels: none, as in weights made before it existed)
        self.head10 = CoarseHead(n1, c.coarse_channels) if c.coarse_channels else None

        init_rrdb(self.s1_trunk.blocks)
        init_rrdb(self.s2_trunk.blocks)
        with torch.no_grad():  # SR residual heads start small: the SR image starts bilinear
            for conv in (self.s1_last, self.sr_last):
                conv.weight.mul_(0.1)
                assert conv.bias is not None  # conv3 makes a bias
                conv.bias.zero_()
        self._needs = {sr: self._context_needs(sr) for sr in (True, False)}

    @classmethod
    def lite(cls, **overrides: Any) -> JointSegNet:
        """The default configuration (``CONFIGS["lite"]``), with optional overrides."""
        return cls(**{**CONFIGS["lite"], **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> JointSegNet:
        """ESRGAN-sized trunks in both stages (``CONFIGS["paper"]``), for GPUs."""
        return cls(**{**CONFIGS["paper"], **overrides})

    # --- geometry ----------------------------------------------------------------------

    def _spans(self, out: Span, sr: bool = True) -> dict[str, Span]:
        """Span at every named point of the network for 1 m outputs ``out`` (reverse walk)."""
        sp = {
            "feat10/seg": self.fusion.input_span(out, 0),
            "feat25/seg": self.fusion.input_span(out, 1),
            "feat1/seg": self.fusion.input_span(out, 2),
        }
        if self.head10 is not None:
            sp["feat10/head"] = self.head10.span(out)
        f1 = sp["feat1/seg"]
        if sr:
            sp["feat1/sr"] = out.conv(3).conv(3)  # sr_hr, sr_last
            sp["xn/sr"] = out.bilinear_up(10)
            f1 = f1.union(sp["feat1/sr"])
        sp["feat25/up"] = self.s2_up.span(f1.conv(3))  # s2_hr, then the x2.5 step
        z = self.s2_trunk.span(sp["feat25/seg"].union(sp["feat25/up"])).conv(3)  # s2_first
        sp["z"] = z
        sp["xn/b4"] = z.bilinear_up(4)  # the bilinear input, alone and inside img1
        sp["h1"] = z.conv(3).union(z)  # through s1_last (img1), and h1 itself
        sp["u25"] = sp["h1"].conv(3)  # s1_hr
        sp["u5"] = sp["u25"].conv(3).nearest_up(2)  # s1_up2
        sp["feat10/up"] = sp["u5"].conv(3).nearest_up(2)  # s1_up1
        feat10 = sp["feat10/seg"].union(sp["feat10/up"])
        if self.head10 is not None:
            feat10 = feat10.union(sp["feat10/head"])
        sp["xn/trunk"] = self.s1_trunk.span(feat10).conv(3)  # s1_first
        sp["input"] = sp["xn/trunk"].union(sp["xn/b4"])
        if sr:
            sp["input"] = sp["input"].union(sp["xn/sr"])
        return sp

    def _context_needs(self, sr: bool) -> dict[str, int]:
        sp = self._spans(Span(0, self.scale - 1), sr)
        need = {k: need_at(s, _GRID[k]) for k, s in sp.items() if k in _GRID}
        need["feat10"] = max(need["feat10/seg"], need["feat10/up"], need.get("feat10/head", 0))
        need["feat25"] = max(need["feat25/seg"], need["feat25/up"])
        return need

    def input_span(self, out: Span) -> Span:
        return self._spans(out, sr=True)["input"]

    # --- computation -------------------------------------------------------------------

    def _run(
        self, x: torch.Tensor, margin: int, sr: bool = True, extras: bool = False
    ) -> dict[str, Any]:
        check_margin(x, margin)
        need = self._needs[sr]
        xn = self.normalize(x)

        # stage 1 at 10 m
        t, c = fit(xn, margin, need["xn/trunk"])
        feat10, c10 = in_fp32(self._trunk10, t, c, need["feat10"])  # see layers.in_fp32
        u, cu = fit(feat10, c10, need["feat10/up"])
        u = lrelu(self.s1_up1(up_nearest(u, 2)))
        u, cu = fit(u, 2 * cu, need["u5"])
        u = lrelu(self.s1_up2(up_nearest(u, 2)))
        # 2.5 m maps are cropped in steps of 2 px: the x2.5 step needs 5 m phase
        u, cu = fit(u, 2 * cu, need["u25"], 2)
        h1, ch = fit(lrelu(self.s1_hr(u)), cu, need["h1"], 2)
        l1 = self.s1_last(h1)
        xb, cb = fit(xn, margin, need["xn/b4"])
        (b4, l1, h1), cz = match(
            [
                fit(up_bilinear(xb, 4), 4 * cb, need["z"], 2),
                fit(l1, ch, need["z"], 2),
                fit(h1, ch, need["z"], 2),
            ],
            q=2,
        )
        img1 = b4 + l1  # stage-1 SR image at 2.5 m (normalised units)

        # stage 2 at 2.5 m, then x2.5 to 1 m
        z = torch.cat([b4, img1, h1], 1)
        feat25, c25 = self.s2_trunk(self.s2_first(z), cz, need["feat25"], q=2)
        p, cp = fit(feat25, c25, need["feat25/up"], 2)
        if cp % 2:
            raise AssertionError("odd 2.5 m context before the x2.5 step")
        feat1, c1 = lrelu(self.s2_hr(self.s2_up(p))), cp * 5 // 2

        logits, cl = self.fusion(
            [
                fit(feat10, c10, need["feat10/seg"]),
                fit(feat25, c25, need["feat25/seg"], 2),
                fit(feat1, c1, need["feat1/seg"]),
            ]
        )
        logits10 = None
        if self.head10 is not None:
            h10, ch10 = fit(feat10, c10, need["feat10/head"])
            logits10 = (in_fp32(self.head10, h10), ch10)
            logits, cl = add_coarse_prior((logits, cl), logits10)
        out: dict[str, Any] = {"logits": crop(logits, cl), "sr": None}
        if logits10 is not None:
            out["logits10"] = crop(*logits10)
        if sr:
            r, cr = fit(feat1, c1, need["feat1/sr"])
            r = self.sr_last(lrelu(self.sr_hr(r)))
            xs, cs = fit(xn, margin, need["xn/sr"])
            (b10, r), cs = match([(up_bilinear(xs, 10), 10 * cs), (r, cr)])
            out["sr"] = crop(self.denormalize(b10 + r), cs)
        if extras:
            out["sr_x4"] = crop(self.denormalize(img1), cz)
            out["features"] = {
                "10m": crop(feat10, c10),
                "2.5m": crop(feat25, c25),
                "1m": crop(feat1, c1),
            }
        return out

    def forward(
        self, x: torch.Tensor, margin: int = 0, sr: bool = True
    ) -> dict[str, torch.Tensor | None]:
        """``{"logits": (N, 1, H, W), "sr": (N, bands, H, W)}`` for the centre of ``x``, and
        ``"logits10"`` (N, 1, h, w), the 10 m prior, when the network has one. ``sr=False``
        skips the 1 m SR head (``"sr"`` is then ``None``)."""
        return self._run(x, margin, sr=sr)

    def forward_all(self, x: torch.Tensor, margin: int = 0) -> dict[str, Any]:
        """Like :meth:`forward`, plus ``"sr_x4"`` (the stage-1 2.5 m SR image, DN) and
        ``"features"`` (the 10 m, 2.5 m and 1 m feature maps of the centre), for training."""
        return self._run(x, margin, sr=True, extras=True)

    def segment_logits(self, x: torch.Tensor, margin: int = 0) -> torch.Tensor:
        """ISA logits only: the 1 m SR head is not run."""
        return self._run(x, margin, sr=False)["logits"]

    @property
    def prior_halo(self) -> int:
        """Input pixels of context that one pixel of the 10 m prior reads."""
        if self.head10 is None:
            raise ValueError("this network has no 10 m prior (coarse_channels=0)")
        return self.s1_trunk.span(Span(0, 0).conv(3).conv(3)).conv(3).radius()

    def prior_logits(self, x: torch.Tensor, margin: int) -> torch.Tensor:
        """The 10 m prior alone, for the centre of ``x`` (``margin >= prior_halo``): the 10 m
        trunk and the prior head, nothing at 2.5 m or 1 m. Cheap enough to supervise many
        10 m pixels with weak labels."""
        check_margin(x, margin)
        if margin < self.prior_halo:
            raise ValueError(f"margin {margin} is below the prior's halo {self.prior_halo}")
        feat10, c = in_fp32(self._trunk10, self.normalize(x), margin, 2)
        return crop(in_fp32(self.head10, feat10), c)

    def _trunk10(self, xn: torch.Tensor, ctx: int, need: int) -> tuple[torch.Tensor, int]:
        return self.s1_trunk(self.s1_first(xn), ctx, need)


__all__ = ["CONFIGS", "JointSegNet"]
