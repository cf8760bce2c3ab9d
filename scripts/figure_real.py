"""Figure of a model on real Sentinel-2: the Havelland village and two OSCD test cities.

Each row: the 10 m input (RGB), the 1 m ISA map, and a reference — Dynamic World's built
probability for the OSCD cities, OpenStreetMap residential land for Havelland.

    python scripts/figure_real.py [--model jointseg] [--data ../shared/data] \
        [--cities beirut bordeaux] [--out docs/real_jointseg.png]
"""

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import odc.stac  # noqa: E402
import pystac  # noqa: E402
import xarray as xr  # noqa: E402

import xjointseg  # noqa: E402
from xjointseg.data import load_demo_scene  # noqa: E402

VILLAGE = (332300, 5814900, 800)  # x0, y0 (UTM 33N metres), side: a village of the demo scene
SIDE = 120  # 10 m pixels of each OSCD window (1.2 km), from the scene centre


def rgb(ds: xr.Dataset) -> np.ndarray:
    a = np.stack([ds[b].values for b in ("red", "green", "blue")], -1).astype(float)
    lo, hi = np.nanpercentile(a, 2), np.nanpercentile(a, 98)
    return np.clip((a - lo) / (hi - lo), 0, 1) ** 0.8


def havelland(model):
    ds = load_demo_scene().isel(time=0)[["red", "green", "blue"]]
    x0, y0, side = VILLAGE
    ds = ds.sel(x=slice(x0, x0 + side), y=slice(y0 + side, y0))
    isa = ds.isa.segment(model=model).compute()
    import geopandas as gpd
    from rasterio.features import rasterize

    gpkg = Path(__file__).parents[1].parent / "shared/data/s2/havelland_T33UUU_20170216_L1C"
    polygons = gpd.read_file(gpkg / "osm_landuse_water.gpkg").to_crs(isa.odc.crs)
    res = polygons.query("fclass == 'residential'").geometry
    gb = isa.odc.geobox
    ref = rasterize(res, out_shape=gb.shape, transform=gb.transform, fill=0)
    return rgb(ds), isa.values, ref, "OSM residential land (© OpenStreetMap contributors)"


def oscd_city(model, root: Path, city: str):
    folder = root / city / "date2"
    ds = odc.stac.load(
        [pystac.Item.from_file(folder / "item.json")],
        bands=["red", "green", "blue"],
        chunks={"x": 256, "y": 256},
    ).isel(time=0)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    ds = ds.isel(
        y=slice((ny - SIDE) // 2, (ny + SIDE) // 2), x=slice((nx - SIDE) // 2, (nx + SIDE) // 2)
    )
    isa = ds.isa.segment(model=model).compute()
    dw = xr.open_dataarray(folder / "dynamicworld.tif", engine="rasterio").sel(band=1)
    dw = dw.sel(x=ds.x, y=ds.y, method="nearest", tolerance=1.0)
    return rgb(ds), isa.values, dw.values, "Dynamic World built probability (%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cities", nargs=2, default=["beirut", "bordeaux"])
    parser.add_argument("--out", type=Path, default=Path("docs/real_jointseg.png"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    model = xjointseg.load_model(args.model)
    rows = [("Havelland village, 16 Feb 2017 (L1C)", havelland(model))]
    for city in args.cities:
        rows.append(
            (
                f"OSCD {city}, date 2 (L1C), held out",
                oscd_city(model, args.data / "s2" / "oscd", city),
            )
        )
    fig, ax = plt.subplots(len(rows), 3, figsize=(13, 4.4 * len(rows)), constrained_layout=True)
    for r, (title, (image, isa, ref, ref_title)) in enumerate(rows):
        ax[r, 0].imshow(image, interpolation="nearest")
        ax[r, 0].set_title(f"{title}: input, 10 m", fontsize=9)
        ax[r, 1].imshow(
            np.ma.masked_equal(isa, 255), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest"
        )
        share = float((isa == 1).sum() / max((isa != 255).sum(), 1))
        ax[r, 1].set_title(f"ISA at 1 m ({args.model}): black, {share:.0%}", fontsize=9)
        ax[r, 2].imshow(ref, cmap="magma", interpolation="nearest")
        ax[r, 2].set_title(ref_title, fontsize=9)
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(
        "Contains modified Copernicus Sentinel data 2015-2018; Dynamic World (Brown et al. 2022)",
        fontsize=9,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
