"""U-Net discriminator with spectral normalisation, for the adversarial super-resolution loss.

The design follows the discriminator described for Real-ESRGAN (Wang et al. 2021) and named
for JointSeg's Prog-ESRGAN: a U-Net that gives one realness logit *per pixel* (local
feedback on textures, not one score per image), with spectral normalisation on its
convolutions to keep the adversarial game stable. Used in training only; it is not an
:class:`~xjointseg.models.base.ISANetwork`.

Layout (``c`` = ``channels``)::

    x -> conv3 (c)                                        s0   full size
      -> conv 4x4/2 (2c) -> conv 4x4/2 (4c) -> conv 4x4/2 (8c)   s1, s2, s3
      -> bilinear x2 -> conv3 (4c) + s2 -> bilinear x2 -> conv3 (2c) + s1
      -> bilinear x2 -> conv3 (c) + s0 -> conv3 -> conv3 -> conv3 (1)   logits, full size

Any input size works: each up-sampling goes to the size of its skip connection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .layers import lrelu


def _sn_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    pad = (kernel - 1) // 2 if stride == 1 else 1
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, bias=False))


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel realness logits ``(N, 1, H, W)`` for images ``(N, in_channels, H, W)``.

    Parameters
    ----------
    in_channels
        Bands of the images judged (the SR image's bands).
    channels
        Width of the first level (doubled at each of the three down-samplings).
    skip
        Add encoder features to the decoder (the U-Net skips); ``False`` gives a plain
        encoder-decoder.

    Examples
    --------
    >>> import torch
    >>> d = UNetDiscriminatorSN(in_channels=3, channels=16)
    >>> d(torch.zeros(2, 3, 40, 40)).shape
    torch.Size([2, 1, 40, 40])
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, skip: bool = True) -> None:
        super().__init__()
        c = channels
        self.skip = skip
        # the first convolution is left without spectral norm (it sees raw pixels, as in
        # Real-ESRGAN); every later one is normalised
        self.conv0 = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down = nn.ModuleList(
            [_sn_conv(c, 2 * c, 4, 2), _sn_conv(2 * c, 4 * c, 4, 2), _sn_conv(4 * c, 8 * c, 4, 2)]
        )
        self.up = nn.ModuleList(
            [_sn_conv(8 * c, 4 * c, 3), _sn_conv(4 * c, 2 * c, 3), _sn_conv(2 * c, c, 3)]
        )
        self.extra = nn.ModuleList([_sn_conv(c, c, 3), _sn_conv(c, c, 3)])
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [lrelu(self.conv0(x))]
        for conv in self.down:
            skips.append(lrelu(conv(skips[-1])))
        h = skips.pop()
        for conv in self.up:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = lrelu(conv(h))
            if self.skip:
                h = h + s
        for conv in self.extra:
            h = lrelu(conv(h))
        return self.out(h)


__all__ = ["UNetDiscriminatorSN"]
