"""Figure of a model on the real Havelland Sentinel-2 scene: input RGB, 1 m ISA, a village zoom.

Usage: ``python scripts/figure_havelland.py [--model jointseg] [--out docs/havelland_jointseg.png]``
Uses the bundled 3.84 x 3.84 km crop of the scene (villages, roads, lakes, fields, forest).
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

from xjointseg.data import demo_item_path  # noqa: E402

# window (x0, y0 in UTM 33N metres, side in metres) around the village of the bundled crop
VILLAGE = (332300, 5814900, 800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="jointseg")
    parser.add_argument("--out", type=Path, default=Path("docs/havelland_jointseg.png"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    item = pystac.Item.from_file(demo_item_path())
    ds = odc.stac.load(
        [item], bands=["red", "green", "blue"], resolution=10, chunks={"x": 256, "y": 256}
    ).isel(time=0)
    isa = ds.isa.segment(model=args.model).compute()
    rgb = np.stack([ds[b].values for b in ("red", "green", "blue")], -1).astype(float)
    rgb = np.clip((rgb - 300) / 2000, 0, 1) ** 0.8
    x0, y0, side = VILLAGE
    zoom_rgb = ds.sel(x=slice(x0, x0 + side), y=slice(y0 + side, y0))
    zoom_isa = isa.sel(x=slice(x0, x0 + side), y=slice(y0 + side, y0))
    zrgb = np.stack([zoom_rgb[b].values for b in ("red", "green", "blue")], -1).astype(float)
    zrgb = np.clip((zrgb - 300) / 2000, 0, 1) ** 0.8

    fig, ax = plt.subplots(2, 2, figsize=(12, 12), constrained_layout=True)
    ext = [
        float(ds.x.min()) - 5,
        float(ds.x.max()) + 5,
        float(ds.y.min()) - 5,
        float(ds.y.max()) + 5,
    ]
    ax[0, 0].imshow(rgb, extent=ext)
    ax[0, 0].set_title("Sentinel-2 L1C RGB, 16 Feb 2017, 10 m")
    ax[0, 1].imshow(
        np.ma.masked_equal(isa.values, 255),
        cmap="gray_r",
        vmin=0,
        vmax=1,
        extent=ext,
        interpolation="nearest",
    )
    ax[0, 1].set_title(f"ISA at 1 m ({args.model}), black = impervious")
    for a in ax[0]:
        a.add_patch(plt.Rectangle((x0, y0), side, side, fill=False, color="red", lw=1.5))
    ax[1, 0].imshow(zrgb, interpolation="nearest")
    ax[1, 0].set_title("village zoom, input (10 m pixels)")
    ax[1, 1].imshow(
        np.ma.masked_equal(zoom_isa.values, 255),
        cmap="gray_r",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax[1, 1].set_title("village zoom, ISA (1 m pixels)")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle("Contains modified Copernicus Sentinel data 2017", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    share = float((isa.values == 1).sum() / (isa.values != 255).sum())
    print(f"wrote {args.out}; ISA share of valid pixels: {share:.1%}")
    print_share_by_landuse(isa)


def print_share_by_landuse(isa) -> None:
    """ISA share of the 1 m map inside the OpenStreetMap land-use/water polygons of the scene
    (shipped beside it in ../shared): residential should be high; forest, farmland, meadow
    and water near zero."""
    import geopandas as gpd
    from rasterio.features import rasterize

    gpkg = Path(__file__).parents[1].parent / "shared/data/s2/havelland_T33UUU_20170216_L1C"
    gpkg = gpkg / "osm_landuse_water.gpkg"
    if not gpkg.exists():
        print(f"(no {gpkg}: land-use check skipped)")
        return
    polygons = gpd.read_file(gpkg).to_crs(isa.odc.crs)
    geobox = isa.odc.geobox
    values = isa.values
    print("| OSM class | 1 m pixels | ISA share |")
    print("|---|---:|---:|")
    for fclass, group in sorted(polygons.groupby("fclass")):
        inside = rasterize(
            group.geometry, out_shape=geobox.shape, transform=geobox.transform, fill=0
        ).astype(bool) & (values != 255)
        if inside.sum() >= 10_000:  # at least a hectare inside the crop
            print(f"| {fclass} | {inside.sum():,} | {(values[inside] == 1).mean():.1%} |")


if __name__ == "__main__":
    main()
