"""Sentinel-2 from STAC catalogs to per-period composites, ready for ``.isa.segment()``.

``load_sentinel2`` is the entry point; the other names let users inspect each step (which
periods, which archive, which DN offset an item gets).
"""

from ._catalog import CATALOGS, CatalogPreset
from ._items import Sentinel2Warning, canonical_band, dn_offset, processing_baseline
from ._load import load_sentinel2, search_items
from ._options import BRIGHTNESS_DN, DEFAULT_BANDS, DEFAULT_SCL_MASK
from ._periods import Period, parse_periods

__all__ = [
    "BRIGHTNESS_DN",
    "CATALOGS",
    "CatalogPreset",
    "DEFAULT_BANDS",
    "DEFAULT_SCL_MASK",
    "Period",
    "Sentinel2Warning",
    "canonical_band",
    "dn_offset",
    "load_sentinel2",
    "parse_periods",
    "processing_baseline",
    "search_items",
]
