"""Compute and size of networks: multiply-accumulates of one forward pass, parameter count.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
convolutions and matrix products (FLOPs = 2 x MACs); element-wise work (activations,
interpolation, softmax) is not counted.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(
    net: nn.Module, h: int, w: int, margin: int = 0, *, logits_only: bool = False
) -> int:
    """Multiply-accumulates of one forward pass on a ``(1, bands, h, w)`` input tile.

    Parameters
    ----------
    net
        An :class:`~xjointseg.models.base.ISANetwork`.
    h, w
        Size of the input tile in input (10 m) pixels, context included.
    margin
        Context pixels on each side (the outputs cover ``h - 2*margin`` by ``w - 2*margin``
        input pixels); networks that crop per stage do less work with a larger margin.
    logits_only
        Count :meth:`segment_logits` (inference of the mask) instead of ``forward``.

    Examples
    --------
    >>> from xjointseg.models.jointseg import JointSegNet
    >>> net = JointSegNet.lite()
    >>> macs = count_macs(net, 16, 16)
    >>> 20_000 < macs / (160 * 160) < 60_000   # per 1 m output pixel
    True
    """
    # count on a meta-device twin: shapes only, no arithmetic, so even the paper config on a
    # big tile is counted at once and without memory (deepcopy's memo swaps every tensor
    # for an empty meta one instead of copying it)
    memo: dict[int, torch.Tensor] = {}
    for p in net.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in net.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    twin = copy.deepcopy(net, memo)
    dtype = next(net.parameters()).dtype
    x = torch.empty(1, net.in_bands, h, w, device="meta", dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if logits_only:
            twin.segment_logits(x, margin)
        else:
            twin(x, margin)
    return counter.get_total_flops() // 2


def count_params(net: nn.Module) -> int:
    """Number of trainable parameters (buffers such as band statistics excluded)."""
    return sum(p.numel() for p in net.parameters())


__all__ = ["count_macs", "count_params"]
