"""Data bundled with the package: small real Sentinel-2 scenes for demos and examples.

``havelland/``: Sentinel-2A L1C, 16 Feb 2017, west of Potsdam, Germany (tile 33UUU), bands B02,
B03, B04, B08 at 10 m over 3.84 x 3.84 km (villages, roads, a lake, fields, forest), as
Cloud-Optimized GeoTIFFs with a STAC item. Contains modified Copernicus Sentinel data 2017
(Copernicus free and open licence). Values are L1C DN (top-of-atmosphere reflectance x 10000).

``beihai/date1``, ``beihai/date2``: Sentinel-2 L1C of 9 Dec 2016 and 9 Mar 2018 over 1.92 x
1.92 km of Beihai, China (tile 49QCD), the same bands on one grid and B11 at 20 m (for
``new_isa``'s water test): land cleared, built on and
paved between the dates. Cut from the Onera Satellite Change Detection images (Daudt et al.
2018, IGARSS; images only, not its labels). Contains modified Copernicus Sentinel data
2016-2018.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_item_path() -> Path:
    """Path of the bundled demo scene's STAC item (read it with ``pystac.Item.from_file``)."""
    return Path(str(resources.files("xjointseg.data").joinpath("havelland", "item.json")))


def demo_pair_items() -> list[Path]:
    """Paths of the STAC items of the bundled two-date Beihai crop (2016, 2018), for
    ``load_sentinel2`` or ``odc.stac.load``.

    Examples
    --------
    >>> [p.parent.name for p in demo_pair_items()]
    ['date1', 'date2']
    """
    root = resources.files("xjointseg.data").joinpath("beihai")
    return [Path(str(root.joinpath(date, "item.json"))) for date in ("date1", "date2")]


def load_demo_scene(chunks: int = 256):
    """The bundled demo scene as a lazy Dataset ``(time, y, x)`` of red, green, blue, nir.

    Examples
    --------
    >>> ds = load_demo_scene()
    >>> dict(ds.sizes), ds.odc.crs.epsg
    ({'y': 384, 'x': 384, 'time': 1}, 32633)
    """
    import odc.stac
    import pystac

    item = pystac.Item.from_file(demo_item_path())
    return odc.stac.load(
        [item],
        bands=["red", "green", "blue", "nir"],
        chunks={"x": chunks, "y": chunks},
        resolution=10,
    )
