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
  1 m map inside residential land and inside forest, farmland, meadow, scrub, wetland and
  water, over whole polygons and away from their edges, and the polygons that hold each
  open class's ISA (:func:`landuse_shares`).
* **A real rural road** (eo-learn's Slovenia sample, :func:`road_sample`): the ISA share of a
  road's 10 m pixels and of the open land around it, and their ranking
  (:func:`real_road_scores`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..metrics import confusion, roc_auc, scores_from_counts
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
OPEN_LAND = ("forest", "farm", "meadow", "scrub", "wetland", "water")


def aerial_scores(
    model: Any, dubai_root: str | Path, places: list[str], **radiometry: Any
) -> dict[str, float]:
    """Scores on whole aerial test places (simulated 10 m input with the default radiometry,
    or ``gain`` / ``offset`` given, a fixed seed), with the network's own halo of context,
    the mask by the model's rule."""
    from .datasets import load_dubai
    from .validation import evaluate, validation_inputs

    scenes = [s for s in load_dubai(dubai_root) if s.place in places]
    if not scenes:
        raise TrainingDataError(f"no Dubai scene of places {places} under {dubai_root}")
    net = model.network
    inputs = validation_inputs(scenes, **radiometry)
    return evaluate(net, inputs, context=net.halo, rule=model.mask_rule)


#: Dynamic World's classes in the order of its ``label`` band (Brown et al. 2022, "Dynamic
#: World, Near real-time global 10 m land use land cover mapping", Scientific Data 9:251).
DW_CLASSES = (
    "water",
    "trees",
    "grass",
    "flooded_vegetation",
    "crops",
    "shrub_and_scrub",
    "built",
    "bare",
    "snow_and_ice",
)
S2_BANDS = ("red", "green", "blue", "nir", "swir16")  # segment's bands, new_isa's tests


def _load_s2(item: Path, window: tuple[slice, slice] | None) -> xr.Dataset:
    import odc.stac
    import pystac

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # L1C items: no SCL, said by the loader
        ds = odc.stac.load(
            [pystac.Item.from_file(item)],
            bands=list(S2_BANDS),
            resolution=10,  # B11 (20 m) onto the 10 m grid
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


def _maps(model: Any, ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """The 1 m mask (0, 1, 255 nodata), its 10 m ISA share, and the 10 m mean of the 1 m
    probability.

    One pass of ``segment(output="probability")``: the mask ``segment`` returns is the
    model's rule applied to the same output (:meth:`MaskRule.from_probability`).
    """
    from ..engine import segment
    from ..schema import NODATA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob = segment(ds, model, output="probability").isel(time=0).compute()
    valid = prob.notnull()
    blocks = {"y": 10, "x": 10}
    counts = valid.coarsen(blocks).sum()
    mask = prob.copy(data=model.mask_rule.from_probability(prob.values).astype(np.uint8))
    share = (mask & valid).coarsen(blocks).sum() / counts
    mean = prob.fillna(0).coarsen(blocks).sum() / counts
    mask = mask.where(valid, NODATA).astype(np.uint8)
    return mask, share.where(counts > 0), mean.where(counts > 0)


def _prior(model: Any, item: Path, like: xr.DataArray) -> np.ndarray | None:
    """The 10 m prior alone (``prior_logits``) on the whole scene, read on ``like``'s pixels;
    None for a network without one."""
    import torch

    net = model.network
    if not hasattr(net, "prior_logits") or net.head10 is None:  # no prior of its own
        return None
    scene = _load_s2(item, None)[["red", "green", "blue"]]
    x = np.nan_to_num(scene.to_dataarray().isel(time=0).values.astype(np.float32))
    h = net.prior_halo
    x = np.pad(x, ((0, 0), (h, h), (h, h)), mode="reflect")  # context beyond the scene edge
    with torch.no_grad():
        logits = net.prior_logits(torch.from_numpy(x)[None].to(model.device), h)
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    da = xr.DataArray(prob, coords={"y": scene.y, "x": scene.x}, dims=("y", "x"))
    return da.sel(y=like.y, x=like.x, method="nearest", tolerance=1.0).values


def city_window(city: Path, max_side: int | None) -> tuple[slice, slice]:
    """The ground both dates of an OSCD city cover (coordinates), cut to its central
    ``max_side`` x ``max_side`` pixels when given: both dates are mapped on one grid."""
    scenes = [_load_s2(city / date / "item.json", None) for date in ("date1", "date2")]
    ys = np.intersect1d(scenes[0].y.values, scenes[1].y.values)[::-1]  # north-up
    xs = np.intersect1d(scenes[0].x.values, scenes[1].x.values)
    if not len(ys) or not len(xs):
        raise TrainingDataError(f"the two dates of {city.name} share no pixel of one grid")
    if max_side is not None:
        y0, x0 = max(0, (len(ys) - max_side) // 2), max(0, (len(xs) - max_side) // 2)
        ys, xs = ys[y0 : y0 + max_side], xs[x0 : x0 + max_side]
    return slice(ys[0], ys[-1]), slice(xs[0], xs[-1])


def segment_city(model: Any, city: Path, max_side: int | None = None) -> dict[str, list]:
    """Both dates of an OSCD city, each segmented at 1 m as a user would, on one grid.

    Returns lists (date1, date2) of: ``images`` (the Sentinel-2 Datasets), ``maps`` (1 m
    masks), ``shares`` and ``means`` (10 m ISA share and mean probability), ``priors``
    (10 m prior or None) and ``dw`` (Dynamic World's built probability and class on the
    10 m grid); ``change``: OSCD's change label on the 10 m grid (True: changed), or None
    for a city without labels.
    """
    window = city_window(city, max_side)
    out: dict[str, Any] = {k: [] for k in ("images", "maps", "shares", "means", "priors", "dw")}
    for date in ("date1", "date2"):
        ds = _load_s2(city / date / "item.json", window)
        mask, share, mean = _maps(model, ds)
        out["images"].append(ds.isel(time=0))
        out["maps"].append(mask)
        out["shares"].append(share)
        out["means"].append(mean)
        out["priors"].append(_prior(model, city / date / "item.json", share))
        out["dw"].append(_read_on(city / date / "dynamicworld.tif", share, [1, 2]))
    labels = city / "change.tif"
    out["change"] = _read_on(labels, out["shares"][0], [1])[0] == 1 if labels.exists() else None
    return out


def real_scores(
    model: Any, oscd_root: str | Path, cities: list[str], max_side: int | None = None
) -> dict[str, Any]:
    """Per city and pooled: AUC against Dynamic World "built", ISA share in its confident
    classes (and in each class of the confidently not built), false change on stable open
    land and, where OSCD has change labels, the change F1 of :func:`~xjointseg.new_isa`, of
    the plain share difference and of Dynamic World.

    ``max_side``: segment only the central window of this many 10 m pixels per city (the
    same ground for both dates), to bound the time.
    """
    from ..models.model import load_model

    model = load_model(model) if isinstance(model, str | Path) else model
    root = Path(oscd_root)
    per_city: dict[str, dict[str, Any]] = {}
    pooled_frac, pooled_ref = [], []
    pooled_change: dict[str, dict[str, int]] = {}
    for city in cities:
        pair = segment_city(model, root / city, max_side)
        fracs, dws = pair["shares"], pair["dw"]
        f = np.concatenate([x.values.ravel() for x in fracs])
        built = np.concatenate([(dw[1] == DW_BUILT_CLASS).ravel() for dw in dws]).astype(int)
        weak = np.concatenate([dynamic_world_weak_labels(*dw).ravel() for dw in dws])
        label = np.concatenate([dw[1].ravel() for dw in dws])
        ok = ~np.isnan(f)
        not_built = ok & (weak == WEAK_NOT_BUILT)
        scores: dict[str, Any] = {
            "auc": roc_auc(f[ok], built[ok]),
            "share_built": float(np.mean(f[ok & (weak == WEAK_BUILT)])),
            "share_not_built": float(np.mean(f[not_built])),
            "not_built_by_class": {
                name: float(np.mean(f[not_built & (label == k)]))
                for k, name in enumerate(DW_CLASSES)
                if (not_built & (label == k)).sum() >= MIN_CLASS_PIXELS
            },
        }
        # where the ranking is lost: the mean 1 m probability (before the 0/1 mask), and
        # the 10 m prior alone (before the 1 m layers)
        mean = np.concatenate([x.values.ravel() for x in pair["means"]])
        scores["auc_probability"] = roc_auc(mean[ok], built[ok])
        if pair["priors"][0] is not None:
            prior = np.concatenate([x.ravel() for x in pair["priors"]])
            scores["auc_prior"] = roc_auc(prior[ok], built[ok])
        pooled_frac.append(f[ok])
        pooled_ref.append(built[ok])
        counts = _change_scores(pair, scores)
        for name, c in counts.items():
            total = pooled_change.setdefault(name, dict.fromkeys(c, 0))
            for k in c:
                total[k] += c[k]
        per_city[city] = scores
    out: dict[str, Any] = {"cities": per_city}
    out["pooled_auc"] = roc_auc(np.concatenate(pooled_frac), np.concatenate(pooled_ref))
    out["min_auc"] = float(np.min([s["auc"] for s in per_city.values()]))
    for name, c in pooled_change.items():
        out[f"pooled_{name}_f1"] = scores_from_counts(c)["f1"]
    return out


MIN_CLASS_PIXELS = 100  # a Dynamic World class is reported in a city from this many pixels


def _change_scores(pair: dict, scores: dict) -> dict[str, dict[str, int]]:
    """Adds to ``scores`` the false change on stable open land and, where the city has change
    labels, the change F1 of three rules; returns their confusion counts (for pooling).

    The rules, on the same pixels: ``new_isa`` (:func:`~xjointseg.new_isa`, the default
    rule), ``change`` (the 10 m share rose by at least :data:`CHANGE_THRESHOLD`), ``tied``
    (the same rise between the maps of :func:`~xjointseg.consistent` with the images: the
    cube a growth table reads when its periods are tied to the evidence) and ``dw_change``
    (Dynamic World: not built at date 1, built at date 2); and the ROC AUC of the two
    rankings behind the first two: new_isa's change magnitude and the share's rise.
    """
    from ..change import change_evidence, consistent, new_isa
    from ..change.maps import coarse_share
    from ..schema import NODATA

    s1, s2 = (x.values for x in pair["shares"])
    dw1, dw2 = pair["dw"]
    maps, images = pair["maps"], tuple(pair["images"])
    new = new_isa(*maps, images=images).values
    magnitude = change_evidence(*maps, images=images)["magnitude"].values
    both = xr.concat(maps, "time", coords="different", compat="equals")
    tied = consistent(both, images=list(images))
    s2_tied = coarse_share(tied.data[1], 10).compute()
    valid = ~np.isnan(s1) & ~np.isnan(s2) & (new != NODATA)
    rules = {
        "new_isa": new == 1,
        "change": (s2 - s1) >= CHANGE_THRESHOLD,
        "tied": (s2_tied - s1) >= CHANGE_THRESHOLD,
        "dw_change": (dw1[1] != DW_BUILT_CLASS) & (dw2[1] == DW_BUILT_CLASS),
    }
    # stable open land: confidently not built on both dates, and the same class
    stable = (
        valid
        & (dynamic_world_weak_labels(*dw1) == WEAK_NOT_BUILT)
        & (dynamic_world_weak_labels(*dw2) == WEAK_NOT_BUILT)
        & (dw1[1] == dw2[1])
    )
    if stable.any():
        scores["false_rise"] = float(rules["change"][stable].mean())
        scores["false_rise_tied"] = float(rules["tied"][stable].mean())
        scores["false_new_isa"] = float(rules["new_isa"][stable].mean())
    if pair["change"] is None:
        return {}
    reference = np.where(valid, pair["change"], IGNORE).astype(np.uint8)
    # ranking, before any threshold: the image evidence and the rise of the maps' share
    scores["magnitude_auc"] = roc_auc(magnitude[valid], pair["change"][valid].astype(int))
    scores["rise_auc"] = roc_auc((s2 - s1)[valid], pair["change"][valid].astype(int))
    counts = {}
    for name, pred in rules.items():
        c = confusion(np.where(valid, pred, IGNORE).astype(np.uint8), reference, IGNORE)
        r = scores_from_counts(c)
        scores[f"{name}_f1"] = r["f1"]
        if name != "dw_change":
            scores[f"{name}_precision"], scores[f"{name}_recall"] = r["precision"], r["recall"]
        counts[name] = c
    return counts


#: Metres inside a land-use polygon's edge for the "inset" shares: Sentinel-2's geolocation
#: (about 10 m) and the hand-drawn OSM edges put the pixels along an edge on either side.
LANDUSE_INSET_M = 20.0


def landuse_shares(model: Any, landuse: str | Path) -> dict[str, Any]:
    """ISA share of the 1 m map inside each OSM land-use class on the bundled Havelland scene
    (classes with at least a hectare inside the scene).

    Returns ``shares`` (class -> share over its polygons), ``inset`` (the same over the land
    at least :data:`LANDUSE_INSET_M` inside its polygons' edges) and ``polygons``: for each
    open-land class, its polygons by ISA (``osm_id``, ``km2``, ``isa_share``, ``of_class``:
    the polygon's part of the class's ISA), most first: where a class's ISA lies.
    """
    import geopandas as gpd

    from ..change import area
    from ..data import load_demo_scene
    from ..engine import segment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        isa = segment(load_demo_scene()[["red", "green", "blue"]], model).compute()
    polygons = gpd.read_file(landuse)[["osm_id", "fclass", "geometry"]].to_crs(isa.odc.crs.wkt)
    # one region per class (overlapping polygons of a class counted once), by the library's
    # own area(): the pixels whose centres fall inside
    classes = polygons.dissolve(by="fclass").reset_index()
    inset = classes.assign(geometry=classes.geometry.buffer(-LANDUSE_INSET_M))
    inset = inset[~inset.geometry.is_empty]
    out: dict[str, Any] = {"shares": {}, "inset": {}, "polygons": {}}
    for key, regions in (("shares", classes), ("inset", inset)):
        table = area(isa, regions, name_column="fclass")
        big = table[table["valid_km2"] >= 0.01]  # at least a hectare inside the scene
        out[key] = {str(r.region): float(r.isa_share) for r in big.itertuples()}
    for fclass in OPEN_LAND:
        # one region per OSM object (the extract repeats some)
        mine = polygons[polygons["fclass"] == fclass].dissolve(by="osm_id").reset_index()
        table = area(isa, mine.assign(osm_id=mine["osm_id"].astype(str)), name_column="osm_id")
        table = table[table["valid_km2"] > 0]
        isa_km2 = table["isa_share"] * table["valid_km2"]
        rows = [
            {
                "osm_id": r.region,
                "km2": float(r.valid_km2),
                "isa_share": float(r.isa_share),
                "of_class": float(i / max(isa_km2.sum(), 1e-12)),
            }
            for r, i in zip(table.itertuples(), isa_km2, strict=True)
        ]
        out["polygons"][fclass] = sorted(rows, key=lambda r: -r["of_class"])
    return out


#: The real road sample's land-cover classes: "artificial surface", and the open land
#: (forest, grassland, shrubland); the band positions of its 13-band frames.
ROAD_SAMPLE_ARTIFICIAL = 8
ROAD_SAMPLE_OPEN = (2, 3, 4)
_ROAD_SAMPLE_BANDS = {"B02": 1, "B03": 2, "B04": 3}


def road_sample(folder: str | Path) -> tuple[list[xr.Dataset], np.ndarray]:
    """eo-learn's Slovenia sample (``s2/eolearn_slovenia_L1C``): its clear dates as L1C DN
    Datasets (B02, B03, B04) and its 10 m land-cover labels, whose "artificial surface" is a
    rural road through a forested valley and a few houses.

    Its grid is 101 x 100 pixels of 9.995 m from the corner of ``bbox.geojson``; the Datasets
    put them on 10 m pixels from the same corner (a drift of at most 0.5 m)."""
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    folder = Path(folder)
    frames = np.load(folder / "reference_scenes.npy")  # (date, y, x, 13) TOA reflectance
    labels = np.load(folder / "lulc.npy")[..., 0]
    corners = json.loads((folder / "bbox.geojson").read_text())["coordinates"][0]
    x0, y1 = min(c[0] for c in corners), max(c[1] for c in corners)
    ny, nx = labels.shape
    grid = GeoBox.from_bbox(
        (x0, y1 - 10 * ny, x0 + 10 * nx, y1), "EPSG:32633", resolution=10, tight=True
    )
    coords = xr_coords(grid, crs_coord_name="spatial_ref")
    scenes = []
    for frame in frames:
        if np.median(frame[..., _ROAD_SAMPLE_BANDS["B02"]]) > 0.15:  # cloud over the square
            continue
        bands = {b: (("y", "x"), frame[..., i] * 10000) for b, i in _ROAD_SAMPLE_BANDS.items()}
        scenes.append(xr.Dataset(bands, coords=coords).odc.assign_crs(grid.crs))
    return scenes, labels


def real_road_scores(model: Any, scenes: list[xr.Dataset], labels: np.ndarray) -> dict:
    """Each date of :func:`road_sample` segmented at the defaults: the ISA share of its
    artificial and of its open 10 m pixels per date, and the ROC AUC of the share,
    artificial against open, over all dates."""
    from ..change.maps import coarse_share
    from ..engine import segment

    artificial = labels == ROAD_SAMPLE_ARTIFICIAL
    open_land = np.isin(labels, ROAD_SAMPLE_OPEN)
    shares = [coarse_share(segment(ds, model).data, 10).compute() for ds in scenes]
    both = artificial | open_land
    pooled = np.concatenate([s[both] for s in shares])
    truth = np.concatenate([artificial[both]] * len(shares)).astype(int)
    ok = ~np.isnan(pooled)
    return {
        "dates": len(shares),
        "artificial_px": int(artificial.sum()),
        "artificial": [float(np.nanmean(s[artificial])) for s in shares],
        "open": [float(np.nanmean(s[open_land])) for s in shares],
        "auc": roc_auc(pooled[ok], truth[ok]),
    }


__all__ = [
    "CHANGE_THRESHOLD",
    "DW_CLASSES",
    "LANDUSE_INSET_M",
    "OPEN_LAND",
    "ROAD_SAMPLE_ARTIFICIAL",
    "ROAD_SAMPLE_OPEN",
    "aerial_scores",
    "landuse_shares",
    "real_road_scores",
    "real_scores",
    "road_sample",
    "segment_city",
]
