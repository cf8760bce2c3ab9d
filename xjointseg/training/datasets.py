"""Training material: high-resolution images with 1 m ISA labels, and crops for training.

A :class:`Scene` is one place: a 1 m RGB image (the super-resolution target, from which the
10 m input is simulated) and its labels (0 not ISA, 1 ISA, 255 ignore), or a real 10 m
Sentinel-2 input with 1 m labels (then there is no super-resolution target). Validation is
split by place — whole scenes are held out — never by crops of the same scene.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import XJointSegError

IGNORE = 255
WEAK_NEGATIVE = 2  # unlabelled, probably not ISA: a negative with a small loss weight
SCALE = 10


class TrainingDataError(XJointSegError, ValueError):
    """Training images or labels are unreadable, inconsistent, or filtered away entirely."""


@dataclass
class Scene:
    """One place: ``hr`` (H, W, 3) uint8 sRGB at 1 m and/or ``lr`` (3, H/10, W/10) DN, and
    ``label`` (H, W) uint8: 0 not ISA, 1 ISA, 2 weak negative, 255 ignore. H and W are
    multiples of 10."""

    name: str
    place: str
    label: np.ndarray
    hr: np.ndarray | None = None
    lr: np.ndarray | None = None

    def __post_init__(self) -> None:
        h, w = self.label.shape
        if h % SCALE or w % SCALE:
            raise TrainingDataError(f"{self.name}: label size {h}x{w} is not a multiple of 10")
        if self.hr is not None and self.hr.shape[:2] != (h, w):
            raise TrainingDataError(
                f"{self.name}: image {self.hr.shape[:2]} and label {(h, w)} differ in size"
            )
        if self.lr is not None and self.lr.shape[1:] != (h // SCALE, w // SCALE):
            raise TrainingDataError(
                f"{self.name}: 10 m input {self.lr.shape[1:]} does not match 1 m label {(h, w)}"
            )
        codes = set(np.unique(self.label).tolist()) - {0, 1, WEAK_NEGATIVE, IGNORE}
        if codes:
            raise TrainingDataError(f"{self.name}: label codes {sorted(codes)} are not 0/1/2/255")


def read_rgb_image(path: Path) -> np.ndarray:
    """An image file (aerial JPEG, colour-coded PNG mask) as an (H, W, 3) uint8 array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise TrainingDataError(f"cannot read image {path}: {exc}") from exc


def _crop10(*arrays: np.ndarray) -> list[np.ndarray]:
    """Crop arrays (1 m, same height/width) to a multiple of 10 px per side."""
    h, w = arrays[0].shape[:2]
    return [a[: h - h % SCALE, : w - w % SCALE] for a in arrays]


def load_dubai(root: str | Path) -> list[Scene]:
    """The Dubai aerial set: ISA = building + road; land, vegetation, water are not ISA;
    'unlabeled' and any other colour are ignored. Places are the folders ``tile1..tile7``."""
    root = Path(root)
    spec = json.loads((root / "classes.json").read_text())
    colours = {name: tuple(rgb) for name, rgb in spec["classes"].items()}
    scenes = []
    for image in sorted(root.glob("tile*/images/*.jpg")):
        mask_path = image.parent.parent / "masks" / (image.stem + ".png")
        rgb, mask = read_rgb_image(image), read_rgb_image(mask_path)
        if rgb.shape != mask.shape:
            raise TrainingDataError(f"{image}: image {rgb.shape} and mask {mask.shape} differ")
        label = np.full(mask.shape[:2], IGNORE, np.uint8)
        for name in spec["isa"]:
            label[(mask == colours[name]).all(-1)] = 1
        for name in spec["not_isa"]:
            label[(mask == colours[name]).all(-1)] = 0
        rgb, label = _crop10(rgb, label)
        scenes.append(
            Scene(
                f"dubai/{image.parent.parent.name}/{image.stem}",
                f"dubai/{image.parent.parent.name}",
                label,
                hr=rgb,
            )
        )
    if not scenes:
        raise TrainingDataError(f"no Dubai images found under {root}")
    return scenes


def excess_green(rgb: np.ndarray) -> np.ndarray:
    """The excess green index of an (H, W, 3) RGB image, (2G - R - B) / (R + G + B)
    (Woebbecke et al. 1995, "Color indices for weed identification under various soil,
    residue, and lighting conditions", Trans. ASAE 38(1)): above about 0.1 a pixel is green
    leaves (trees, lawn), not pavement or a roof."""
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    return (2 * g - r - b) / np.maximum(r + g + b, 1.0)


def load_massachusetts(root: str | Path, vegetation_negatives: float | None = None) -> list[Scene]:
    """Massachusetts roads: road = ISA; every other pixel is *unknown* (buildings are not
    labelled), so it is a weak negative — a small loss weight, never counted in metrics —
    not a clean one; pure white image pixels are no-data and ignored. Each 1500 x 1500 tile
    is its own place.

    ``vegetation_negatives``: an unlabelled pixel whose :func:`excess_green` index is above
    this is a clean negative (trees and lawns are not ISA), so the tiles teach roads *and*
    the open land around them, and the 10 m prior gets the ISA fraction of every 10 m pixel
    that holds only road and vegetation (a road through woods: the rural road).
    """
    if vegetation_negatives is not None and not -1 < vegetation_negatives < 2:
        raise TrainingDataError(
            f"vegetation_negatives is an excess green index (-1..2), not {vegetation_negatives!r}"
        )
    root = Path(root)
    scenes = []
    for image in sorted((root / "images").glob("*.png")):
        rgb = read_rgb_image(image)
        mask = np.asarray(read_rgb_image(root / "masks" / image.name))[..., 0]
        label = np.where(mask > 127, 1, WEAK_NEGATIVE).astype(np.uint8)
        if vegetation_negatives is not None:
            label[(label == WEAK_NEGATIVE) & (excess_green(rgb) > vegetation_negatives)] = 0
        label[(rgb == 255).all(-1)] = IGNORE
        rgb, label = _crop10(rgb, label)
        scenes.append(
            Scene(f"massachusetts/{image.stem}", f"massachusetts/{image.stem}", label, hr=rgb)
        )
    if not scenes:
        raise TrainingDataError(f"no Massachusetts images found under {root}")
    return scenes


def load_geotiff_scene(
    labels: str | Path,
    *,
    image: str | Path | None = None,
    sentinel2: str | Path | None = None,
    place: str | None = None,
    isa_values: Sequence[int] = (1,),
    ignore_values: Sequence[int] = (IGNORE,),
) -> Scene:
    """A user's own scene from GeoTIFFs: 1 m labels plus a 1 m RGB image (simulated input),
    a real 10 m Sentinel-2 image (bands B04, B03, B02 in DN), or both (a triple).

    Label pixels in ``isa_values`` are ISA, in ``ignore_values`` ignored, all others not ISA.
    """
    import rasterio

    if image is None and sentinel2 is None:
        raise TrainingDataError("give the 1 m image, the 10 m Sentinel-2 image, or both")
    try:
        with rasterio.open(labels) as src:
            raw = src.read(1)
        hr = lr = None
        if image is not None:
            with rasterio.open(image) as src:
                hr = np.moveaxis(src.read([1, 2, 3]), 0, -1)
            if hr.dtype != np.uint8:
                raise TrainingDataError(f"{image}: the 1 m image must be 8-bit RGB, got {hr.dtype}")
        if sentinel2 is not None:
            with rasterio.open(sentinel2) as src:
                lr = src.read([1, 2, 3]).astype(np.float32)
    except rasterio.errors.RasterioIOError as exc:
        raise TrainingDataError(f"cannot read GeoTIFF: {exc}") from exc
    label = np.zeros(raw.shape, np.uint8)
    label[np.isin(raw, isa_values)] = 1
    label[np.isin(raw, ignore_values)] = IGNORE
    name = Path(labels).stem
    return Scene(name, place or name, label, hr=hr, lr=lr)


def split_by_place(
    scenes: list[Scene], val_places: Sequence[str]
) -> tuple[list[Scene], list[Scene]]:
    """Hold out whole places; raise if either side ends up empty."""
    val = [s for s in scenes if s.place in set(val_places)]
    train = [s for s in scenes if s.place not in set(val_places)]
    if not train or not val:
        raise TrainingDataError(
            f"splitting by places {list(val_places)} leaves {len(train)} training and "
            f"{len(val)} validation scenes; both need at least one"
        )
    return train, val


# --- real Sentinel-2 with weak 10 m labels ----------------------------------------------

#: Weak 10 m label codes: a confidently built-up pixel, a confidently not built-up one, or
#: uncertain (ignored).
WEAK_NOT_BUILT, WEAK_BUILT = 0, 1

#: Dynamic World classes taken as confident negatives (every class but built: water, trees,
#: grass, flooded vegetation, crops, shrub, bare ground, snow) when their built probability
#: is at most ``DW_NOT_BUILT_MAX`` percent. Dynamic World's confusion of bright bare ground
#: with built-up land lies on the other side: such pixels have a high built probability and
#: are left out. A pixel of class "built" (6) with a built probability of at least
#: ``DW_BUILT_MIN`` percent is a confident positive: an area where ISA is common (gardens and
#: trees between houses included), not a 1 m mask.
DW_NEGATIVE_CLASSES = (0, 1, 2, 3, 4, 5, 7, 8)
DW_BUILT_CLASS = 6
DW_BUILT_MIN = 50
DW_NOT_BUILT_MAX = 15

S2_RGB_ASSETS = ("red", "green", "blue")  # Earth Search keys of B04, B03, B02


@dataclass
class WeakScene:
    """A real 10 m Sentinel-2 image with weak 10 m labels (no 1 m labels, no SR target).

    ``lr`` (3, h, w) float32 DN in (B04, B03, B02), NaN where missing; ``weak`` (h, w)
    uint8: :data:`WEAK_BUILT`, :data:`WEAK_NOT_BUILT` or ``IGNORE``; ``built_class`` (h, w)
    uint8, 1 where the source's land-cover class is built-up, 0 elsewhere, ``IGNORE`` where
    the image is missing (the reference of the ranking scores), or None.
    """

    name: str
    place: str
    lr: np.ndarray
    weak: np.ndarray
    built_class: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.lr.ndim != 3 or self.lr.shape[0] != 3:
            raise TrainingDataError(
                f"{self.name}: 10 m input must be (3, h, w), got {self.lr.shape}"
            )
        if self.weak.shape != self.lr.shape[1:]:
            raise TrainingDataError(
                f"{self.name}: weak labels {self.weak.shape} and image {self.lr.shape[1:]} "
                "are on different grids"
            )
        codes = set(np.unique(self.weak).tolist()) - {WEAK_NOT_BUILT, WEAK_BUILT, IGNORE}
        if codes:
            raise TrainingDataError(
                f"{self.name}: weak label codes {sorted(codes)} are not 0/1/255"
            )
        if not self.labelled:
            raise TrainingDataError(
                f"{self.name}: no pixel has a usable weak label (all uncertain or missing)"
            )

    @cached_property
    def labelled(self) -> int:
        """Pixels with a weak label (what a scene is sampled in proportion to)."""
        return int(np.count_nonzero(self.weak != IGNORE))


def dynamic_world_weak_labels(
    built: np.ndarray, label: np.ndarray, not_built_max: float = DW_NOT_BUILT_MAX
) -> np.ndarray:
    """Weak 10 m labels from Dynamic World's built probability (percent) and class; a
    negative needs a built probability of at most ``not_built_max`` percent."""
    weak = np.full(label.shape, IGNORE, np.uint8)
    weak[np.isin(label, DW_NEGATIVE_CLASSES) & (built <= not_built_max)] = WEAK_NOT_BUILT
    weak[(label == DW_BUILT_CLASS) & (built >= DW_BUILT_MIN)] = WEAK_BUILT
    return weak


def read_sentinel2_rgb(item_path: str | Path) -> tuple[np.ndarray, dict]:
    """B04, B03, B02 of a local STAC item (Earth Search asset keys) as float32 DN, with the
    grid (``crs``, ``transform``, ``shape``) of the red band. Nodata becomes NaN."""
    import rasterio

    item_path = Path(item_path)
    try:
        assets = json.loads(item_path.read_text())["assets"]
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingDataError(f"{item_path}: not a readable STAC item: {exc}") from exc
    missing = [k for k in S2_RGB_ASSETS if k not in assets]
    if missing:
        raise TrainingDataError(
            f"{item_path}: the item has no {missing} asset(s); the model needs B04, B03, B02 "
            f"(asset keys {list(S2_RGB_ASSETS)}), it has {sorted(assets)}"
        )
    bands, grid = [], None
    for key in S2_RGB_ASSETS:
        href = item_path.parent / assets[key]["href"]
        try:
            with rasterio.open(href) as src:
                band = src.read(1).astype(np.float32)
                if src.nodata is not None:
                    band[band == src.nodata] = np.nan
                this = {"crs": src.crs, "transform": src.transform, "shape": src.shape}
        except rasterio.errors.RasterioIOError as exc:
            raise TrainingDataError(f"cannot read {href}: {exc}") from exc
        if grid is not None and this != grid:
            raise TrainingDataError(f"{item_path}: band {key} is on another grid than red")
        grid = grid or this
        bands.append(band)
    assert grid is not None  # set by the first of the (non-empty) S2_RGB_ASSETS
    return np.stack(bands), grid


def load_dynamic_world_scene(
    item: str | Path,
    dynamic_world: str | Path,
    *,
    name: str | None = None,
    place: str | None = None,
    not_built_max: float = DW_NOT_BUILT_MAX,
) -> WeakScene:
    """A real Sentinel-2 scene (a local STAC item) with Dynamic World labels on its grid.

    ``dynamic_world`` is a GeoTIFF with band 1 = built probability (percent) and band 2 =
    class, on exactly the 10 m grid of the item's red band; another grid is refused (resample
    it onto the image grid first). ``not_built_max``: see :func:`dynamic_world_weak_labels`.
    """
    import rasterio

    lr, grid = read_sentinel2_rgb(item)
    try:
        with rasterio.open(dynamic_world) as src:
            if src.count < 2:
                raise TrainingDataError(
                    f"{dynamic_world}: needs 2 bands (built probability, class), has {src.count}"
                )
            dw = src.read([1, 2])
            dw_grid = {"crs": src.crs, "transform": src.transform, "shape": src.shape}
    except rasterio.errors.RasterioIOError as exc:
        raise TrainingDataError(f"cannot read {dynamic_world}: {exc}") from exc
    if dw_grid != grid:
        raise TrainingDataError(
            f"{dynamic_world} is on another grid than the image ({dw_grid['shape']} "
            f"{dw_grid['crs']} vs {grid['shape']} {grid['crs']}): resample it onto the 10 m "
            "grid of the image first"
        )
    missing = np.isnan(lr).any(0)
    weak = dynamic_world_weak_labels(dw[0], dw[1], not_built_max)
    weak[missing] = IGNORE
    built_class = (dw[1] == DW_BUILT_CLASS).astype(np.uint8)
    built_class[missing] = IGNORE
    name = name or Path(item).parent.name
    return WeakScene(name, place or name, lr, weak, built_class=built_class)


def load_oscd(
    root: str | Path,
    cities: Sequence[str] | None = None,
    not_built_max: float = DW_NOT_BUILT_MAX,
) -> list[WeakScene]:
    """The OSCD cities (``root/<city>/date{1,2}/``), both dates, with Dynamic World labels
    (negatives at most ``not_built_max`` percent built, :func:`dynamic_world_weak_labels`).

    Each city is one place (its two dates are never split). The OSCD *change* labels are not
    read here: they are non-commercial and used for evaluation only.
    """
    root = Path(root)
    chosen = sorted(p.name for p in root.iterdir() if p.is_dir()) if cities is None else cities
    scenes = []
    for city in chosen:
        for date in ("date1", "date2"):
            folder = root / city / date
            if not folder.is_dir():
                raise TrainingDataError(f"{folder} is missing (cities: {sorted(chosen)})")
            scenes.append(
                load_dynamic_world_scene(
                    folder / "item.json",
                    folder / "dynamicworld.tif",
                    name=f"oscd/{city}/{date}",
                    place=f"oscd/{city}",
                    not_built_max=not_built_max,
                )
            )
    if not scenes:
        raise TrainingDataError(f"no OSCD cities found under {root}")
    return scenes
