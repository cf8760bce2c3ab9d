"""Network architectures by name, and their named configurations.

The weights loader rebuilds a network from ``(arch, config)`` stored in a weights file; the
trainer builds a fresh one from ``default_config(arch, size)``. ``toy`` (an untrained tiny
network with the full contract) is registered too, for tests and examples.
"""

from __future__ import annotations

from typing import Any

from . import bilinear, jointseg, toy
from .base import ISANetwork
from .bilinear import BilinearSegNet
from .jointseg import JointSegNet
from .toy import ToyNet

ARCHITECTURES: dict[str, type[ISANetwork]] = {
    JointSegNet.arch: JointSegNet,
    BilinearSegNet.arch: BilinearSegNet,
    ToyNet.arch: ToyNet,
}

#: Named configurations per architecture: ``CONFIGS[arch][size]``.
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    JointSegNet.arch: jointseg.CONFIGS,
    BilinearSegNet.arch: bilinear.CONFIGS,
    ToyNet.arch: toy.CONFIGS,
}


def build_network(arch: str, **config: Any) -> ISANetwork:
    """Build the network ``arch`` from keyword arguments (a network's ``config``).

    Raises ``KeyError`` for an unknown architecture.

    Examples
    --------
    >>> net = build_network("jointseg", **default_config("jointseg"))
    >>> type(net).__name__, net.halo
    ('JointSegNet', 39)
    """
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**config)


def default_config(arch: str, size: str = "lite") -> dict[str, Any]:
    """A copy of the named configuration ``size`` (``"lite"`` or ``"paper"``) of ``arch``.

    Raises ``KeyError`` for an unknown architecture or size.
    """
    if arch not in CONFIGS:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(CONFIGS)}")
    sizes = CONFIGS[arch]
    if size not in sizes:
        raise KeyError(f"unknown size {size!r} for {arch!r}; known: {sorted(sizes)}")
    return dict(sizes[size])


__all__ = ["ARCHITECTURES", "CONFIGS", "build_network", "default_config"]
