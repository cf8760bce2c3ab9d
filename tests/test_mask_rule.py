"""The mask rule: how 1 m logits become the 0/1 ISA mask (threshold, or sub-pixel allocation
of each 10 m pixel's expected ISA), and that the engine applies it without seams."""

import numpy as np
import pytest
import torch
from conftest import partition
from hypothesis import given
from hypothesis import strategies as st

from xjointseg import errors, segment
from xjointseg.models import load_model, save_model
from xjointseg.models.decision import MaskRule
from xjointseg.models.model import Model
from xjointseg.models.toy import ToyNet
from xjointseg.testing import synthetic_scene

BANDS = ("B04", "B03", "B02")


def cells(a: np.ndarray, s: int = 10) -> np.ndarray:
    """(..., H, W) -> (..., H/s, W/s, s*s)"""
    *lead, h, w = a.shape
    blocks = a.reshape(*lead, h // s, s, w // s, s).swapaxes(-3, -2)
    return blocks.reshape(*lead, h // s, w // s, s * s)


@given(seed=st.integers(0, 10_000), spread=st.sampled_from([0.01, 0.5, 4.0]))
def test_fraction_rule_keeps_each_cells_expected_isa(seed, spread):
    rng = np.random.default_rng(seed)
    # a smooth 10 m level plus 1 m detail, as the networks make
    level = rng.normal(0, 3, (2, 3, 4))
    logits = np.repeat(np.repeat(level, 10, -2), 10, -1) + rng.normal(0, spread, (2, 30, 40))
    logits = logits.astype(np.float32)
    mask = MaskRule("fraction").numpy(logits)
    got, lg = cells(mask), cells(logits)
    expected = np.round((1 / (1 + np.exp(-lg.astype(np.float64)))).sum(-1))
    np.testing.assert_array_equal(got.sum(-1), expected)
    # the ISA pixels of a cell are its highest logits
    low_in = np.where(got, lg, np.inf).min(-1)
    high_out = np.where(got, -np.inf, lg).max(-1)
    assert np.all(low_in >= high_out)


def test_threshold_rule_is_the_probability_at_the_threshold():
    logits = torch.linspace(-3, 3, 400).reshape(20, 20)
    for t in (0.3, 0.5, 0.8):
        prob = torch.sigmoid(logits)
        mask = MaskRule("threshold", t)(logits)
        away = (prob - t).abs() > 1e-6
        assert torch.equal(mask[away], (prob >= t)[away])


def test_fraction_rule_gives_graded_shares_where_a_threshold_gives_all_or_nothing():
    # flat 10 m pixels at probabilities 0.1 .. 0.9: the threshold keeps all or nothing
    prob = np.linspace(0.1, 0.9, 9)
    logits = np.log(prob / (1 - prob)).reshape(3, 3)
    flat = np.repeat(np.repeat(logits, 10, 0), 10, 1).astype(np.float32)
    share = cells(MaskRule("fraction").numpy(flat)).mean(-1).ravel()
    np.testing.assert_allclose(share, prob, atol=0.005)
    assert set(cells(MaskRule("threshold").numpy(flat)).mean(-1).ravel()) == {0.0, 1.0}


def test_threshold_calibrates_the_fraction_rule():
    logits = np.random.default_rng(0).normal(0, 2, (40, 40)).astype(np.float32)
    counts = [MaskRule("fraction", t).numpy(logits).sum() for t in (0.3, 0.5, 0.7)]
    assert counts[0] > counts[1] > counts[2]


def test_slope_moves_shares_towards_the_threshold_rule():
    level = np.linspace(-2, 2, 16).reshape(4, 4)  # flat 10 m pixels
    flat = np.repeat(np.repeat(level, 10, 0), 10, 1).astype(np.float32)
    shares = {a: cells(MaskRule("fraction", 0.5, 10, a).numpy(flat)).mean(-1) for a in (1, 3, 50)}
    np.testing.assert_allclose(shares[1], 1 / (1 + np.exp(-level)), atol=0.005)
    np.testing.assert_allclose(shares[3], 1 / (1 + np.exp(-3 * level)), atol=0.005)
    # a steep slope is the threshold rule (these cells are all or nothing)
    threshold = cells(MaskRule("threshold").numpy(flat)).mean(-1)
    np.testing.assert_array_equal(shares[50], threshold)
    with pytest.raises(errors.OptionError, match="positive"):
        MaskRule("fraction", slope=0)


def test_mask_from_probability_equals_mask_from_logits():
    logits = np.random.default_rng(1).normal(0, 2, (2, 20, 30)).astype(np.float32)
    prob = 1 / (1 + np.exp(-logits))
    prob[0, :10, :10] = np.nan  # nodata cell: decided, then masked by the caller
    rule = MaskRule("fraction", 0.6)
    got = rule.from_probability(prob)
    np.testing.assert_array_equal(got[:, 10:], rule.numpy(logits)[:, 10:])


def test_bad_rules_are_refused():
    with pytest.raises(errors.OptionError, match="one of"):
        MaskRule("majority")
    with pytest.raises(errors.OptionError, match="between 0 and 1"):
        MaskRule("fraction", 1.0)
    with pytest.raises(ValueError, match="whole 10 x 10 cells"):
        MaskRule("fraction")(torch.zeros(15, 20))


# --- the engine applies the model's rule, without seams ------------------------------------

NET = ToyNet(in_bands=3, depth=3, seed=5)
FRACTION = Model.from_network(NET, name="toy-fraction", bands=BANDS, mask_rule=MaskRule("fraction"))
SCENE = synthetic_scene(37, 29, seed=3)


@given(ych=partition(37), xch=partition(29), tile=st.sampled_from([8, 16]))
def test_fraction_mask_independent_of_chunking_and_tile(ych, xch, tile):
    ref = segment(SCENE, FRACTION, tile=16, chunks=100_000, precision="fp32").values
    got = segment(SCENE.chunk(y=ych, x=xch), FRACTION, tile=tile, precision="fp32").values
    np.testing.assert_array_equal(got, ref)


def test_segment_mask_is_the_rule_applied_to_the_probability():
    mask = segment(SCENE, FRACTION, tile=16, precision="fp32").values
    prob = segment(SCENE, FRACTION, tile=16, precision="fp32", output="probability").values
    same = mask == FRACTION.mask_rule.from_probability(prob)
    assert same.mean() > 0.9999  # sigmoid then logit: rounding may swap near-equal ranks
    plain = Model.from_network(NET, name="toy", bands=BANDS)
    assert not np.array_equal(mask, segment(SCENE, plain, tile=16, precision="fp32").values)


def test_models_in_memory_with_other_rules_have_other_tokens():
    plain = Model.from_network(NET, name="t", bands=BANDS)
    again = Model.from_network(NET, name="t", bands=BANDS)
    fraction = Model.from_network(NET, name="t", bands=BANDS, mask_rule=MaskRule("fraction"))
    calibrated = Model.from_network(
        NET, name="t", bands=BANDS, mask_rule=MaskRule("fraction", 0.6, slope=2.0)
    )
    assert plain.sha256 == again.sha256
    assert len({plain.sha256, fraction.sha256, calibrated.sha256}) == 3
    assert calibrated.mask_rule == MaskRule("fraction", 0.6, 10, 2.0)
    a = segment(SCENE, plain, tile=16, precision="fp32")
    b = segment(SCENE, fraction, tile=16, precision="fp32")
    assert a.data.name != b.data.name  # Dask would otherwise reuse one for the other
    assert not np.array_equal(a.values, b.values)


def test_weights_carry_the_rule(tmp_path):
    path = tmp_path / "f.safetensors"
    rule = {"mask_rule": "fraction", "threshold": 0.6, "mask_slope": 2}
    save_model(NET, path, name="f", bands=BANDS, extra=rule)
    model = load_model(str(path), device="cpu")
    assert model.mask_rule == MaskRule("fraction", 0.6, 10, 2.0)
    batch = np.random.default_rng(0).uniform(300, 3000, (1, 3, 20, 20)).astype(np.float32)
    prob = model.predict(batch, output="probability", margin=8, precision="fp32")
    mask = model.predict(batch, margin=8, precision="fp32")
    share = cells(mask).mean(-1)
    # Platt calibration of the logits: slope 2 after the threshold's shift
    logit = 2 * (np.log(prob / (1 - prob)) - np.log(0.6 / 0.4))
    expected = np.round(cells(1 / (1 + np.exp(-logit))).sum(-1)) / 100
    np.testing.assert_allclose(share, expected, atol=0.011)  # a count may round the other way
