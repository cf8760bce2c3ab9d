"""Compute and size of networks: multiply-accumulates of one forward pass, parameter count.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
convolutions and matrix products (FLOPs = 2 x MACs); element-wise work (activations,
interpolation, softmax) is not counted.
"""

from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from .base import ISANetwork


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
    twin = _meta_twin(net)
    dtype = next(net.parameters()).dtype
    x = torch.empty(1, cast(int, net.in_bands), h, w, device="meta", dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if logits_only:
            cast("ISANetwork", twin).segment_logits(x, margin)
        else:
            twin(x, margin)
    return counter.get_total_flops() // 2


def _meta_twin(net: nn.Module) -> nn.Module:
    """A copy of ``net`` on the meta device: shapes only, no arithmetic, so even the paper
    configuration on a big tile runs at once and without memory (deepcopy's memo swaps every
    tensor for an empty meta one instead of copying it)."""
    memo: dict[int, torch.Tensor] = {}
    for p in net.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in net.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(net, memo)


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages alive while it is active, and their peak.

    Each storage an operator creates is counted once (views and in-place results share their
    input's storage) and uncounted when Python frees it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = 0
        self._alive: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._alive:
                continue
            self._alive.add(key)
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self.now -= nbytes
        self._alive.discard(key)


def peak_activation_bytes(net: nn.Module, h: int, w: int, margin: int = 0) -> int:
    """Peak bytes of the tensors alive during :meth:`segment_logits` on a ``(1, bands, h, w)``
    tile with ``margin`` pixels of context: what one tile costs in memory beyond the weights.

    Measured on a meta-device twin in the network's own dtype (the storage of every tensor
    an operator allocates, until it is freed); memory that kernels use internally, outside
    tensors, is not seen.

    Examples
    --------
    >>> from xjointseg.models.jointseg import JointSegNet
    >>> net = JointSegNet.lite()
    >>> a, b = (peak_activation_bytes(net, t + 78, t + 78, 39) for t in (64, 128))
    >>> 3 < b / a < 4.5  # about 4x the pixels, 4x the bytes
    True
    """
    twin = _meta_twin(net)
    dtype = next(net.parameters()).dtype
    x = torch.empty(1, cast(int, net.in_bands), h, w, device="meta", dtype=dtype)
    live = _LiveBytes()
    with torch.inference_mode(), live:
        cast("ISANetwork", twin).segment_logits(x, margin)
    return live.peak


def count_params(net: nn.Module) -> int:
    """Number of trainable parameters (buffers such as band statistics excluded)."""
    return sum(p.numel() for p in net.parameters())


__all__ = ["count_macs", "count_params", "peak_activation_bytes"]
