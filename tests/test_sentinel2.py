"""Sentinel-2 loading: catalogs, periods, SCL masking, harmonisation, composites, staging.

Static catalogs are built here from tiny GeoTIFFs (24 x 24 px at 10 m, SCL at 20 m) whose
pixel values are known, so every composite value can be checked exactly. Real items from
../shared/data are used where present. Nothing touches the internet: the remote path is a
``http.server`` thread on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import os
import re
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from conftest import shared_path
from odc.geo.geom import box
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.transform import from_origin

import xjointseg  # noqa: F401  (registers .isa)
from xjointseg.errors import (
    BBoxError,
    CatalogError,
    InvalidPeriodError,
    MissingBandError,
    MixedCRSError,
    NoItemsError,
    ProjectionError,
    StagingStoreExistsError,
    StorePathError,
    XJointSegError,
)
from xjointseg.sentinel2 import (
    CATALOGS,
    DEFAULT_SCL_MASK,
    Sentinel2Warning,
    canonical_band,
    dn_offset,
    load_sentinel2,
    parse_periods,
    processing_baseline,
    search_items,
)
from xjointseg.sentinel2._composite import _period_stack
from xjointseg.sentinel2._options import LoadOptions

pytestmark = [
    # odc-loader's 20 m -> 10 m SCL warp of tiny files: rasterio's in-memory dataset warns.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

X0, Y0, N = 330000.0, 5822040.0, 24  # EPSG:32633, a corner of the Havelland scene
BASE = {"B02": 500, "B03": 700, "B04": 900, "B08": 2500}
ES_KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "SCL": "scl"}
PC_KEYS = {b: b for b in (*BASE, "SCL")}
YY, XX = np.mgrid[0:N, 0:N]
CLEAR, CLOUD_HIGH, CLOUD_MED = 4, 9, 8
DATES_2019 = ["2019-03-01", "2019-05-10", "2019-07-20", "2019-09-05", "2019-11-11"]
DATES_2023 = ["2023-04-01", "2023-06-15", "2023-08-20"]


def true_dn(band: str, idx: int) -> np.ndarray:
    """Harmonised DN of date ``idx``: distinct per band, date and pixel."""
    return BASE[band] + 100 * idx + YY + XX


# --- building static catalogs --------------------------------------------------------------


def _write_tif(path: Path, arr: np.ndarray, res: float, x0: float, y0: float, epsg: int) -> None:
    profile = dict(
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=f"EPSG:{epsg}",
        transform=from_origin(x0, y0, res, res),
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)


def make_item(
    root: Path,
    item_id: str,
    day: str,
    *,
    keys: dict[str, str],
    dn: dict[str, np.ndarray],
    scl: np.ndarray | None,
    props: dict,
    epsg: int = 32633,
    x0: float = X0,
    y0: float = Y0,
) -> pystac.Item:
    """A STAC item with projection + raster extensions on each asset, GeoTIFFs beside it."""
    folder = root / item_id
    folder.mkdir(parents=True, exist_ok=True)
    foot = box(x0, y0 - N * 10, x0 + N * 10, y0, crs=f"EPSG:{epsg}").to_crs("EPSG:4326")
    item = pystac.Item(
        item_id,
        geometry=foot.json,
        bbox=list(foot.boundingbox),
        datetime=dt.datetime.fromisoformat(day).replace(hour=10, tzinfo=dt.UTC),
        properties={"platform": "sentinel-2a", "grid:code": "MGRS-33UUU", **props},
    )
    layers = [(b, arr.astype("uint16"), 10.0) for b, arr in dn.items()]
    if scl is not None:
        layers.append(("SCL", scl.astype("uint8"), 20.0))
    for band, arr, res in layers:
        path = folder / f"{band}.tif"
        _write_tif(path, arr, res, x0, y0, epsg)
        asset = pystac.Asset(str(path), media_type=pystac.MediaType.GEOTIFF, roles=["data"])
        item.add_asset(keys[band], asset)
        proj = ProjectionExtension.ext(asset, add_if_missing=True)
        proj.code = f"EPSG:{epsg}"
        proj.shape = list(arr.shape)
        proj.transform = [res, 0.0, x0, 0.0, -res, y0]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, data_type=DataType(str(arr.dtype)))
        ]
    return item


def scl_2019(idx: int) -> np.ndarray:
    scl = np.full((N // 2, N // 2), CLEAR, "uint8")
    if idx in (0, 1):
        scl[:, :6] = CLOUD_HIGH  # the left half (10 m columns 0-11) is cloudy on two dates
    if idx == 4:
        scl[0, :] = 0  # a swath edge: rows 0-1 have no data at all
    scl[-1, -1] = CLOUD_MED  # 10 m pixels (22-23, 22-23) are cloudy on every date
    return scl


def build_catalog(root: Path) -> Path:
    cat = pystac.Catalog("fixture", "tiny Sentinel-2 archive, both asset-key styles")
    for idx, day in enumerate(DATES_2019):  # Earth Search style, baseline 02.13 (no offset)
        dn = {b: true_dn(b, idx) for b in BASE}
        if idx == 4:
            for arr in dn.values():
                arr[:2] = 0
        cc = 80.0 if idx == 3 else 10.0
        props = {"s2:processing_baseline": "02.13", "eo:cloud_cover": cc}
        cat.add_item(
            make_item(
                root, f"es-2019-{idx}", day, keys=ES_KEYS, dn=dn, scl=scl_2019(idx), props=props
            )
        )
    # An older processing of the first 2019 date: a duplicate that must not enter the median.
    dup = {b: np.full((N, N), 9999) for b in BASE}
    props = {"s2:processing_baseline": "02.12", "eo:cloud_cover": 10.0}
    cat.add_item(
        make_item(
            root, "es-2019-0-old", DATES_2019[0], keys=ES_KEYS, dn=dup, scl=scl_2019(0), props=props
        )
    )
    clear = np.full((N // 2, N // 2), CLEAR, "uint8")
    for idx, day in enumerate(DATES_2023[:2]):  # Planetary Computer style, baseline 05.09: +1000
        dn = {b: true_dn(b, idx) + 1000 for b in BASE}
        if idx == 0:
            dn["B04"][5, 5] = 950  # negative reflectance: harmonised to 0
        props = {"s2:processing_baseline": "05.09", "eo:cloud_cover": 5.0}
        cat.add_item(
            make_item(root, f"pc-2023-{idx}", day, keys=PC_KEYS, dn=dn, scl=clear, props=props)
        )
    # Earth Search style, baseline 05.09 but flagged as already harmonised by the archive.
    dn = {b: true_dn(b, 2) for b in BASE}
    props = {
        "s2:processing_baseline": "05.09",
        "earthsearch:boa_offset_applied": True,
        "eo:cloud_cover": 5.0,
    }
    cat.add_item(
        make_item(root, "es-2023-2", DATES_2023[2], keys=ES_KEYS, dn=dn, scl=clear, props=props)
    )
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return build_catalog(tmp_path_factory.mktemp("s2cat"))


@pytest.fixture(scope="module")
def items(catalog) -> list[pystac.Item]:
    return list(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))


def expected_2019(band: str) -> tuple[np.ndarray, np.ndarray]:
    """The median and count the 2019 catalog must give, worked out by hand."""
    t = {i: true_dn(band, i).astype("float64") for i in range(5)}
    left, top = XX < 12, YY < 2
    med = np.where(left, t[3], t[2])  # left: dates 2,3,4 valid; right: all five
    med = np.where(left & top, (t[2] + t[3]) / 2, med)  # date 4 has no data in rows 0-1
    med = np.where(~left & top, (t[1] + t[2]) / 2, med)
    count = np.where(left, 3, 5) - top
    corner = (YY >= 22) & (XX >= 22)
    return np.where(corner, np.nan, med), np.where(corner, 0, count)


# --- periods -------------------------------------------------------------------------------


def test_periods_years_windows_and_date_ranges():
    ps = parse_periods([2023, 2017, "2019", (2020, 2021), "2022-04-01/2022-09-30", "2016-06"])
    assert [p.label for p in ps] == [
        "2016-06",
        "2017",
        "2019",
        "2020/2021",
        "2022-04-01/2022-09-30",
        "2023",
    ]
    w = ps[3]
    assert w.start == np.datetime64("2020-01-01", "ns") and w.end == np.datetime64(
        "2022-01-01", "ns"
    )
    assert str(ps[4].last_day) == "2022-09-30"
    assert ps[1].stac_datetime == "2017-01-01T00:00:00Z/2017-12-31T23:59:59.999999Z"
    assert ps[1].contains(dt.datetime(2017, 12, 31, 23, 59, tzinfo=dt.UTC))
    assert not ps[1].contains(dt.datetime(2018, 1, 1, tzinfo=dt.UTC))
    assert [p.label for p in parse_periods(2017)] == ["2017"]
    assert [p.label for p in parse_periods((2017, 2019))] == ["2017", "2019"]  # a list
    assert [p.label for p in parse_periods([(2016, 2017)])] == ["2016/2017"]  # a window


@pytest.mark.parametrize(
    "bad, match",
    [
        ([2019, 2018, 2019], "same start"),
        ([(2019, 2017)], "ends before it starts"),
        ([2012], "first images"),
        (["2017-13"], "not a valid date"),
        (["last year"], "cannot read"),
        ([(2017, 2018, 2019)], "window is"),
        ([], "no period"),
        ([True], "not a year"),
    ],
)
def test_bad_periods(bad, match):
    with pytest.raises(InvalidPeriodError, match=match):
        parse_periods(bad)


# --- item metadata ---------------------------------------------------------------------------


def _item(props, day=dt.datetime(2023, 5, 1, tzinfo=dt.UTC), item_id="x"):
    return pystac.Item(item_id, None, None, day, props)


def test_dn_offset_rules():
    old, new = (
        _item({"s2:processing_baseline": "02.14"}),
        _item({"s2:processing_baseline": "04.00"}),
    )
    assert dn_offset(old) == 0 and dn_offset(new) == 1000
    flagged = _item({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    assert dn_offset(flagged) == 0  # the archive removed it already
    assert dn_offset(flagged, harmonize="baseline") == 1000  # ... unless flags are not trusted
    assert dn_offset(new, harmonize=False) == 0
    assert dn_offset(new, harmonize=lambda item: 42) == 42
    # Collection-1 reprocessing: a 2017 date with baseline 05.00 carries the offset.
    c1 = _item({"s2:processing_baseline": "05.00"}, day=dt.datetime(2017, 5, 1, tzinfo=dt.UTC))
    assert dn_offset(c1) == 1000
    uri = _item({"s2:product_uri": "S2B_MSIL2A_20220301T101839_N0400_R065_T32TQM.SAFE"})
    assert processing_baseline(uri) == 4.0 and dn_offset(uri) == 1000
    assert dn_offset(_item({}, day=dt.datetime(2019, 1, 1, tzinfo=dt.UTC))) == 0
    with pytest.warns(Sentinel2Warning, match="no processing baseline"):
        assert dn_offset(_item({})) == 1000  # 2023 without metadata: assumed 04.00+


def test_band_names():
    assert [canonical_band(b) for b in ("red", "B04", "b8a", "nir", "nir08", "swir16", "scl")] == [
        "B04",
        "B04",
        "B8A",
        "B08",
        "B8A",
        "B11",
        "SCL",
    ]
    with pytest.raises(XJointSegError, match="not a Sentinel-2 band"):
        canonical_band("thermal")


def test_shared_stac_samples_map_bands_and_baselines():
    """Real archive metadata: every style of asset keys maps to B02-B08 + SCL."""
    from xjointseg.sentinel2._items import band_assets, find_asset

    folder = shared_path("stac_samples")
    seen = {}
    for path in sorted(folder.glob("S2*.json")):
        item = pystac.Item.from_dict(json.loads(path.read_text()))
        keys = band_assets(item, ("B02", "B03", "B04", "B08"))
        seen[path.stem] = (keys, find_asset(item, "SCL"), processing_baseline(item))
    assert seen["S2A_28QCH_20200714_0_L2A"][:2] == (("B02", "B03", "B04", "B08"), "SCL")
    assert seen["S2A_T07HFE_20190212T192646_L2A"] == (("blue", "green", "red", "nir"), "scl", 2.12)
    assert seen["S2A_T01LAC_20200717T221944_L1C"][1] is None  # L1C: no SCL


# --- composites from a static catalog ---------------------------------------------------------


@pytest.fixture(scope="module")
def composites(catalog):
    return load_sentinel2(str(catalog), periods=[2019, 2023], chunks=16)


def test_composite_is_exact_median_of_clear_observations(composites):
    ds = composites
    assert dict(ds.sizes) == {"time": 2, "y": N, "x": N}
    assert list(ds.data_vars) == ["B02", "B03", "B04", "B08", "obs_count"]
    assert ds.B04.dtype == np.float32 and ds.obs_count.dtype == np.uint16
    assert ds.B04.chunks == ((1, 1), (16, 8), (16, 8))  # lazy, one period per chunk
    got = ds.sel(time="2019").compute()
    for band in BASE:
        med, count = expected_2019(band)
        np.testing.assert_array_equal(got[band].values[0], med.astype("float32"))
        np.testing.assert_array_equal(got["obs_count"].values[0], count)
    # The all-cloud pixels are missing (NaN), never 0.
    assert np.isnan(got.B04.values[0, 22:, 22:]).all()
    assert (got.B04.values[0][~np.isnan(got.B04.values[0])] > 0).all()


def test_harmonised_dn_of_baseline_04_items(composites, catalog):
    got = composites.sel(time="2023").compute()
    for band in BASE:  # PC-style +1000 items and an ES-style item flagged as harmonised
        np.testing.assert_array_equal(got[band].values[0], true_dn(band, 1).astype("float32"))
    assert (got.obs_count.values == 3).all()
    raw = load_sentinel2(str(catalog), periods=2023, harmonize=False, chunks=16).compute()
    np.testing.assert_array_equal(raw.B02.values[0], true_dn("B02", 0) + 1000.0)
    obs = load_sentinel2(str(catalog), periods=2023, composite=None).compute()
    assert obs.sizes["time"] == 3 and (obs.period.values == "2023").all()
    np.testing.assert_array_equal(obs.B03.values[0], true_dn("B03", 0))  # 1000 removed
    assert obs.B04.values[0, 5, 5] == 0  # DN 950 -> negative reflectance -> clipped to 0
    trust_baseline = load_sentinel2(str(catalog), periods=2023, harmonize="baseline").compute()
    np.testing.assert_array_equal(trust_baseline.B08.values[0], true_dn("B08", 0))


def test_period_coordinates_and_metadata(composites):
    ds = composites
    assert list(ds.period.values) == ["2019", "2023"]
    assert list(ds.time.values) == list(np.array(["2019-01-01", "2023-01-01"], "datetime64[ns]"))
    assert str(ds.period_end.values[0])[:10] == "2019-12-31"
    assert list(ds.n_items.values) == [5, 3]  # the older duplicate of 2019-03-01 was dropped
    assert list(ds.n_observations.values) == [5, 3]
    assert ds.odc.crs.epsg == 32633 and ds.odc.geobox.resolution.x == 10
    assert ds.odc.geobox.affine.c == X0 and ds.odc.geobox.affine.f == Y0
    assert "es-2019-0-old" not in json.loads(ds.attrs["stac_items"])["2019"]
    assert ds.attrs["cloud_mask"] == f"SCL classes {list(DEFAULT_SCL_MASK)}"


def test_each_period_loads_with_whole_time_axis_in_one_chunk(items):
    from xjointseg.sentinel2._composite import _geobox
    from xjointseg.sentinel2._items import band_assets, find_asset

    its = [i for i in items if i.id.startswith("es-2019-") and i.id != "es-2019-0-old"]
    bands = ("B04",)
    plan = {i.id: (band_assets(i, bands), find_asset(i, "SCL"), 0.0) for i in its}
    stack = _period_stack(
        its,
        plan,
        gbox=_geobox(its, None, 10.0, None),
        options=LoadOptions(periods=2019, bands=bands, chunks=8, cloud_mask=DEFAULT_SCL_MASK),
    )
    assert stack.B04.chunks == ((5,), (8, 8, 8), (8, 8, 8))  # median: blockwise, no shuffle


def test_mixed_asset_styles_and_band_aliases(items):
    pc = [i for i in items if i.id.startswith("pc-")]
    es = [i for i in items if i.id == "es-2023-2"]
    ds = load_sentinel2(pc + es, periods=2023, bands=["red", "nir", "B03"])
    assert list(ds.data_vars) == ["B04", "B08", "B03", "obs_count"]
    np.testing.assert_array_equal(ds.B08.values[0], true_dn("B08", 1))


def test_cloud_mask_options(catalog):
    kw = dict(periods=2019, bands=["B02"], chunks=16)
    none = load_sentinel2(str(catalog), cloud_mask=False, **kw).obs_count.values[0]
    assert none[5, 5] == 5 and none[0, 0] == 4  # only the no-data DN 0 is dropped
    only_high = load_sentinel2(str(catalog), cloud_mask=[0, CLOUD_HIGH], **kw).obs_count.values[0]
    assert only_high[5, 5] == 3 and only_high[23, 23] == 5  # medium-probability cloud kept
    base = load_sentinel2(str(catalog), **kw).obs_count.values[0]
    grown = load_sentinel2(str(catalog), cloud_dilation=1, **kw).obs_count.values[0]
    assert base[10, 12] == 5 and grown[10, 12] == 3  # next to the cloud edge at column 12
    assert grown[10, 13] == 5 and grown[21, 21] == 0 and base[21, 21] == 5


def test_max_cloud_cover_and_bbox_subset(catalog):
    ds = load_sentinel2(str(catalog), periods=2019, max_cloud_cover=50, bands=["B02"])
    assert int(ds.n_items[0]) == 4  # the 80 % item is skipped
    # A lon/lat box around the scene's north-west 100 m: the grid snaps to 10 m pixels.
    corner = box(X0 + 5, Y0 - 95, X0 + 95, Y0 - 5, crs="EPSG:32633").to_crs("EPSG:4326")
    sub = load_sentinel2(str(catalog), periods=2019, bbox=corner.boundingbox, bands=["B02"])
    assert sub.odc.crs.epsg == 32633 and sub.sizes["y"] <= 11 and sub.sizes["x"] <= 11
    assert sub.x.values[0] >= X0 and sub.y.values[0] <= Y0
    # The same area given in its own CRS.
    proj = load_sentinel2(
        str(catalog),
        periods=2019,
        geopolygon=box(X0, Y0 - 100, X0 + 100, Y0, crs="EPSG:32633"),
        bands=["B02"],
    ).compute()
    assert dict(proj.sizes) == {"time": 1, "y": 10, "x": 10}
    np.testing.assert_array_equal(proj.B02.values[0], expected_2019("B02")[0][:10, :10])


def test_mean_composite(catalog):
    ds = load_sentinel2(str(catalog), periods=2023, composite="mean", bands=["B02"])
    np.testing.assert_allclose(ds.B02.values[0], true_dn("B02", 1))


def test_composites_feed_segment_with_nodata(composites):
    from xjointseg.testing import toy_model

    isa = composites.isa.segment(model=toy_model()).sel(time="2019").compute()
    assert isa.shape == (1, 10 * N, 10 * N) and isa.dtype == np.uint8
    assert (isa.values[0, 220:, 220:] == 255).all()  # never-clear pixels stay nodata at 1 m
    assert set(np.unique(isa.values[0, :200, :200])) <= {0, 1}


def test_search_items_lists_what_would_load(catalog):
    found = search_items(str(catalog), periods=[2019, 2023], max_cloud_cover=50)
    assert list(found) == ["2019", "2023"]
    assert [i.id for i in found["2019"]] == ["es-2019-0", "es-2019-1", "es-2019-2", "es-2019-4"]
    assert [i.id for i in found["2023"]] == ["pc-2023-0", "pc-2023-1", "es-2023-2"]


def test_presets_need_no_network_to_configure():
    assert CATALOGS["earth-search-c1"].collection == "sentinel-2-c1-l2a"
    assert CATALOGS["earth-search"].assets["B08"] == "nir"
    assert CATALOGS["planetary-computer"].assets["SCL"] == "SCL"
    assert CATALOGS["planetary-computer"].sign == "planetary_computer:sign_inplace"
    try:
        import planetary_computer  # noqa: F401
    except ImportError:  # the signing hook is checked before any request is made
        with pytest.raises(CatalogError, match="pip install planetary-computer"):
            load_sentinel2("planetary-computer", periods=2023, bbox=(12.5, 52.4, 12.6, 52.5))


# --- the remote path: a static catalog and a STAC API over HTTP on 127.0.0.1 ---------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (GDAL reads COGs by range), plus a mock STAC API."""

    features: list[dict] = []
    log: list[str] = []
    bodies: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        type(self).log.append(self.path)
        if self.path.rstrip("/") == "/api":
            base = f"http://127.0.0.1:{self.server.server_port}/api"
            return self._json(
                {
                    "type": "Catalog",
                    "id": "mock-api",
                    "stac_version": "1.0.0",
                    "description": "a STAC API on 127.0.0.1",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                        "https://api.stacspec.org/v1.0.0/item-search#query",
                    ],
                    "links": [
                        {"rel": "self", "href": base},
                        {"rel": "root", "href": base},
                        {
                            "rel": "search",
                            "href": f"{base}/search",
                            "type": "application/geo+json",
                            "method": "POST",
                        },
                    ],
                }
            )
        return super().do_GET()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        type(self).bodies.append(body)
        start, end = body.get("datetime", "../..").split("/")
        feats = [
            f
            for f in type(self).features
            if start <= f["properties"]["datetime"] <= end
            and f.get("collection") in body.get("collections", [f.get("collection")])
        ]
        return self._json({"type": "FeatureCollection", "features": feats, "links": []})

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().send_head()
        m = re.match(r"bytes=(\d+)-(\d*)", rng)
        size = os.path.getsize(path)
        start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        import io

        return io.BytesIO(data)


@pytest.fixture(scope="module")
def server(catalog):
    handler = functools.partial(_Handler, directory=str(catalog.parent))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_port}"
    remote = pystac.Catalog.from_file(f"{base}/catalog.json").get_items(recursive=True)
    features = []
    for item in remote:  # the API answers with absolute (http) asset hrefs, as real ones do
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in d["assets"].items():
            asset["href"] = item.assets[key].get_absolute_href()
        d["links"], d["collection"] = [], "sentinel-2-l2a"
        features.append(d)
    _Handler.features = features
    yield base
    srv.shutdown()


def test_static_catalog_over_http(server, composites):
    ds = load_sentinel2(f"{server}/catalog.json", periods=[2019, 2023], chunks=16)
    xr.testing.assert_equal(ds.drop_attrs().compute(), composites.drop_attrs().compute())
    assert any(p.endswith(".tif") for p in _Handler.log)  # pixels really came over HTTP


def test_stac_api_search_with_signing_hook(server, composites):
    signed = []

    def sign_inplace(obj):  # planetary_computer.sign_inplace style: modifies, returns None
        if isinstance(obj, dict):  # pystac-client hands over raw pages of search results
            for feature in obj.get("features", [obj]):
                for asset in feature["assets"].values():
                    asset["href"] += "?token=secret"
                signed.append(feature["id"])
        else:
            for item in getattr(obj, "items", [obj]):
                for asset in item.assets.values():
                    asset.href += "?token=secret"
                signed.append(item.id)

    _Handler.log.clear()
    _Handler.bodies.clear()
    inner = box(X0 + 40, Y0 - 200, X0 + 200, Y0 - 40, crs="EPSG:32633")
    ds = load_sentinel2(
        f"{server}/api",
        collection="sentinel-2-l2a",
        bbox=inner.to_crs("EPSG:4326").boundingbox,
        periods=[2019, 2023],
        sign=sign_inplace,
        max_cloud_cover=90,
        chunks=16,
    )
    assert 16 <= ds.sizes["x"] < N and 16 <= ds.sizes["y"] < N  # the bbox, on the same grid
    xr.testing.assert_equal(
        ds[["B04", "obs_count"]].drop_attrs().compute(),
        composites[["B04", "obs_count"]].sel(x=ds.x, y=ds.y).drop_attrs().compute(),
    )
    assert [b["collections"] for b in _Handler.bodies] == [["sentinel-2-l2a"]] * 2
    assert _Handler.bodies[0]["datetime"].startswith("2019-01-01")
    assert "bbox" in _Handler.bodies[0] and "query" in _Handler.bodies[0]
    assert signed and any("token=secret" in p for p in _Handler.log if ".tif" in p)
    with pytest.raises(XJointSegError, match="name the collection"):
        load_sentinel2(f"{server}/api", periods=2019)


def test_unreachable_catalogs(server, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CatalogError, match="cannot reach the STAC API"):
        load_sentinel2(f"http://127.0.0.1:{port}/v1", collection="x", periods=2019)
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_sentinel2(f"{server}/missing/catalog.json", periods=2019)
    with pytest.raises(CatalogError, match="not a catalog preset"):
        load_sentinel2(str(tmp_path / "nowhere.json"), periods=2019)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CatalogError, match="is not JSON"):
        load_sentinel2(str(tmp_path / "bad.json"), periods=2019)
    assert issubclass(CatalogError, OSError)


def test_a_list_of_item_files_is_a_source(tmp_path):
    """The bundled two-date crop: item JSON paths, one per date, load as two periods on one
    grid; a path that is not an item is refused by name."""
    from xjointseg.data import demo_pair_items

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Sentinel2Warning)  # L1C: no SCL
        ds = load_sentinel2([str(p) for p in demo_pair_items()], periods=[2016, 2018])
    assert list(ds.period.values) == ["2016", "2018"] and ds.sizes["y"] == ds.sizes["x"] == 192
    assert float(ds["B04"].isel(time=0).mean()) != float(ds["B04"].isel(time=1).mean())
    (tmp_path / "cat.json").write_text(json.dumps(pystac.Catalog("c", "d").to_dict()))
    with pytest.raises(CatalogError, match="is a Catalog, not a STAC item"):
        load_sentinel2([demo_pair_items()[0], tmp_path / "cat.json"], periods=2016)
    with pytest.raises(CatalogError, match="cannot read a STAC item"):
        load_sentinel2([tmp_path / "missing.json"], periods=2016)


# --- bad input -----------------------------------------------------------------------------------


def test_no_items_for_a_period(catalog):
    with pytest.raises(NoItemsError, match=r"period 2021 .*span 2019-03-01 to 2023-08-20"):
        load_sentinel2(str(catalog), periods=[2019, 2021])
    with pytest.raises(NoItemsError, match="over lon/lat"):
        load_sentinel2(str(catalog), periods=2019, bbox=(10.0, 50.0, 10.1, 50.1))
    assert issubclass(NoItemsError, LookupError)


@pytest.mark.parametrize(
    "bbox, match",
    [
        ((330000, 5814360, 345360, 5822040), "projected metres"),
        ((12.5, 52.4, 12.7, 95.0), "out of range"),
        ((12.7, 52.4, 12.5, 52.5), "swapped"),
        ((12.5, 52.4, 12.7), "4 finite numbers"),
        (("a", 1, 2, 3), "4 numbers"),
    ],
)
def test_bad_bbox(catalog, bbox, match):
    with pytest.raises(BBoxError, match=match):
        load_sentinel2(str(catalog), periods=2019, bbox=bbox)


def test_geojson_geopolygon_in_metres_is_rejected(catalog):
    gj = box(X0, Y0 - 100, X0 + 100, Y0, crs="EPSG:32633").json  # GeoJSON means lon/lat
    with pytest.raises(BBoxError, match="projected metres"):
        load_sentinel2(str(catalog), periods=2019, geopolygon=gj)


def test_missing_band(catalog):
    with pytest.raises(MissingBandError, match=r"no asset for band B11 .*raster assets are"):
        load_sentinel2(str(catalog), periods=2019, bands=["B02", "swir16"])


def test_missing_projection_metadata(items):
    its = [i.clone() for i in items if i.id.startswith("pc-")]
    for item in its:
        for asset in item.assets.values():
            for k in ("proj:code", "proj:epsg", "proj:shape", "proj:transform"):
                asset.extra_fields.pop(k, None)
    with pytest.raises(ProjectionError, match=r"lacks projection metadata.*pass crs="):
        load_sentinel2(its, periods=2023)
    # With a target CRS the files' own georeferencing places them (footprint-derived grid).
    ds = load_sentinel2(its, periods=2023, crs="EPSG:32633", bands=["B02"])
    assert ds.odc.crs.epsg == 32633 and int(ds.obs_count.max()) == 2


def test_relative_hrefs_without_self_link(items):
    loose = pystac.Item.from_dict(items[0].to_dict(include_self_link=False, transform_hrefs=False))
    loose.set_self_href(None)
    with pytest.raises(CatalogError, match="relative href"):
        load_sentinel2([loose], periods=2019)


@pytest.fixture(scope="module")
def zone32_item(tmp_path_factory):
    """The same ground in UTM zone 32 (the neighbouring zone), as an item of another tile."""
    from pyproj import Transformer

    x, y = Transformer.from_crs(32633, 32632, always_xy=True).transform(X0, Y0)
    x0, y0 = round(x, -1), round(y, -1)
    dn = {b: np.full((N, N), 1234) for b in BASE}
    scl = np.full((N // 2, N // 2), CLEAR)
    root = tmp_path_factory.mktemp("zone32")
    props = {"s2:processing_baseline": "02.13", "grid:code": "MGRS-32UQD"}
    item = make_item(
        root,
        "es-2019-z32",
        "2019-06-01",
        keys=ES_KEYS,
        dn=dn,
        scl=scl,
        props=props,
        epsg=32632,
        x0=x0,
        y0=y0,
    )
    return item


def test_mixed_crs_needs_a_target(items, zone32_item):
    its = [i for i in items if i.id.startswith("es-2019-")] + [zone32_item]
    with pytest.raises(MixedCRSError, match=r"2 CRSs .*pass crs="):
        load_sentinel2(its, periods=2019)
    ds = load_sentinel2(its, periods=2019, crs="EPSG:32633", bands=["B02"])
    assert ds.odc.crs.epsg == 32633 and int(ds.n_observations[0]) == 6
    assert int(ds.obs_count.max()) == 6  # the zone-32 item, reprojected, adds one date


def test_bad_options(catalog):
    c = str(catalog)
    for kw in (
        {"composite": "max"},
        {"cloud_dilation": -1},
        {"max_cloud_cover": 150},
        {"chunks": 0},
        {"cloud_mask": [12]},
        {"l1c_mask": "ndvi"},
        {"bbox": (12.5, 52.5, 12.6, 52.6), "geopolygon": box(0, 0, 1, 1, "EPSG:4326")},
    ):
        with pytest.raises(XJointSegError):
            load_sentinel2(c, periods=2019, **kw)
    with pytest.raises(XJointSegError, match="cloud mask"):
        load_sentinel2(c, periods=2019, bands=["B02", "SCL"])


# --- staging to Zarr -------------------------------------------------------------------------


def test_stage_composites_to_zarr(catalog, composites, tmp_path):
    import zarr

    store = tmp_path / "composites.zarr"
    staged = load_sentinel2(str(catalog), periods=[2019, 2023], chunks=16, store=store)
    xr.testing.assert_equal(
        staged.drop_attrs().drop_vars("spatial_ref").compute(),
        composites.drop_attrs().drop_vars("spatial_ref").compute(),
    )
    assert list(staged.period.values) == ["2019", "2023"]
    assert staged.odc.geobox == composites.odc.geobox
    group = zarr.open_group(store, mode="r")
    assert group.metadata.zarr_format == 3 and group.metadata.consolidated_metadata is None
    assert group["B04"].chunks == (1, 16, 16)
    with pytest.raises(StagingStoreExistsError, match="overwrite=True"):
        load_sentinel2(str(catalog), periods=2019, store=store)
    again = load_sentinel2(str(catalog), periods=2019, store=store, overwrite=True)
    assert again.sizes["time"] == 1


def test_stage_overwrite_never_deletes_a_foreign_folder(catalog, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(StagingStoreExistsError, match="not written by load_sentinel2"):
        load_sentinel2(str(catalog), periods=2019, store=folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorePathError, match="is a file"):
        load_sentinel2(str(catalog), periods=2019, store=tmp_path / "file")


def test_provenance_from_load_to_open_cube(catalog, tmp_path):
    """load_sentinel2 -> segment -> to_zarr -> open_cube keeps items, periods and model."""
    from xjointseg.cube import status
    from xjointseg.testing import toy_model

    ds = load_sentinel2(str(catalog), periods=[2019, 2023], chunks=16)
    items = json.loads(ds.attrs["stac_items"])
    isa = ds.isa.segment(model=toy_model(bands=("B04", "B03", "B02")))
    assert json.loads(isa.attrs["source_items"]) == items
    store = tmp_path / "cube.zarr"
    isa.isa.to_zarr(store)
    cube = xjointseg.open_cube(store)
    assert cube.attrs["source_items"] == sorted({i for ids in items.values() for i in ids})
    assert list(cube.period.values) == ["2019", "2023"]
    assert cube.attrs["model"] == "toy2"
    for k, label in enumerate(["2019", "2023"]):
        record = json.loads((store / "_xjointseg" / "periods" / f"{k:04d}.json").read_text())
        assert record["sources"] == items[label] and record["coords"]["period"] == label
    # loading again is the same computation: a resume, no conflict
    again = load_sentinel2(str(catalog), periods=[2019, 2023], chunks=16)
    again.isa.segment(model=toy_model(bands=("B04", "B03", "B02"))).isa.to_zarr(store)
    assert status(store).complete.all()


# --- real items from ../shared/data ------------------------------------------------------------


def test_real_earth_search_l2a_item_at_native_100m():
    path = shared_path("s2", "earthsearch_29RKH_20200219_L2A_100m", "item.json")
    item = pystac.Item.from_file(str(path))
    assert processing_baseline(item) == 2.14 and dn_offset(item) == 0  # pre-04.00: no offset
    with warnings.catch_warnings():
        warnings.simplefilter("error", Sentinel2Warning)  # no metadata doubts for this item
        ds = load_sentinel2(str(path), periods=2020, resolution=100, chunks=549).compute()
    assert ds.odc.geobox.shape == (1098, 1098) and ds.odc.crs.epsg == 32629
    assert ds.odc.geobox.affine.c == 199980.0 and ds.odc.geobox.affine.f == 2800020.0
    with rasterio.open(path.parent / "B04.tif") as src:
        red = src.read(1).astype("float32")
    with rasterio.open(path.parent / "SCL.tif") as src:
        scl = src.read(1).repeat(2, 0).repeat(2, 1)  # 200 m classes on the 100 m grid
    clear = ~np.isin(scl, DEFAULT_SCL_MASK) & (red > 0)
    got = ds.B04.values[0]
    np.testing.assert_array_equal(got[clear], red[clear])
    assert np.isnan(got[~clear]).all()
    np.testing.assert_array_equal(ds.obs_count.values[0], clear.astype("uint16"))
    assert 0.5 < clear.mean() < 1  # cirrus over part of the desert scene is masked


def test_real_havelland_l1c_item_to_segment(tmp_path):
    from xjointseg.testing import toy_model

    path = shared_path("s2", "havelland_T33UUU_20170216_L1C", "item.json")
    area = box(336000, 5816500, 337000, 5817300, crs="EPSG:32633")
    with pytest.warns(Sentinel2Warning, match="no SCL asset"):
        ds = load_sentinel2(str(path), geopolygon=area, periods=2017)
    assert dict(ds.sizes) == {"time": 1, "y": 80, "x": 100}
    with rasterio.open(path.parent / "B02.tif") as src:
        col, row = (~src.transform) * (336000, 5817300)
        raw = src.read(1, window=((int(row), int(row) + 80), (int(col), int(col) + 100)))
    np.testing.assert_array_equal(ds.B02.values[0], raw.astype("float32"))
    isa = ds.isa.segment(model=toy_model())
    assert isa.shape == (1, 800, 1000) and isa.odc.crs.epsg == 32633
    assert set(np.unique(isa.values)) <= {0, 1}
    bright = load_sentinel2(str(path), geopolygon=area, periods=2017, l1c_mask="brightness")
    np.testing.assert_array_equal(np.isnan(bright.B02.values[0]), raw >= 3000)


def test_example_script_runs_offline(capsys):
    import runpy

    example = Path(__file__).parents[1] / "examples" / "bbox_to_isa.py"
    module = runpy.run_path(str(example))
    if module["offline_item"]() is None:
        pytest.skip("no offline Havelland item (bundled or in ../shared)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Sentinel2Warning)  # L1C: no SCL, said in the output
        assert module["main"](["--bbox", "12.54", "52.47", "12.546", "52.474"]) == 0
    out = capsys.readouterr().out
    assert "1 item(s)" in out and "ISA map" in out
    assert "bundled model 'jointseg'" in out
