"""How good a model's maps are, on places it never saw: aerial labels and real Sentinel-2.

* **Aerial test places** (simulated inputs, 1 m labels): ISA F1, precision, recall,
  macro-F1, and the SR image's PSNR next to bicubic and bilinear up-sampling
  (:func:`aerial_scores`).
* **Real Sentinel-2** (the OSCD cities, both dates): each date is segmented at 1 m with
  :func:`xjointseg.segment` exactly as a user would, and the mask is aggregated to the ISA
  fraction of each 10 m pixel. Against Dynamic World: the ROC AUC of that fraction for the
  "built" class (does the map rank built-up land above everything else?), and the mean ISA
  fraction inside confidently built-up and confidently not built-up pixels
  (:func:`real_scores`); as diagnostics, the same AUC for the mean 1 m probability and for
  the 10 m prior alone. Against OSCD's human change labels: a 10 m pixel *changed* when its
  ISA fraction rose by at least :data:`CHANGE_THRESHOLD` between the dates; its F1, next to
  Dynamic World's own change (not built at date 1, built at date 2).
* **Land use** (the bundled Havelland scene, OpenStreetMap polygons): the ISA share of the
  1 m map inside residential land and inside forest, farmland, meadow and water
  (:func:`landuse_shares`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..metrics import roc_auc
from .datasets import (
    DW_BUILT_CLASS,
    IGNORE,
    WEAK_BUILT,
    WEAK_NOT_BUILT,
    TrainingDataError,
    dynamic_world_weak_labels,
)

#: Rise of the 10 m ISA fraction between two dates that counts as urban change: a quarter
#: of the pixel newly impervious (a house, a stretch of road).
CHANGE_THRESHOLD = 0.25

#: OSM land-use classes that should hold almost no ISA. The Havelland extract names farmland
#: ``farm`` (Geofabrik's class 7205, which also takes in farmyards and their barns).
OPEN_LAND = ("forest", "farm", "meadow", "water")


def aerial_scores(
    model: Any, dubai_root: str | Path, places: list[str], **radiometry: Any
) -> dict[str, float]:
    """Scores on whole aerial test places (simulated 10 m input with the default radiometry,
    or ``gain`` / ``offset`` given, a fixed seed), with the network's own halo of context,
    the mask by the model's rule."""
    from .datasets import load_dubai
    from .trainer import evaluate, validation_inputs

    scenes = [s for s in load_dubai(dubai_root) if s.place in places]
    if not scenes:
        raise TrainingDataError(f"no Dubai scene of places {places} under {dubai_root}")
    net = model.network
    inputs = validation_inputs(scenes, **radiometry)
    return evaluate(net, inputs, context=net.halo, rule=model.mask_rule)


def _load_rgb(item: Path, window: tuple[slice, slice] | None) -> xr.Dataset:
    import odc.stac
    import pystac

    ds = odc.stac.load(
        [pystac.Item.from_file(item)],
        bands=["red", "green", "blue"],
        chunks={"x": 256, "y": 256},
    )
    if window is not None:
        ds = ds.sel(y=window[0], x=window[1])
    return ds


def _read_on(path: Path, like: xr.DataArray, bands: list[int]) -> np.ndarray:
    """Bands of a GeoTIFF on the 10 m grid of ``like`` (same CRS; selected by coordinates)."""
    import rioxarray  # noqa: F401  (registers .rio)

    da = xr.open_dataarray(path, engine="rasterio").sel(band=bands)
    da = da.sel(x=like.x, y=like.y, method="nearest", tolerance=1.0)
    return da.values


def _maps(model: Any, ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """The 10 m ISA share of the 1 m mask, and the 10 m mean of the 1 m probability.

    One pass of ``segment(output="probability")``: the mask ``segment`` returns is the
    model's rule applied to the same output (:meth:`MaskRule.from_probability`).
    """
    from ..segment import segment

    prob = segment(ds, model, output="probability").isel(time=0).compute()
    valid = prob.notnull()
    blocks = {"y": 10, "x": 10}
    counts = valid.coarsen(blocks).sum()
    mask = prob.copy(data=model.mask_rule.from_probability(prob.values))
    share = (mask & valid).coarsen(blocks).sum() / counts
    mean = prob.fillna(0).coarsen(blocks).sum() / counts
    return share.where(counts > 0), mean.where(counts > 0)


def _prior(model: Any, item: Path, like: xr.DataArray) -> np.ndarray | None:
    """The 10 m prior alone (``prior_logits``) on the whole scene, read on ``like``'s pixels;
    None for a network without one."""
    import torch

    net = model.network
    if not hasattr(net, "prior_logits") or net.head10 is None:  # no prior of its own
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = _load_rgb(item, None)
    x = np.nan_to_num(scene.to_dataarray().isel(time=0).values.astype(np.float32))
    h = net.prior_halo
    x = np.pad(x, ((0, 0), (h, h), (h, h)), mode="reflect")  # context beyond the scene edge
    with torch.no_grad():
        logits = net.prior_logits(torch.from_numpy(x)[None].to(model.device), h)
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    da = xr.DataArray(prob, coords={"y": scene.y, "x": scene.x}, dims=("y", "x"))
    return da.sel(y=like.y, x=like.x, method="nearest", tolerance=1.0).values


def city_window(item: Path, max_side: int | None) -> tuple[slice, slice] | None:
    """The central ``max_side`` x ``max_side`` window of a scene (coordinates), or None."""
    if max_side is None:
        return None
    ds = _load_rgb(item, None)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    y0, x0 = max(0, (ny - max_side) // 2), max(0, (nx - max_side) // 2)
    ys, xs = ds.y.values[y0 : y0 + max_side], ds.x.values[x0 : x0 + max_side]
    return slice(ys[0], ys[-1]), slice(xs[0], xs[-1])


def real_scores(
    model: Any, oscd_root: str | Path, cities: list[str], max_side: int | None = None
) -> dict[str, Any]:
    """Per city and pooled: AUC against Dynamic World "built", ISA share in its confident
    classes, and (where OSCD has change labels) change F1 of the model and of Dynamic World.

    ``max_side``: segment only the central window of this many 10 m pixels per city (the
    same ground for both dates), to bound the time.
    """
    from ..models.model import load_model

    model = load_model(model) if isinstance(model, str | Path) else model
    root = Path(oscd_root)
    per_city: dict[str, dict[str, float]] = {}
    pooled_frac, pooled_ref = [], []
    for city in cities:
        window = city_window(root / city / "date1" / "item.json", max_side)
        fracs, means, priors, dws = {}, {}, {}, {}
        for date in ("date1", "date2"):
            folder = root / city / date
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # L1C items: no SCL, said by the loader
                fracs[date], means[date] = _maps(model, _load_rgb(folder / "item.json", window))
            priors[date] = _prior(model, folder / "item.json", fracs[date])
            dws[date] = _read_on(folder / "dynamicworld.tif", fracs[date], [1, 2])
        f = np.concatenate([fracs[d].values.ravel() for d in fracs])
        built = np.concatenate([(dws[d][1] == DW_BUILT_CLASS).ravel() for d in dws]).astype(int)
        weak = np.concatenate([dynamic_world_weak_labels(*dws[d]).ravel() for d in dws])
        ok = ~np.isnan(f)
        scores = {
            "auc": roc_auc(f[ok], built[ok]),
            "share_built": float(np.mean(f[ok & (weak == WEAK_BUILT)])),
            "share_not_built": float(np.mean(f[ok & (weak == WEAK_NOT_BUILT)])),
        }
        # where the ranking is lost: the mean 1 m probability (before the 0/1 mask), and
        # the 10 m prior alone (before the 1 m layers)
        mean = np.concatenate([means[d].values.ravel() for d in means])
        scores["auc_probability"] = roc_auc(mean[ok], built[ok])
        if priors["date1"] is not None:
            prior = np.concatenate([priors[d].ravel() for d in priors])
            scores["auc_prior"] = roc_auc(prior[ok], built[ok])
        pooled_frac.append(f[ok])
        pooled_ref.append(built[ok])
        change_path = root / city / "change.tif"
        if change_path.exists():
            scores.update(_change_scores(fracs, dws, change_path))
        per_city[city] = scores
    out: dict[str, Any] = {"cities": per_city}
    out["pooled_auc"] = roc_auc(np.concatenate(pooled_frac), np.concatenate(pooled_ref))
    aucs = [s["auc"] for s in per_city.values()]
    out["min_auc"] = float(np.min(aucs))
    return out


def _change_scores(fracs: dict, dws: dict, change_path: Path) -> dict[str, float]:
    from ..metrics import scores

    f1_, f2_ = xr.align(fracs["date1"], fracs["date2"], join="inner")
    label = _read_on(change_path, f1_, [1])[0]
    rise = (f2_ - f1_).values
    valid = ~np.isnan(rise)
    model_change = np.where(valid, rise >= CHANGE_THRESHOLD, IGNORE).astype(np.uint8)
    reference = np.where(valid, label == 1, IGNORE).astype(np.uint8)
    # Dynamic World's change on the same pixels: not built at date 1, built at date 2
    c1 = _class_on(dws["date1"][1], fracs["date1"], f1_)
    c2 = _class_on(dws["date2"][1], fracs["date2"], f1_)
    dw_change = np.where(valid, (c1 != DW_BUILT_CLASS) & (c2 == DW_BUILT_CLASS), IGNORE)
    ours = scores(model_change, reference, ignore=IGNORE)
    theirs = scores(dw_change.astype(np.uint8), reference, ignore=IGNORE)
    return {
        "change_f1": ours["f1"],
        "change_precision": ours["precision"],
        "change_recall": ours["recall"],
        "dw_change_f1": theirs["f1"],
    }


def _class_on(values: np.ndarray, grid: xr.DataArray, target: xr.DataArray) -> np.ndarray:
    da = xr.DataArray(values, coords={"y": grid.y, "x": grid.x}, dims=("y", "x"))
    return da.sel(y=target.y, x=target.x).values


def landuse_shares(model: Any, landuse: str | Path) -> dict[str, float]:
    """ISA share of the 1 m map inside each OSM land-use class on the bundled Havelland scene
    (classes with at least a hectare inside the scene)."""
    import geopandas as gpd

    from ..change import area
    from ..data import load_demo_scene
    from ..segment import segment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        isa = segment(load_demo_scene()[["red", "green", "blue"]], model).compute()
    # one region per class (overlapping polygons of a class counted once), by the library's
    # own area(): the pixels whose centres fall inside
    classes = gpd.read_file(landuse)[["fclass", "geometry"]].dissolve(by="fclass").reset_index()
    table = area(isa, classes, name_column="fclass")
    big = table[table["valid_km2"] >= 0.01]  # at least a hectare inside the scene
    return {str(r.region): float(r.isa_share) for r in big.itertuples()}


__all__ = [
    "CHANGE_THRESHOLD",
    "OPEN_LAND",
    "aerial_scores",
    "landuse_shares",
    "real_scores",
]
