"""From a bounding box and years to Sentinel-2 composites to a 1 m impervious-surface map.

Offline by default: the real Havelland scene (Sentinel-2A L1C, 16 February 2017, west of
Potsdam) bundled with the package (or the full scene from ``../shared/data``). With
``--catalog`` it searches a real archive instead::

    python examples/bbox_to_isa.py
    python examples/bbox_to_isa.py --catalog earth-search-c1 --years 2017 2019 2021 2023 \\
        --bbox 12.53 52.465 12.56 52.48 --max-cloud-cover 40 --store composites.zarr

Contains modified Copernicus Sentinel data 2017 (Copernicus free and open licence).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XJOINTSEG_SHARED", REPO.parent / "shared"))
HAVELLAND = SHARED / "data" / "s2" / "havelland_T33UUU_20170216_L1C" / "item.json"
DEFAULT_BBOX = (12.53, 52.465, 12.56, 52.48)  # villages, roads, fields west of Potsdam


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--catalog",
        default=None,
        help="a preset (earth-search, earth-search-c1, planetary-computer), a STAC API URL "
        "(with --collection), or a path/URL to a static catalog or item JSON; default: the "
        "Havelland item bundled with the package (offline)",
    )
    p.add_argument("--collection", default=None, help="collection to search in a custom API")
    p.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        default=DEFAULT_BBOX,
        metavar=("MIN_LON", "MIN_LAT", "MAX_LON", "MAX_LAT"),
    )
    p.add_argument("--years", nargs="+", default=None, help="one map per year (default 2017)")
    p.add_argument("--max-cloud-cover", type=float, default=None, help="percent, per item")
    p.add_argument("--store", default=None, help="stage the 10 m composites to this Zarr store")
    p.add_argument("--model", default="jointseg", help="a registered name or weights path")
    p.add_argument("--plot", default=None, help="save a figure (composite + ISA map) here")
    return p.parse_args(argv)


def offline_item() -> Path | None:
    """The bundled demo item, else the full scene from ../shared/data, else None."""
    try:
        from xjointseg.data import demo_item_path

        bundled = demo_item_path()
        if bundled.exists():
            return bundled
    except ImportError:
        pass
    return HAVELLAND if HAVELLAND.exists() else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dask.diagnostics import ProgressBar

    import xjointseg  # noqa: F401  (registers the .isa accessor)
    from xjointseg.sentinel2 import load_sentinel2

    catalog = args.catalog
    if catalog is None:
        item = offline_item()
        if item is None:
            print(
                "no offline demo item: neither the bundled xjointseg/data/havelland nor "
                f"{HAVELLAND}\n"
                "use a real archive instead, e.g. --catalog earth-search-c1",
                file=sys.stderr,
            )
            return 2
        catalog = str(item)
        print("   (offline demo: a real L1C scene, top-of-atmosphere DN, no SCL cloud mask)")
    years = [int(y) if y.isdigit() else y for y in (args.years or ["2017"])]

    print(f"1. composites: {catalog}, bbox {tuple(args.bbox)}, periods {years}")
    ds = load_sentinel2(
        catalog,
        bbox=tuple(args.bbox),
        periods=years,
        collection=args.collection,
        max_cloud_cover=args.max_cloud_cover,
        store=args.store,
    )
    for t in range(ds.sizes["time"]):
        c = ds.isel(time=t)
        print(
            f"   {str(c.period.values)}: {int(c.n_items)} item(s), {int(c.n_observations)} "
            f"date(s), grid {ds.sizes['y']} x {ds.sizes['x']} px at 10 m"
        )
    if args.store:
        print(f"   staged to {args.store} (Zarr v3)")

    print(f"2. segment with the bundled model '{args.model}'")
    isa = ds.isa.segment(model=args.model)
    with ProgressBar():
        values = isa.compute()
    print(f"3. ISA map: {dict(values.sizes)} at 1 m, CRS {values.odc.crs.epsg}")
    for t in range(values.sizes["time"]):
        m = values.isel(time=t).values
        valid = m != 255
        share = float((m == 1).sum() / max(valid.sum(), 1))
        print(f"   {str(ds.period.values[t])}: ISA {100 * share:.1f} % of {valid.mean():.0%} valid")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        rgb = np.stack([ds[b].isel(time=0).values for b in ("B04", "B03", "B02")], -1)
        axes[0].imshow(np.clip(rgb / 2500, 0, 1))
        axes[0].set_title(f"Sentinel-2 composite {ds.period.values[0]} (10 m)")
        axes[1].imshow(
            np.ma.masked_equal(values.isel(time=0).values, 255), cmap="gray_r", vmin=0, vmax=1
        )
        axes[1].set_title("ISA (1 m)")
        for ax in axes:
            ax.set_axis_off()
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"   figure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
