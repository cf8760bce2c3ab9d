"""Models as the engine sees them: a network plus its bands, geometry, checksum and device.

* :func:`load_model` resolves a registered name, a file path or a URL with a checksum,
  verifies the sha256 and returns a :class:`Model`. Loaded models live in a per-process
  cache keyed by (sha256, device), so each process (or Dask worker) loads a model once.
* :class:`ModelRef` is what goes into a Dask graph instead of the model: a few strings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import threading
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from safetensors.torch import save as st_save

from ..errors import OptionError, PredictInputError, UnknownModelError, WeightsError
from ..paths import is_url
from ..schema import OUTPUT_KINDS, PRECISIONS
from ._threads import tile_pool
from .base import ISANetwork
from .decision import MaskRule
from .flops import peak_activation_bytes
from .weights import build_from_weights, read_weights, sha256_bytes

OutputKind = Literal["mask", "probability"]
BUILTIN_NAMES = ("jointseg", "bilinear")  # the names the package ships weights under


def _architectures() -> dict[str, type]:
    from .architectures import ARCHITECTURES
    from .toy import ToyNet

    return {**ARCHITECTURES, ToyNet.arch: ToyNet}


def registered_models() -> dict[str, dict[str, Any]]:
    """Named weights bundled with the package: ``{name: {"file", "sha256", ...}}``."""
    text = resources.files("xjointseg.models").joinpath("weights/registry.json").read_text()
    return json.loads(text)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise any torch device string."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(
            f"device {device!r} is not a torch device: use 'auto', 'cpu', 'cuda'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} asked for, but torch sees no CUDA GPU: use 'cpu'")
    return dev


class Model:
    """A network ready for inference, with what the engine needs to know about it.

    Attributes
    ----------
    name : str
        Model name (e.g. ``"jointseg"``).
    bands : tuple of str
        Sentinel-2 band names the network reads, in order (e.g. ``("B04", "B03", "B02")``).
    scale : int
        Output pixels per input pixel along each axis (10).
    halo : int
        Input pixels of context that one output pixel can depend on (receptive-field radius).
    align : int
        Input-pixel multiple that tile origins must keep.
    sha256 : str
        Checksum of the weights file (or of the serialised tensors for in-memory models).
    mask_rule : MaskRule
        How the 1 m logits become the 0/1 mask (metadata ``mask_rule``: ``"threshold"``, the
        default, or ``"fraction"``, sub-pixel allocation in each 10 m pixel; see
        :mod:`xjointseg.models.decision`), with its calibration (``threshold``, and
        ``mask_slope``, 1 when the weights do not say).
    metadata : dict
        The weights' metadata (architecture, config, training data, metrics...).
    source : str or None
        Where the weights were read from; ``None`` for a model built in memory.
    """

    def __init__(
        self,
        network: ISANetwork,
        *,
        name: str,
        bands: tuple[str, ...] | list[str],
        sha256: str,
        metadata: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        source: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.network = network.eval().to(self.device)
        if self.device.type == "cpu":
            # channels_last runs oneDNN's fastest convolution path (~1.5x on this class of CPU)
            # torch's stubs lack Module.to(memory_format=...), which torch accepts
            self.network = self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.name = name
        self.bands = tuple(bands)
        self.scale = int(network.scale)
        self.halo = int(network.halo)
        self.align = int(network.align)
        self.sha256 = sha256
        self.metadata = dict(metadata or {})
        self.mask_rule = MaskRule(
            self.metadata.get("mask_rule", "threshold"),
            float(self.metadata.get("threshold", 0.5)),
            self.scale,
            float(self.metadata.get("mask_slope", 1.0)),
        )
        self.source = source
        # One batch at a time per model on a GPU: it already fills the device. (On the CPU
        # the shared tile pool bounds how many tiles run at once.)
        self._lock = threading.Lock()
        self._footprint: dict[int, int] = {}

    @classmethod
    def from_network(
        cls,
        network: ISANetwork,
        *,
        name: str,
        bands: tuple[str, ...] | list[str],
        device: str | torch.device = "cpu",
        mask_rule: MaskRule | None = None,
    ) -> Model:
        """Wrap a network held in memory. Its checksum is that of its serialised tensors, and
        of ``mask_rule`` when one is given (default: a threshold at 0.5), so models that
        make different masks never share a Dask token."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        meta = {"arch": network.arch, "config": network.config, "name": name, "bands": bands}
        rule = {}
        if mask_rule is not None:
            rule = {
                "mask_rule": mask_rule.kind,
                "threshold": mask_rule.threshold,
                "mask_slope": mask_rule.slope,
            }
        digest = sha256_bytes(
            st_save(tensors, metadata={k: str(v) for k, v in rule.items()} or None)
        )
        return cls(
            network,
            name=name,
            bands=bands,
            sha256=digest,
            metadata=meta | rule,
            device=device,
        )

    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, bands={self.bands}, scale={self.scale}, "
            f"halo={self.halo}, align={self.align}, device='{self.device}', "
            f"mask_rule='{self.mask_rule.kind}', sha256='{self.sha256[:12]}...')"
        )

    @property
    def threshold(self) -> float:
        """The mask rule's calibration threshold (metadata ``threshold``; 0.5 when the weights
        do not say): under a threshold rule, the ISA probability at which a 1 m pixel is ISA."""
        return self.mask_rule.threshold

    @property
    def placement(self) -> dict[str, Any] | None:
        """How well these weights place ISA *inside* a 10 m pixel, as measured on held-out
        aerial places (metadata ``placement``, or the bundled registry's entry for this
        checksum): ``within_pixel_auc`` of the 1 m probability and ``smooth_field_auc`` of
        its own 10 m field up-sampled bilinearly (see
        :func:`xjointseg.metrics.within_pixel_auc`), with the ``places`` and the
        ``command`` that measured them. ``None`` when never measured. Where the two are
        close, the 1 m map is the 10 m estimate drawn finely: read areas and shares, not
        single roofs."""
        found = self.metadata.get("placement")
        if found is None:
            found = next(
                (
                    entry.get("placement")
                    for entry in registered_models().values()
                    if entry.get("sha256") == self.sha256
                ),
                None,
            )
        return dict(found) if found else None

    @property
    def fill_values(self) -> np.ndarray:
        """Per-band DN that stands in for missing input: the normalisation mean (-> 0)."""
        return self.network.band_mean.detach().float().cpu().numpy().reshape(-1)

    def resolve_precision(self, precision: str = "auto") -> str:
        """``"fp32"`` or ``"bf16"``: what ``precision`` means for this model's device.

        ``"auto"`` is bf16 autocast on GPUs with bf16 support and fp32 on every CPU, so that
        CPUs with and without native bf16 give the same masks. (On a CPU :meth:`predict`
        runs each tile on one torch thread, so either precision gives the same bits
        whatever the scheduler and thread count.) ``"bf16"`` on a CPU that computes it
        natively (AVX-512 BF16 / AMX) is faster and stays an explicit choice. The networks
        keep their 10 m layers in fp32 under autocast
        (:func:`~xjointseg.models.layers.in_fp32`), so bf16 masks differ from fp32 only
        where the decision is within rounding: a probability at :attr:`threshold`, or
        (fraction rule) two nearly equal logits in a 10 m pixel or an expected ISA count
        near a half.
        """
        if precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if precision != "auto":
            return precision
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "fp32"

    def activation_bytes(self, tile: int) -> int:
        """Peak bytes of the tensors alive while one ``tile`` x ``tile`` tile (plus its halo)
        is segmented: the memory a tile costs beyond the model itself.

        Measured, not guessed: the network runs once on a meta-device twin (shapes only, no
        arithmetic, so it takes about a second at most, even for the paper configuration) and
        every tensor it allocates is counted until it is freed. fp32 sizes, so an upper bound
        under bf16 autocast. Cached per tile size.
        """
        tile = int(tile)
        if tile not in self._footprint:
            size = tile + 2 * self.halo
            self._footprint[tile] = peak_activation_bytes(self.network, size, size, self.halo)
        return self._footprint[tile]

    def ref(self, device: str | None = None) -> ModelRef:
        """A small, picklable reference that reloads this model in any process.

        ``device`` is resolved where the model is loaded (``"auto"``: each Dask worker picks
        its own GPU, or the CPU); by default, this model's device.
        """
        return ModelRef(
            source=self.source, sha256=self.sha256, device=device or str(self.device), model=self
        )

    def predict(
        self,
        batch: np.ndarray,
        *,
        output: OutputKind = "mask",
        margin: int = 0,
        precision: Literal["auto", "fp32", "bf16"] = "auto",
    ) -> np.ndarray:
        """Segment a batch of tiles.

        On the CPU each tile runs alone on one torch thread, as many tiles at once as the
        caller has torch threads (:mod:`xjointseg.models._threads`): a tile's result is
        then the same bits whatever the batch, the scheduler and the thread count.

        Parameters
        ----------
        batch : numpy.ndarray
            float32 ``(N, len(bands), h, w)`` Sentinel-2 DN (reflectance x 10000).
        output : {"mask", "probability"}
            ``"mask"``: uint8 0/1 (decided by :attr:`mask_rule` on the device, so only uint8
            crosses back); ``"probability"``: float32 in [0, 1].
        margin : int
            Input pixels of context on each side; outputs cover the centre only.
        precision : {"auto", "fp32", "bf16"}
            ``"auto"``: bf16 autocast on GPUs that support it, fp32 on CPUs. See
            :meth:`resolve_precision`.

        Returns
        -------
        numpy.ndarray
            ``(N, scale * (h - 2 * margin), scale * (w - 2 * margin))``.

        Examples
        --------
        >>> import numpy as np
        >>> from xjointseg.testing import toy_model
        >>> m = toy_model()
        >>> m.predict(np.full((2, 3, 8, 8), 900, np.float32), margin=2).shape
        (2, 40, 40)
        """
        if output not in OUTPUT_KINDS:
            raise OptionError(f"output must be one of {OUTPUT_KINDS}, not {output!r}")
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            got = getattr(batch, "dtype", type(batch).__name__)
            raise PredictInputError(
                f"predict needs a float32 numpy array, got {got}: use batch.astype(np.float32)"
            )
        if batch.ndim != 4 or batch.shape[1] != len(self.bands):
            raise PredictInputError(
                f"predict needs shape (N, {len(self.bands)}, h, w) for bands {self.bands}, "
                f"got {batch.shape}"
            )
        if min(batch.shape[2:]) <= 2 * margin:
            raise PredictInputError(f"tiles of {batch.shape[2:]} px leave nothing inside margin")
        if not np.isfinite(batch).all():
            # a network maps NaN to some class: missing pixels must be filled and masked
            raise PredictInputError(
                "predict got NaN or infinite values: fill missing pixels first (e.g. with "
                "model.fill_values per band) and mask their outputs; segment() does both"
            )
        x = torch.from_numpy(np.ascontiguousarray(batch))
        bf16 = self.resolve_precision(precision) == "bf16"
        if self.device.type != "cpu":
            if self.device.type == "cuda":
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True)
            with self._lock:  # the whole device runs one batch at a time
                return self._run(x, margin, output, bf16)
        # each tile alone on one torch thread, tiles side by side (see models/_threads.py)
        x = x.contiguous(memory_format=torch.channels_last)
        pool = tile_pool()
        jobs = [pool.submit(self._run, x[i : i + 1], margin, output, bf16) for i in range(len(x))]
        return np.concatenate([job.result() for job in jobs])

    def _run(self, x: torch.Tensor, margin: int, output: str, bf16: bool) -> np.ndarray:
        """The network and the mask rule on tiles already on the device."""
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            logits = self.network.segment_logits(x, margin)[:, 0].float()
            if output == "mask":
                out = self.mask_rule(logits).to(torch.uint8)
            else:
                out = torch.sigmoid(logits)
            return out.cpu().numpy()


@dataclass(frozen=True)
class ModelRef:
    """What a Dask graph carries instead of a model: where to load it from, and its checksum.

    ``load()`` goes through the per-process cache, so a worker loads each model once. A
    model built in memory (no ``source``) can only be used in the process that built it.
    """

    source: str | None
    sha256: str
    device: str
    model: Model | None = field(default=None, compare=False, repr=False)

    def __dask_tokenize__(self) -> tuple:
        # the weights, not where they were read from, define the computation
        return ("xjointseg.ModelRef", self.sha256, self.device)

    def __reduce__(self):
        # Never pickle the model itself: workers reload it from the source.
        return (ModelRef, (self.source, self.sha256, self.device))

    def load(self) -> Model:
        if self.model is not None:
            return self.model
        if self.source is None:
            raise UnknownModelError(
                "this model was built in memory in another process and cannot be loaded here: "
                "save it with xjointseg.save_model(...) and pass the file path instead"
            )
        return load_model(self.source, device=self.device, sha256=self.sha256)


_CACHE: dict[tuple[str, str], Model] = {}
_CACHE_LOCK = threading.Lock()


def cached_models() -> list[tuple[str, str]]:
    """(sha256, device) of the models loaded in this process, sorted."""
    with _CACHE_LOCK:
        return sorted(_CACHE)


# sha256 of the files this process has read, by (path, inode, size, mtime): a file that is
# rewritten or replaced gets another identity and is read and hashed again
_DIGESTS: dict[tuple, str] = {}


def _file_identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def _known_sha256(name_or_path: str | os.PathLike, sha256: str | None) -> str | None:
    """The checksum ``load_model`` will verify, if it is known without reading the file."""
    if sha256:
        return sha256.lower()
    text = str(name_or_path)
    if is_url(text):
        frag = urllib.parse.parse_qs(urllib.parse.urlsplit(text).fragment)
        return cast("list[str | None]", frag.get("sha256") or [None])[0]
    registry = registered_models()
    if text in registry:
        return registry[text]["sha256"]
    try:
        return _DIGESTS.get(_file_identity(Path(text).expanduser()))
    except OSError:
        return None


def _download(url: str, sha256: str) -> Path:
    """Fetch ``url`` once into the user cache, verified against ``sha256``."""
    cache = Path(os.environ.get("XJOINTSEG_CACHE", Path.home() / ".cache" / "xjointseg"))
    target = cache / f"{sha256}.safetensors"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        try:
            _fetch(url, tmp)
        except (OSError, ValueError, ImportError) as exc:  # unreachable, 404, unknown protocol
            tmp.unlink(missing_ok=True)
            raise WeightsError(f"cannot download weights from {url}: {exc}") from exc
        read_weights(tmp, expected_sha256=sha256)  # verify before it takes the final name
        tmp.replace(target)
    return target


def _fetch(url: str, target: Path) -> None:
    """Stream ``url`` into ``target``, never whole in memory: HTTP(S) by torch.hub's
    downloader, any other protocol fsspec knows (``s3://``, ``gs://``, ``file://``) by fsspec."""
    if url.startswith(("http://", "https://")):
        from torch.hub import download_url_to_file

        download_url_to_file(url, str(target), progress=False)
        return
    import fsspec

    with fsspec.open(url, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _resolve(name_or_path: str | os.PathLike, sha256: str | None) -> tuple[Path, str | None]:
    """Map a name, path or URL to a local file and the checksum it must have.

    Registered names come with their checksum, so a bundled file that was altered (or
    replaced by weights of another architecture) fails verification.
    """
    text = str(name_or_path)
    registry = registered_models()
    if text in registry:
        entry = registry[text]
        path = Path(str(resources.files("xjointseg.models").joinpath("weights", entry["file"])))
        if not path.exists():
            raise WeightsError(f"bundled weights for '{text}' are missing from the install")
        return path, sha256 or entry["sha256"]
    if is_url(text):
        parsed = urllib.parse.urlsplit(text)
        frag = urllib.parse.parse_qs(parsed.fragment)
        sha256 = sha256 or cast("list[str | None]", frag.get("sha256") or [None])[0]
        if not sha256:
            raise WeightsError(
                f"a weights URL needs its checksum: load_model('{text}', sha256='...') "
                "or append '#sha256=...' to the URL"
            )
        return _download(urllib.parse.urlunsplit(parsed._replace(fragment="")), sha256), sha256
    path = Path(text).expanduser()
    if path.is_file():
        return path, sha256
    if text in BUILTIN_NAMES:
        raise UnknownModelError(
            f"no trained '{text}' weights are bundled with this version of xjointseg: train "
            f"them with `xjointseg train --arch {text} ...` and pass the weights path, e.g. "
            "segment(model='runs/jointseg/best.safetensors')"
        )
    raise UnknownModelError(
        f"unknown model {text!r}: not a registered name ({', '.join(sorted(registry))}) "
        "nor an existing weights file; pass one of the names or a path to a .safetensors file"
    )


def load_model(
    name_or_path: str | os.PathLike | Model = "jointseg",
    *,
    device: str = "auto",
    sha256: str | None = None,
) -> Model:
    """Load a model by registered name, weights path, or URL with a checksum.

    Parameters
    ----------
    name_or_path : str, path or Model
        ``"jointseg"`` (bundled default), ``"bilinear"`` (the baseline), a path to a
        ``.safetensors`` weights file, or an ``http(s)://``/``file://`` URL whose checksum is
        given by ``sha256`` or a ``#sha256=...`` fragment. A :class:`Model` is returned as is.
    device : str
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    sha256 : str, optional
        Expected checksum of the file; loading fails if it differs.

    Returns
    -------
    Model
        Cached per process by (sha256, device): loading twice returns the same object.

    Examples
    --------
    >>> from xjointseg.testing import toy_weights
    >>> m = load_model(toy_weights(), device="cpu")
    >>> m.scale, m.bands
    (10, ('B04', 'B03', 'B02'))
    """
    if isinstance(name_or_path, Model) or _is_model_like(name_or_path):
        return cast(Model, name_or_path)  # a model-like object stands in for a Model
    if sha256 is not None and not (
        isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= set(string.hexdigits)
    ):
        raise OptionError(
            f"sha256 must be the weights' checksum as 64 hex digits (what sha256sum prints), "
            f"not {sha256!r}"
        )
    dev = resolve_device(device)
    # The cache first: when the checksum is known without reading the file (a ModelRef, a
    # registered name, a URL, a path already hashed) a cached model costs a dict look-up,
    # not a read, a hash and a parse of the weights on every Dask task.
    known = _known_sha256(name_or_path, sha256)
    if known is not None:
        cached = _CACHE.get((known, str(dev)))
        if cached is not None:
            return cached
    path, expected = _resolve(name_or_path, sha256)
    weights = read_weights(path, expected_sha256=expected)
    with contextlib.suppress(OSError):
        _DIGESTS[_file_identity(path)] = weights.sha256
    key = (weights.sha256, str(dev))
    with _CACHE_LOCK:
        if key not in _CACHE:
            network = build_from_weights(weights, _architectures())
            meta = weights.metadata
            _CACHE[key] = Model(
                network,
                name=meta["name"],
                bands=meta["bands"],
                sha256=weights.sha256,
                metadata=meta,
                device=dev,
                # absolute: a worker started in another folder reloads the same file
                source=str(name_or_path) if is_url(name_or_path) else str(Path(path).absolute()),
            )
        return _CACHE[key]


MODEL_ATTRIBUTES = ("bands", "scale", "halo", "align", "predict")


def placement_note(model: Any) -> str:
    """One line for a figure caption: what the 1 m placement of ``model`` is worth (any
    model-like object; see :attr:`Model.placement`)."""
    p = getattr(model, "placement", None)
    if not p:
        return "1 m placement inside 10 m pixels not measured for these weights"
    return (
        f"placement inside 10 m pixels: within-pixel AUC {p['within_pixel_auc']:.3f}, "
        f"{p['smooth_field_auc']:.3f} for the up-sampled 10 m field alone"
    )


def _is_model_like(obj: object) -> bool:
    """Any object with the engine's contract (bands, scale, halo, align, predict) is a model."""
    return not isinstance(obj, str | os.PathLike) and all(hasattr(obj, a) for a in MODEL_ATTRIBUTES)


def model_ref(model, device: str | None = None) -> ModelRef:
    """The graph's reference to ``model``; an object that is not a :class:`Model` stays in
    memory (usable in this process only)."""
    if isinstance(model, Model):
        return model.ref(device)
    return ModelRef(None, getattr(model, "sha256", ""), device or "cpu", model=model)
