"""Cut the bundled scenes out of real Sentinel-2 L1C scenes.

* ``havelland``: ``xjointseg/data/havelland/`` — B02, B03, B04, B08 of a 3.84 x 3.84 km window
  of the Havelland scene (villages, roads, a lake, fields, forest), 16 Feb 2017;
* ``beihai``: ``xjointseg/data/beihai/date1``, ``date2`` — the same bands and B11 (20 m, for
  ``new_isa``'s MNDWI water test) of a 1.92 x 1.92 km
  window of the OSCD city Beihai (China) on 9 Dec 2016 and 9 Mar 2018, on one grid: land
  that was cleared, built on and paved between the dates. Only the images: OSCD's change
  labels are non-commercial and stay out of the package.

Each is a set of Cloud-Optimized GeoTIFFs and a STAC item with relative hrefs that
``odc.stac.load`` (and ``load_sentinel2``) read offline.

Usage::

    python scripts/bundle_demo_scene.py havelland ../shared/data/s2/havelland_T33UUU_20170216_L1C
    python scripts/bundle_demo_scene.py beihai ../shared/data/s2/oscd/beihai
"""

import json
import sys
from pathlib import Path

import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window, from_bounds

BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
SWIR = {"B11": "swir16"}  # 20 m
WAVELENGTH = {"B02": 0.49, "B03": 0.56, "B04": 0.665, "B08": 0.842, "B11": 1.61}
DATA = Path(__file__).parents[1] / "xjointseg" / "data"
HAVELLAND_WINDOW = Window(col_off=150, row_off=384, width=384, height=384)
# Beihai: the 192 x 192 px (10 m) square whose upper-left corner is at this UTM 49N point
BEIHAI_CORNER, BEIHAI_SIDE = (343080.0 + 440 * 10, 2391080.0 - 704 * 10), 192


def write_bands(
    src_dir: Path, window: Window, out: Path, bands: dict[str, str] = BANDS
) -> tuple[dict, object, int]:
    """The window (of 10 m pixels) of each band as a COG in ``out``; a 20 m band gets the
    same ground. Returns the STAC assets, the window's 10 m affine transform and the EPSG
    code."""
    out.mkdir(parents=True, exist_ok=True)
    assets = {}
    for band, common in bands.items():
        with rasterio.open(src_dir / f"{band}.tif") as src:
            step = round(src.transform.a / 10)  # 1 for the 10 m bands, 2 for the 20 m ones
            if any(v % step for v in (window.col_off, window.row_off, window.width)):
                raise ValueError(f"the window is not on {band}'s {10 * step} m grid")
            own = Window(
                window.col_off // step,
                window.row_off // step,
                window.width // step,
                window.height // step,
            )
            data = src.read(1, window=own)
            own_transform = src.window_transform(own)
            if step == 1:
                transform = own_transform
            epsg = src.crs.to_epsg()
            profile = dict(
                driver="COG",
                width=own.width,
                height=own.height,
                count=1,
                dtype="uint16",
                crs=src.crs,
                transform=own_transform,
                nodata=0,
                compress="deflate",
                predictor=2,
                blocksize=128,
            )
        with rasterio.open(out / f"{band}.tif", "w", **profile) as dst:
            dst.write(data, 1)
        assets[common] = {
            "href": f"./{band}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": band,
            "proj:shape": [own.height, own.width],
            "proj:transform": list(own_transform)[:6],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 10 * step}],
            "roles": ["data", "reflectance"],
            "eo:bands": [
                {"name": band, "common_name": common, "center_wavelength": WAVELENGTH[band]}
            ],
        }
    return assets, transform, epsg


def write_item(
    source: dict,
    item_id: str,
    assets: dict,
    transform,
    epsg: int,
    out: Path,
    shape: tuple[int, int],
    attribution: str,
) -> None:
    """The STAC item of the window: the source's properties, the exact UTM extent, a lon/lat
    footprint derived from it."""
    x0, y0 = transform.c, transform.f
    extent = [x0, y0 - 10 * shape[0], x0 + 10 * shape[1], y0]
    gbox = GeoBox.from_bbox(extent, crs=f"EPSG:{epsg}", resolution=10)
    footprint = gbox.footprint("EPSG:4326")
    lon0, lat0, lon1, lat1 = (round(v, 5) for v in footprint.boundingbox)
    item = {
        **{k: source[k] for k in ("type", "stac_version", "stac_extensions")},
        "id": item_id,
        "bbox": [lon0, lat0, lon1, lat1],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        "properties": {
            **{k: v for k, v in source["properties"].items() if k != "note"},
            "proj:epsg": epsg,
            "note": "lon/lat bbox is approximate; the exact extent is in proj:transform/proj:shape",
            "xjointseg:extent_utm": extent,
            "attribution": attribution,
        },
        "links": [],
        "assets": assets,
    }
    (out / "item.json").write_text(json.dumps(item, indent=1))
    print(f"wrote {out}")


def havelland(src_dir: Path) -> None:
    out = DATA / "havelland"
    source = json.loads((src_dir / "item.json").read_text())
    assets, transform, epsg = write_bands(src_dir, HAVELLAND_WINDOW, out)
    shape = (HAVELLAND_WINDOW.height, HAVELLAND_WINDOW.width)
    attribution = "Contains modified Copernicus Sentinel data 2017"
    write_item(
        source,
        "S2A_33UUU_20170216_0_L1C_xjointseg_demo",
        assets,
        transform,
        epsg,
        out,
        shape,
        attribution,
    )


def beihai(city_dir: Path) -> None:
    x0, y0 = BEIHAI_CORNER
    side = BEIHAI_SIDE * 10
    for date in ("date1", "date2"):
        src_dir = city_dir / date
        source = json.loads((src_dir / "item.json").read_text())
        with rasterio.open(src_dir / "B02.tif") as src:
            window = from_bounds(x0, y0 - side, x0 + side, y0, src.transform).round_offsets()
        window = Window(window.col_off, window.row_off, BEIHAI_SIDE, BEIHAI_SIDE)
        out = DATA / "beihai" / date
        assets, transform, epsg = write_bands(src_dir, window, out, BANDS | SWIR)
        day = source["properties"]["datetime"][:10].replace("-", "")
        attribution = f"Contains modified Copernicus Sentinel data {day[:4]}"
        write_item(
            source,
            f"S2_49QCD_{day}_L1C_xjointseg_beihai",
            assets,
            transform,
            epsg,
            out,
            (BEIHAI_SIDE, BEIHAI_SIDE),
            attribution,
        )


if __name__ == "__main__":
    {"havelland": havelland, "beihai": beihai}[sys.argv[1]](Path(sys.argv[2]))
