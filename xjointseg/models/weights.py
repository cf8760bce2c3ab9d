"""The weights file format: one safetensors file whose header carries JSON metadata.

Tensors are stored with :mod:`safetensors` (no pickle: loading a file never runs code).
The header's ``__metadata__`` holds one key, ``"xjointseg"``, a JSON document with what is
needed to rebuild and describe the network::

    {"format": 1, "arch": "jointseg", "config": {...}, "name": "jointseg",
     "bands": ["B04", "B03", "B02"], "scale": 10, "library_version": "0.1.0",
     "training": {...}, "metrics": {...}}

The checksum of a weights file is the sha256 of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import OutputExistsError, WeightsError
from .base import ISANetwork
from .decision import MASK_RULES

FORMAT_VERSION = 1
METADATA_KEY = "xjointseg"


@dataclass(frozen=True)
class WeightsFile:
    """A weights file read from disk and verified: tensors, metadata and checksum."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    sha256: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(
    network: ISANetwork,
    path: str | os.PathLike,
    *,
    name: str,
    bands: tuple[str, ...] | list[str],
    extra: dict[str, Any] | None = None,
) -> str:
    """Save a network as an xjointseg weights file (safetensors + JSON); return its sha256.

    ``extra`` is merged into the metadata (e.g. ``{"training": ..., "metrics": ...}``).
    An existing file at ``path`` is replaced only if it is an xjointseg weights file.

    Examples
    --------
    >>> import os, tempfile
    >>> from xjointseg import load_model
    >>> from xjointseg.testing import ToyNet
    >>> p = os.path.join(tempfile.mkdtemp(), "mine.safetensors")
    >>> digest = save_model(ToyNet(in_bands=3), p, name="mine", bands=("B04", "B03", "B02"))
    >>> load_model(p, device="cpu").sha256 == digest
    True
    """
    from .._version import __version__
    from ..paths import check_writable

    missing = [a for a in ("arch", "config", "in_bands", "scale") if not hasattr(network, a)]
    if missing:
        raise WeightsError(
            f"{type(network).__name__} is not an xjointseg network (it has no {missing}): "
            "save a network from xjointseg.models (JointSegNet, BilinearSegNet, ToyNet...)"
        )
    if isinstance(bands, str) or not all(isinstance(b, str) for b in bands):
        raise WeightsError(
            f"bands must be a list of band names, one per input band, e.g. "
            f"('B04', 'B03', 'B02'), not {bands!r}"
        )
    if not isinstance(path, str | os.PathLike) or not os.fspath(path).strip():
        raise WeightsError(f"path must be a file path such as 'mine.safetensors', not {path!r}")
    if not isinstance(name, str) or not name.strip():
        raise WeightsError(f"name must be a non-empty string (the model's name), not {name!r}")
    check_writable(path)
    if len(bands) != network.in_bands:
        raise WeightsError(
            f"{len(bands)} band names given for a network with {network.in_bands} input bands"
        )
    if extra is not None and not isinstance(extra, Mapping):
        raise WeightsError(f"extra must be a dict of metadata, not {type(extra).__name__}")
    core = {"format", "arch", "config", "name", "bands", "scale", "library_version"}
    if extra and core & set(extra):
        raise WeightsError(
            f"extra may not set {sorted(core & set(extra))}: save_model writes those from the "
            "network and its arguments; pass them as arguments (name=, bands=) instead"
        )
    meta = {
        "format": FORMAT_VERSION,
        "arch": network.arch,
        "config": network.config,
        "name": name,
        "bands": list(bands),
        "scale": network.scale,
        "library_version": __version__,
        **(extra or {}),
    }
    try:
        text = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise WeightsError(
            f"extra must hold JSON values (str, int, float, bool, None, lists, dicts): {err}; "
            "convert numpy numbers with float() or int()"
        ) from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    data = st_save(tensors, metadata={METADATA_KEY: text})
    path = Path(path)
    if path.exists() and not is_weights_file(path):
        raise OutputExistsError(
            f"{path} exists and is not an xjointseg weights file: xjointseg replaces only "
            "weights it wrote. Pick another path, or remove the file yourself"
        )
    # a unique temporary name: a user's file named like it is never touched
    path.parent.mkdir(parents=True, exist_ok=True)  # checked writable above
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)  # never leave a half-written weights file under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_bytes(data)


def is_weights_file(path: str | Path) -> bool:
    """True for a safetensors file whose header carries xjointseg's metadata (read alone)."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size <= 100 * 2**20:
                return False
            header = json.loads(fh.read(size))
        return METADATA_KEY in header.get("__metadata__", {})
    except (OSError, ValueError, AttributeError):
        return False


def read_weights(path: str | Path, expected_sha256: str | None = None) -> WeightsFile:
    """Read and verify a weights file. Raises :class:`WeightsError` on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise WeightsError(
            f"checksum mismatch for {path}: expected sha256 {expected_sha256}, file has "
            f"{digest}. The file is corrupt or is not the one you meant: download it again."
        )
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"][METADATA_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError, OSError) as exc:
        raise WeightsError(
            f"{path} is not an xjointseg weights file (safetensors with xjointseg metadata): "
            f"{exc}. Save weights with xjointseg.save_model()."
        ) from exc
    _check_metadata(path, meta)
    return WeightsFile(tensors=tensors, metadata=meta, sha256=digest)


def _check_metadata(path: Path, meta: Any) -> None:
    """Refuse metadata whose keys or types later steps cannot rely on: a broken file, not
    a Python error later."""
    if not isinstance(meta, dict):
        raise WeightsError(
            f"{path}: the xjointseg metadata is a {type(meta).__name__}, not a JSON object; "
            "save weights with xjointseg.save_model()"
        )
    for key in ("arch", "config", "name", "bands"):
        if key not in meta:
            raise WeightsError(f"{path}: metadata lacks '{key}'; the file is incomplete")
    kinds = {"arch": str, "config": dict, "name": str, "bands": list, "format": int}
    for key, kind in kinds.items():
        if key in meta and not isinstance(meta[key], kind):
            raise WeightsError(
                f"{path}: metadata '{key}' is {meta[key]!r}, not a {kind.__name__}; the file "
                "is damaged or was not written by xjointseg.save_model()"
            )
    if not all(isinstance(b, str) for b in meta["bands"]):
        raise WeightsError(f"{path}: metadata 'bands' must be band names, not {meta['bands']!r}")
    threshold = meta.get("threshold", 0.5)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 < threshold < 1
    ):
        raise WeightsError(
            f"{path}: metadata 'threshold' must be an ISA probability between 0 and 1, not "
            f"{threshold!r}; the file is damaged or was not written by xjointseg.save_model()"
        )
    slope = meta.get("mask_slope", 1.0)
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not slope > 0:
        raise WeightsError(
            f"{path}: metadata 'mask_slope' must be a positive number, not {slope!r}; the "
            "file is damaged or was not written by xjointseg.save_model()"
        )
    if meta.get("mask_rule", "threshold") not in MASK_RULES:
        raise WeightsError(
            f"{path}: metadata 'mask_rule' must be one of {MASK_RULES}, not "
            f"{meta['mask_rule']!r}; the file is damaged or was not written by xjointseg"
        )
    if meta.get("format", 0) > FORMAT_VERSION:
        raise WeightsError(
            f"{path} uses weights format {meta['format']}, newer than this xjointseg "
            f"understands ({FORMAT_VERSION}): upgrade xjointseg"
        )


def build_from_weights(weights: WeightsFile, architectures: dict[str, type]) -> ISANetwork:
    """Instantiate the network described by the metadata and load its tensors strictly."""
    meta = weights.metadata
    cls = architectures.get(meta["arch"])
    if cls is None:
        raise WeightsError(
            f"weights are for architecture '{meta['arch']}', unknown to this xjointseg "
            f"(known: {sorted(architectures)}); upgrade xjointseg or check the file"
        )
    try:
        network = cls(**meta["config"])
    except TypeError as exc:
        raise WeightsError(
            f"weights config does not fit architecture '{meta['arch']}': {exc}"
        ) from exc
    try:
        network.load_state_dict(weights.tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(
            f"the tensors do not match architecture '{meta['arch']}' with config "
            f"{meta['config']}: {first}"
        ) from exc
    if len(meta["bands"]) != network.in_bands:
        raise WeightsError(
            f"metadata names {len(meta['bands'])} bands for a network with {network.in_bands}"
        )
    return network.eval()
