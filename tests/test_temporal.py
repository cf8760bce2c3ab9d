"""The temporal rule over a cube's periods (``consistent``): isotonic counts per cell, ISA that
does not revert, nodata kept, chunk independence, the stored cube untouched, real pairs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from test_change import make_cube

import xjointseg
from xjointseg.change import area, consistent, first_period, growth
from xjointseg.change.temporal import isotonic_increasing
from xjointseg.errors import CubeInputError, FactorError

YEARS4 = ["2017-01-01", "2019-01-01", "2021-01-01", "2023-01-01"]


def pava(values, weights):
    """Reference: the pool-adjacent-violators algorithm, one series at a time."""
    blocks = []  # [mean, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), float(w), 1])
        while (
            len(blocks) > 1
            and blocks[-2][1] > 0
            and blocks[-1][1] > 0
            and (blocks[-2][0] > blocks[-1][0])
        ):
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [b[0] for b in blocks for _ in range(b[2])]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1, allow_nan=False), st.integers(1, 100)), min_size=1, max_size=7
    )
)
def test_isotonic_fit_equals_pool_adjacent_violators(series):
    values = np.array([v for v, _ in series])[:, None]
    weights = np.array([w for _, w in series])[:, None]
    fit = isotonic_increasing(values, weights)[:, 0]
    assert np.all(np.diff(fit) >= -1e-12)
    np.testing.assert_allclose(fit, pava(values[:, 0], weights[:, 0]), atol=1e-12)


def truth_and_flicker(seed=0, ny=200, nx=300, nt=4, noise=0.06):
    """A monotone truth (houses appearing, never disappearing) and the same with flicker."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, nt + 1, size=(ny // 10, nx // 10))  # period a cell is built
    start = np.kron(start, np.ones((10, 10), int))
    built = rng.random((ny, nx)) < 0.6  # the cell's pixels that are built then
    truth = np.stack([(start <= t) & built for t in range(nt)]).astype(np.uint8)
    flip = rng.random(truth.shape) < noise
    return truth, np.where(flip, 1 - truth, truth).astype(np.uint8)


def test_flicker_is_removed_and_no_pixel_reverts():
    truth, noisy = truth_and_flicker()
    cube = make_cube(noisy, years=YEARS4, chunks=64)
    out = consistent(cube).values
    assert set(np.unique(out)) <= {0, 1}
    assert np.all(np.diff(out.astype(int), axis=0) >= 0)  # once ISA, ISA in every later period

    # per 10 m cell the count is the closest non-decreasing series, so what a growth table
    # reads, the change of each cell's count between periods, is nearer the truth
    def cell_changes(a):
        counts = a.reshape(a.shape[0], a.shape[1] // 10, 10, a.shape[2] // 10, 10).sum((2, 4))
        return np.diff(counts.astype(int), axis=0)

    err_in = np.abs(cell_changes(noisy) - cell_changes(truth)).mean()
    err_out = np.abs(cell_changes(out) - cell_changes(truth)).mean()
    assert err_out < 0.75 * err_in
    assert (cell_changes(out) >= 0).all() and (cell_changes(noisy) < 0).sum() > 100
    assert (np.diff(noisy.astype(int), axis=0) < 0).sum() > 1000  # the input did revert


def test_counts_follow_the_isotonic_fit_of_each_cell():
    _, noisy = truth_and_flicker(seed=3, ny=40, nx=40)
    out = consistent(make_cube(noisy, years=YEARS4, chunks=None)).values
    counts = noisy.reshape(4, 4, 10, 4, 10).sum((2, 4)).reshape(4, -1) / 100
    expect = np.floor(isotonic_increasing(counts, np.full_like(counts, 100)) * 100 + 0.5)
    got = out.reshape(4, 4, 10, 4, 10).sum((2, 4)).reshape(4, -1)
    np.testing.assert_array_equal(got, expect)


def test_pixel_rule_lifts_dips_and_drops_blips():
    data = np.zeros((4, 10, 10), np.uint8)
    data[:, 0, 0] = [1, 0, 1, 1]
    data[:, 0, 1] = [0, 1, 0, 0]
    data[:, 0, 2] = [0, 0, 1, 1]
    out = consistent(make_cube(data, years=YEARS4, chunks=None), cell=1).values
    assert out[:, 0, 0].tolist() == [1, 1, 1, 1]
    assert out[:, 0, 1].tolist() == [0, 0, 0, 0]
    assert out[:, 0, 2].tolist() == [0, 0, 1, 1]


def test_nodata_stays_nodata_and_does_not_pull_the_fit():
    data = np.zeros((3, 10, 10), np.uint8)
    data[0, :5] = 1  # 50 % ISA in 2017
    data[1] = 255  # no observation in 2019
    data[2, :5] = 1
    out = consistent(make_cube(data, chunks=None)).values
    assert (out[1] == 255).all()
    assert out[0].sum() == 50 and out[2].sum() == 50
    np.testing.assert_array_equal(out[0], out[2])


def test_the_result_does_not_depend_on_chunking():
    _, noisy = truth_and_flicker(seed=5, ny=120, nx=160)
    noisy[1, 30:45, 50:90] = 255
    whole = consistent(make_cube(noisy, years=YEARS4, chunks=None)).values
    for chunks in (16, 37, 64):
        cube = make_cube(noisy, years=YEARS4, chunks=chunks)
        np.testing.assert_array_equal(consistent(cube).values, whole)


def test_a_new_lazy_cube_the_stored_one_untouched(tmp_path):
    _, noisy = truth_and_flicker(seed=1, ny=100, nx=100)
    cube = make_cube(noisy, years=YEARS4, chunks=50)
    cube = cube.assign_coords(isa_fingerprint=("time", [f"fp{i}" for i in range(4)]))
    store = tmp_path / "cube.zarr"
    cube.isa.to_zarr(store)
    stored = xjointseg.open_cube(store)
    before = stored.values.copy()
    out = stored.isa.consistent()
    assert out.chunks is not None  # lazy
    assert "isotonic" in out.attrs["temporal_rule"]
    # a map with fingerprints gets new ones: the rule's output is another computation
    fps = cube.isa.consistent()["isa_fingerprint"].values.tolist()
    assert len(set(fps)) == 4 and not set(fps) & {f"fp{i}" for i in range(4)}
    out.compute()
    np.testing.assert_array_equal(xjointseg.open_cube(store).values, before)
    # and it is a cube the analyses and the writer take
    assert area(out)["isa_km2"].is_monotonic_increasing
    out.isa.to_zarr(tmp_path / "consistent.zarr")
    np.testing.assert_array_equal(
        xjointseg.open_cube(tmp_path / "consistent.zarr").values, out.values
    )


@pytest.mark.parametrize("cell", [0, -10, 2.5, True, 7])
def test_a_cell_that_does_not_fit_is_refused(cell):
    cube = make_cube(np.zeros((3, 20, 30), np.uint8), chunks=None)
    with pytest.raises(FactorError, match="cell"):
        consistent(cube, cell=cell)


def test_a_map_that_is_not_isa_is_refused():
    cube = make_cube(np.zeros((3, 20, 30), np.uint8), chunks=None)
    with pytest.raises(CubeInputError):
        consistent(cube.astype("float32"))


def test_real_oscd_pair_keeps_its_isa_and_never_reverts():
    """Both dates of a real city, segmented by the bundled model: after the rule no 10 m
    pixel's ISA count drops, and each one's ISA summed over both dates stays (within
    rounding): the rule moves ISA between periods, it does not add or remove it."""
    import odc.stac
    import pystac
    import xarray as xr

    root = shared_path("s2", "oscd", "nantes")
    maps, window = [], None
    for date in ("date1", "date2"):
        item = pystac.Item.from_file(root / date / "item.json")
        ds = odc.stac.load([item], bands=["red", "green", "blue"])
        if window is None:  # 60 x 60 px of the town centre; the same ground on date 2
            crop = ds.isel(y=slice(200, 260), x=slice(200, 260))
            window = {"y": crop.y.values, "x": crop.x.values}
        maps.append(ds.sel(window).isa.segment(model="jointseg").compute())
    both = xr.concat(maps, "time")
    out = consistent(both).values
    raw = both.values
    cells = lambda a: (a == 1).reshape(2, 60, 10, 60, 10).sum((2, 4)).astype(int)  # noqa: E731
    assert (cells(out)[1] >= cells(out)[0]).all()
    assert (cells(raw)[1] < cells(raw)[0]).any()  # the real maps did flicker
    # a pooled pair keeps its total: each cell's ISA over both dates, within rounding
    assert np.abs(cells(out).sum(0) - cells(raw).sum(0)).max() <= 1
    assert np.all(np.diff(out.astype(int), axis=0) >= 0)


def test_growth_and_first_period_say_which_rule_they_follow():
    cube = make_cube(truth_and_flicker(nt=3)[1])
    raw_growth = growth(cube)
    assert "mapped alone" in raw_growth.attrs["change_rule"]
    assert "mapped alone" in first_period(cube).attrs["change_rule"]
    fixed = consistent(cube)
    assert "consistent()" in growth(fixed).attrs["change_rule"]
    assert fixed.attrs["temporal_rule"] in first_period(fixed).attrs["change_rule"]


# --- the rule with evidence: change only where the images show new ISA -------------------

NEW_BLOCK = (slice(40, 55), slice(60, 80))  # built between the first two dates (in the images)
FALSE_BLOB = (slice(80, 86), slice(120, 130))  # the second map's error: the images did not change
HOLE = (slice(22, 30), slice(42, 58))  # the third map misses part of the town: a flicker


def three_periods():
    """A cube of three maps of the new_isa scene and the images they were made from: the
    second map holds a real new block and a false blob, the third (same images as the
    second) also loses part of the town."""
    import xarray as xr
    from test_new_isa import TOWN, isa_map, scene_pair

    d1, d2 = scene_pair()
    d3 = d2.copy(deep=True)
    images = [
        d.assign_coords(time=np.datetime64(f"{y}-01-01", "ns"))
        for d, y in ((d1, 2017), (d2, 2019), (d3, 2021))
    ]
    m1 = isa_map(d1, 2017, [TOWN])
    ten_m(m1.values, NEW_BLOCK)[:] = 0  # in town, not built yet
    m2 = isa_map(d2, 2019, [TOWN, NEW_BLOCK, FALSE_BLOB])
    m3 = isa_map(d3, 2021, [TOWN, NEW_BLOCK, FALSE_BLOB])
    ten_m(m3.values, HOLE)[:] = 0
    return xr.concat([m1, m2, m3], "time"), images


def ten_m(a, window):
    rows, cols = window
    return a[..., rows.start * 10 : rows.stop * 10, cols.start * 10 : cols.stop * 10]


def test_with_images_a_period_changes_only_where_the_images_show_new_isa():
    cube, images = three_periods()
    raw = cube.values.copy()
    out = consistent(cube, images=images)
    assert out.chunks is not None and "evidence" in out.attrs["temporal_rule"]
    v = out.values
    np.testing.assert_array_equal(v[0], raw[0])  # the first period holds its map
    core = (slice(44, 51), slice(64, 76))
    assert ten_m(v[1], core).mean() > 0.9  # the real new block is kept
    assert ten_m(v[1], FALSE_BLOB).sum() == 0  # the false blob is not: no change was seen
    assert ten_m(raw[1], FALSE_BLOB).all()
    np.testing.assert_array_equal(v[2], v[1])  # same images: nothing changes, the hole fills
    assert ten_m(raw[2], HOLE).sum() == 0
    np.testing.assert_array_equal(cube.values, raw)  # the input is untouched
    # the growth table counts the block and nothing else
    table = growth(out)
    assert "evidence" in table.attrs["change_rule"]
    gained = table["gained_km2"].to_numpy()
    assert 0.8 * 15 * 20 * 100 / 1e6 < gained[0] <= 15 * 20 * 100 / 1e6 and gained[1] == 0
    assert table["lost_km2"].sum() == 0


def test_with_images_nodata_stays_and_the_result_does_not_depend_on_chunking():
    import xarray as xr

    cube, images = three_periods()
    cube = cube.copy(data=cube.values.copy())
    cube.values[1, 100:300, 200:400] = 255
    whole = consistent(cube, images=images).values
    assert (whole[1, 100:300, 200:400] == 255).all()
    for chunks in (230, 400):
        got = consistent(cube.chunk({"y": chunks, "x": chunks}), images=images).values
        np.testing.assert_array_equal(got, whole)
    # the images as one Dataset with the cube's periods give the same
    stacked = xr.concat(images, "time")
    np.testing.assert_array_equal(consistent(cube, images=stacked).values, whole)


def test_with_images_bad_calls_are_refused():
    from xjointseg.errors import ChangeInputError, OptionError

    cube, images = three_periods()
    with pytest.raises(ChangeInputError, match="one image per period"):
        consistent(cube, images=images[:2])
    with pytest.raises(ChangeInputError):
        consistent(cube, images="composites.zarr")
    with pytest.raises(OptionError, match="cell"):
        consistent(cube, images=images, cell=1)
    with pytest.raises(OptionError, match="images"):
        consistent(cube, rule=xjointseg.change.DEFAULT_RULE)
    with pytest.raises(OptionError, match="sortby"):  # periods out of order
        consistent(cube.isel(time=[1, 0, 2]), images=[images[i] for i in (1, 0, 2)])
