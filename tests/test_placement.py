"""The placement metric: does a 1 m map rank the ISA pixels of a 10 m pixel above its
other pixels (within_pixel_auc), and what the 10 m field alone gives (smooth_placement)."""

import numpy as np
import pytest

from xjointseg.errors import CubeInputError
from xjointseg.metrics import placement_counts, smooth_placement, within_pixel_auc
from xjointseg.models.model import placement_note
from xjointseg.testing import toy_model


def _mixed_labels(rng, cells=(6, 8), scale=10):
    """Labels whose 10 m pixels are each 20-80 % ISA, at random places inside them."""
    h, w = cells
    label = np.zeros((h * scale, w * scale), np.uint8)
    for i in range(h):
        for j in range(w):
            k = int(rng.integers(20, 81))
            flat = np.zeros(scale * scale, np.uint8)
            flat[rng.permutation(scale * scale)[:k]] = 1
            label[i * scale : (i + 1) * scale, j * scale : (j + 1) * scale] = flat.reshape(
                scale, scale
            )
    return label


def test_perfect_reversed_and_flat_placement():
    rng = np.random.default_rng(0)
    label = _mixed_labels(rng)
    assert within_pixel_auc(label.astype(float), label) == 1.0
    assert within_pixel_auc(-label.astype(float), label) == 0.0
    # a map flat inside every 10 m pixel (a 10 m field drawn finely) says nothing: 0.5
    flat = np.kron(rng.random((6, 8)), np.ones((10, 10)))
    assert within_pixel_auc(flat, label) == 0.5
    noise = rng.random(label.shape)
    assert 0.4 < within_pixel_auc(noise, label) < 0.6


def test_only_clean_mixed_cells_count():
    rng = np.random.default_rng(1)
    label = _mixed_labels(rng, (2, 2))
    label[:10, :10] = 1  # a full cell: nothing to place
    label[10:, 10:][0, 0] = 255  # one ignored label leaves its cell out
    counts = placement_counts(rng.random(label.shape), label)
    assert counts["cells"] == 2
    ones = [(label[a : a + 10, b : b + 10] == 1).sum() for a, b in ((0, 10), (10, 0))]
    assert counts["pairs"] == sum(int(n) * (100 - int(n)) for n in ones)
    assert np.isnan(within_pixel_auc(np.zeros((10, 10)), np.ones((10, 10), np.uint8)))


def test_maps_of_partial_cells_are_refused():
    with pytest.raises(CubeInputError, match="whole 10 x 10 cells"):
        within_pixel_auc(np.zeros((15, 20)), np.zeros((15, 20), np.uint8))


def test_smooth_placement_is_the_up_sampled_cell_mean():
    prob = np.kron(np.array([[0.2, 0.6], [0.6, 1.0]]), np.ones((10, 10)))
    prob[:10, :10] += np.linspace(-0.1, 0.1, 100).reshape(10, 10)  # structure inside a cell
    smooth = smooth_placement(prob)
    assert smooth.shape == prob.shape
    # the structure inside a cell is gone: only the cell means count
    flat = np.kron(np.array([[0.2, 0.6], [0.6, 1.0]]), np.ones((10, 10)))
    assert np.allclose(smooth, smooth_placement(flat), atol=1e-6)
    # inside a cell, drawn towards its ISA-rich neighbours; the map's range is the means'
    assert smooth[0, 0] < smooth[5, 5] < smooth[9, 9]
    assert smooth.min() == pytest.approx(0.2) and smooth.max() == pytest.approx(1.0)


def test_unmeasured_weights_say_so():
    model = toy_model()
    assert model.placement is None
    assert "not measured" in placement_note(model)


# --- roads --------------------------------------------------------------------------------


def test_road_scores_count_road_pixels_away_from_buildings():
    from xjointseg.metrics import road_counts, road_scores, road_scores_from_counts

    road = np.zeros((20, 30), bool)
    road[2:6, :] = True  # a 4 m road through the top 10 m row: cover 0.4
    mask = np.zeros((20, 30), np.uint8)
    mask[3:5, :] = 1  # the map calls half of it ISA
    building = np.zeros((20, 30), bool)
    building[8:10, 20:30] = True  # a house beside the road in the last 10 m pixel
    s = road_scores(mask, road)
    assert (s["recall_1m"], s["cells"]) == (0.5, 3.0)
    assert (s["share"], s["cover"]) == pytest.approx((0.2, 0.4))
    assert road_scores(mask, road, building)["cells"] == 2.0  # the street by the house is not
    mask[0:10, 0:10] = 255  # a 10 m pixel without data is not scored
    assert road_scores(mask, road)["cells"] == 2.0
    halves = [road_counts(mask[:, :10], road[:, :10]), road_counts(mask[:, 10:], road[:, 10:])]
    pooled = {k: sum(h[k] for h in halves) for k in halves[0]}
    assert road_scores_from_counts(pooled) == pytest.approx(road_scores(mask, road))
    assert np.isnan(road_scores(mask, np.zeros_like(road))["share"])
