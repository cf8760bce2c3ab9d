"""Cut the bundled demo scene out of the real Havelland Sentinel-2 L1C scene.

Writes ``xjointseg/data/havelland/`` — Cloud-Optimized GeoTIFFs of B02, B03, B04, B08 for a
3.84 x 3.84 km window (villages, roads, a lake, fields, forest) and a STAC item with relative
hrefs that ``odc.stac.load`` reads offline.

Usage: ``python scripts/bundle_demo_scene.py ../shared/data/s2/havelland_T33UUU_20170216_L1C``
"""

import json
import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window

BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
WAVELENGTH = {"B02": 0.49, "B03": 0.56, "B04": 0.665, "B08": 0.842}
WINDOW = Window(col_off=150, row_off=384, width=384, height=384)
OUT = Path(__file__).parents[1] / "xjointseg" / "data" / "havelland"


def main(src_dir: str) -> None:
    src_dir = Path(src_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    source = json.loads((src_dir / "item.json").read_text())
    assets = {}
    for band, common in BANDS.items():
        with rasterio.open(src_dir / f"{band}.tif") as src:
            data = src.read(1, window=WINDOW)
            transform = src.window_transform(WINDOW)
            profile = dict(
                driver="COG",
                width=WINDOW.width,
                height=WINDOW.height,
                count=1,
                dtype="uint16",
                crs=src.crs,
                transform=transform,
                nodata=0,
                compress="deflate",
                predictor=2,
                blocksize=128,
            )
        with rasterio.open(OUT / f"{band}.tif", "w", **profile) as dst:
            dst.write(data, 1)
        assets[common] = {
            "href": f"./{band}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": band,
            "proj:shape": [WINDOW.height, WINDOW.width],
            "proj:transform": list(transform)[:6],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 10}],
            "roles": ["data", "reflectance"],
            "eo:bands": [
                {"name": band, "common_name": common, "center_wavelength": WAVELENGTH[band]}
            ],
        }
    x0, y0 = transform.c, transform.f
    item = {
        **{k: source[k] for k in ("type", "stac_version", "stac_extensions")},
        "id": "S2A_33UUU_20170216_0_L1C_xjointseg_demo",
        "bbox": [12.52, 52.46, 12.58, 52.50],
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[12.52, 52.46], [12.58, 52.46], [12.58, 52.50], [12.52, 52.50], [12.52, 52.46]]
            ],
        },
        "properties": {
            **source["properties"],
            "proj:epsg": 32633,
            "note": "lon/lat bbox is approximate; the exact extent is in proj:transform/proj:shape",
            "xjointseg:extent_utm": [x0, y0 - 10 * WINDOW.height, x0 + 10 * WINDOW.width, y0],
            "attribution": "Contains modified Copernicus Sentinel data 2017",
        },
        "links": [],
        "assets": assets,
    }
    (OUT / "item.json").write_text(json.dumps(item, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
