"""Training on real Sentinel-2 with weak 10 m labels: data loading and its refusals, the weak
and fraction losses, the 10 m prior of the networks, warm starts, the simulation cache, the
ranking metric, and the evaluation of a model on real scenes."""

import json
import math

import numpy as np
import pytest
import rasterio
import torch
from conftest import shared_path
from rasterio.transform import from_origin
from test_training import small_cfg
from test_training import stripes as aerial_stripes

from xjointseg.metrics import roc_auc
from xjointseg.models.jointseg import JointSegNet
from xjointseg.training.batches import SimulationCache
from xjointseg.training.datasets import (
    IGNORE,
    TrainingDataError,
    WeakScene,
    dynamic_world_weak_labels,
    load_dynamic_world_scene,
    load_oscd,
)
from xjointseg.training.losses import (
    fraction_loss,
    prior_consistency_loss,
    segmentation_loss,
    weak_loss,
)
from xjointseg.training.trainer import CheckpointError, train

# --- data -------------------------------------------------------------------------------


def write_tif(path, data, transform, crs="EPSG:32633"):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(data)


def tiny_item(folder, size=20, assets=("red", "green", "blue")):
    """A local STAC-like item with bands on a 10 m grid, and a Dynamic World raster on it."""
    folder.mkdir(parents=True, exist_ok=True)
    transform = from_origin(300000, 5800000, 10, 10)
    rng = np.random.default_rng(0)
    for key in assets:
        write_tif(
            folder / f"{key}.tif", rng.integers(500, 3000, (size, size), np.uint16), transform
        )
    item = {"assets": {k: {"href": f"./{k}.tif"} for k in assets}}
    (folder / "item.json").write_text(json.dumps(item))
    built = np.full((size, size), 80, np.uint8)
    cls = np.full((size, size), 6, np.uint8)
    built[:, : size // 2], cls[:, : size // 2] = 3, 1  # left half: trees
    write_tif(folder / "dw.tif", np.stack([built, cls]), transform)
    return folder / "item.json", folder / "dw.tif"


def test_dynamic_world_labels_keep_only_confident_pixels():
    built = np.array([80, 40, 5, 5, 5, 20, 45])
    cls = np.array([6, 6, 1, 7, 0, 4, 7])
    weak = dynamic_world_weak_labels(built, cls)
    # built and sure; built but unsure; trees; bare; water; crops, unsure; bare, maybe built
    assert weak.tolist() == [1, IGNORE, 0, 0, 0, IGNORE, IGNORE]
    # a stricter bound on the negatives: crops at 12 % built (a field track?) are left out
    built[5] = 12
    assert dynamic_world_weak_labels(built, cls)[5] == 0
    assert dynamic_world_weak_labels(built, cls, not_built_max=6)[5] == IGNORE
    assert dynamic_world_weak_labels(built, cls, not_built_max=6)[2] == 0


def test_load_dynamic_world_scene(tmp_path):
    item, dw = tiny_item(tmp_path / "a")
    scene = load_dynamic_world_scene(item, dw, place="a")
    assert scene.lr.shape == (3, 20, 20) and scene.lr.dtype == np.float32
    assert (scene.weak[:, :10] == 0).all() and (scene.weak[:, 10:] == 1).all()
    assert (scene.built_class[:, 10:] == 1).all() and (scene.built_class[:, :10] == 0).all()


def test_dynamic_world_on_another_grid_is_refused(tmp_path):
    item, _ = tiny_item(tmp_path / "a")
    shifted = tmp_path / "shifted.tif"
    write_tif(shifted, np.zeros((2, 20, 20), np.uint8), from_origin(300010, 5800000, 10, 10))
    with pytest.raises(TrainingDataError, match="another grid"):
        load_dynamic_world_scene(item, shifted)
    other_crs = tmp_path / "crs.tif"
    write_tif(
        other_crs,
        np.zeros((2, 20, 20), np.uint8),
        from_origin(300000, 5800000, 10, 10),
        "EPSG:32632",
    )
    with pytest.raises(TrainingDataError, match="another grid"):
        load_dynamic_world_scene(item, other_crs)


def test_scene_without_the_model_bands_is_refused(tmp_path):
    item, dw = tiny_item(tmp_path / "a", assets=("red", "green", "nir"))
    with pytest.raises(TrainingDataError, match="blue"):
        load_dynamic_world_scene(item, dw)


def test_source_with_no_usable_label_is_refused(tmp_path):
    item, _ = tiny_item(tmp_path / "a")
    unsure = tmp_path / "unsure.tif"  # built class everywhere, but never confidently
    dw = np.stack([np.full((20, 20), 30, np.uint8), np.full((20, 20), 6, np.uint8)])
    write_tif(unsure, dw, from_origin(300000, 5800000, 10, 10))
    with pytest.raises(TrainingDataError, match="no pixel has a usable weak label"):
        load_dynamic_world_scene(item, unsure)


def test_load_oscd_real_cities():
    root = shared_path("s2", "oscd")
    scenes = load_oscd(root, ["norcia"])
    assert [s.name for s in scenes] == ["oscd/norcia/date1", "oscd/norcia/date2"]
    assert {s.place for s in scenes} == {"oscd/norcia"}
    for s in scenes:
        assert s.lr.shape[0] == 3 and 300 < np.nanmean(s.lr) < 5000  # L1C DN
        assert (s.weak == 1).any() and (s.weak == 0).any()
    with pytest.raises(TrainingDataError, match="missing"):
        load_oscd(root, ["atlantis"])


# --- losses -----------------------------------------------------------------------------


def test_weak_loss_pushes_not_built_down_and_built_up_to_the_floor():
    weak = torch.tensor([[[0, 1, IGNORE]]], dtype=torch.uint8)
    logits = torch.zeros(1, 1, 10, 30, requires_grad=True)  # every 10 m mean is 0.5
    weak_loss(logits, None, weak, floor=0.3).backward()
    g = logits.grad[0, 0]
    assert (g[:, :10] > 0).all()  # not built: descent lowers the probability
    assert (g[:, 10:] == 0).all()  # built at 0.5 >= floor, and ignored: no push
    low = torch.full((1, 1, 10, 30), -3.0, requires_grad=True)  # mean 0.047 < floor
    weak_loss(low, None, weak, floor=0.3).backward()
    assert (low.grad[0, 0, :, 10:20] < 0).all()  # built below the floor: pushed up
    assert (low.grad[0, 0, :, 20:] == 0).all()


def test_weak_loss_is_the_clamped_formula_in_log_space_and_sharpness_holds_the_mask():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 20, 30, generator=g) * 2
    weak = torch.randint(0, 3, (2, 2, 3), generator=g).to(torch.uint8)
    weak[weak == 2] = IGNORE
    m = torch.sigmoid(logits)[:, 0].reshape(2, 2, 10, 3, 10).mean(dim=(2, 4))
    expected = torch.where(weak == 0, -torch.log1p(-m), 0.0)
    expected = expected + torch.where(weak == 1, torch.relu(math.log(0.4) - torch.log(m)), 0.0)
    expected = expected.sum() / (weak != IGNORE).sum()
    assert torch.allclose(weak_loss(logits, None, weak, floor=0.4), expected, rtol=1e-5)
    # a built-up pixel whose 1 m probabilities all sit at 0.45: its mean meets a floor of
    # 0.4, its 0/1 mask (everything below 0.5) holds no ISA; a sharp loss sees the latter
    soft = torch.full((1, 1, 10, 10), math.log(0.45 / 0.55), requires_grad=True)
    built = torch.tensor([[[1]]], dtype=torch.uint8)
    assert weak_loss(soft, None, built, floor=0.4) == 0
    sharp = weak_loss(soft, None, built, floor=0.4, sharpness=4)
    sharp.backward()
    assert sharp > 0 and (soft.grad < 0).all()
    # a confidently wrong not-built pixel still gets a gradient (no clamp to kill it)
    wrong = torch.full((1, 1, 10, 10), 12.0, requires_grad=True)
    weak_loss(wrong, None, torch.tensor([[[0]]], dtype=torch.uint8), 0.4, 4).backward()
    assert (wrong.grad > 0).all()


def test_hard_negatives_add_the_mean_of_the_worst_open_pixels():
    # four not built-up 10 m pixels, one of them called ISA (mean 0.95), and one built-up
    means = torch.tensor([0.01, 0.02, 0.03, 0.95, 0.5])
    logits = torch.logit(means).repeat_interleave(10).repeat(10, 1)[None, None]
    logits = logits.clone().requires_grad_(True)
    weak = torch.tensor([[[0, 0, 0, 0, 1]]], dtype=torch.uint8)
    plain = weak_loss(logits, None, weak, floor=0.4)
    hard = weak_loss(logits, None, weak, floor=0.4, hard_negatives=0.25)  # the worst 1 of 4
    assert torch.allclose(hard - plain, -torch.log1p(-means[3]), rtol=1e-4)
    hard.backward()
    grads = logits.grad[0, 0, 0, ::10]
    # the false ISA pixel gets most of the push; the built-up one (above its floor) none
    assert grads[3] > 5 * grads[:3].max() and grads[4] == 0
    none_open = torch.tensor([[[1, 1, 1, 1, 1]]], dtype=torch.uint8)
    assert weak_loss(logits, None, none_open, 0.4, hard_negatives=0.5) == weak_loss(
        logits, None, none_open, 0.4
    )


def test_prior_consistency_moves_the_1m_map_towards_the_fixed_prior():
    logits10 = torch.tensor([[[[3.0, -3.0]]]], requires_grad=True)  # prior: built, open
    logits = torch.zeros(1, 1, 10, 20, requires_grad=True)  # 1 m: 0.5 everywhere
    prior_consistency_loss(logits, logits10, sharpness=4).backward()
    assert logits10.grad is None or (logits10.grad == 0).all()  # the prior is the target
    assert (logits.grad[0, 0, :, :10] < 0).all() and (logits.grad[0, 0, :, 10:] > 0).all()
    agree = torch.cat([torch.full((1, 1, 10, 10), 3.0), torch.full((1, 1, 10, 10), -3.0)], -1)
    assert prior_consistency_loss(agree, logits10) < prior_consistency_loss(-agree, logits10)


def test_weak_loss_also_supervises_the_10m_prior():
    weak = torch.tensor([[[0, 1]]], dtype=torch.uint8)
    logits10 = torch.tensor([[[[0.0, -3.0]]]], requires_grad=True)
    weak_loss(torch.zeros(1, 1, 10, 20), logits10, weak, floor=0.3).backward()
    assert logits10.grad[0, 0, 0, 0] > 0 and logits10.grad[0, 0, 0, 1] < 0


def test_balanced_segmentation_loss_is_plain_bce_over_clean_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 6, 6, generator=g)
    label = torch.randint(0, 2, (2, 6, 6), generator=g).to(torch.uint8)
    label[0, 0] = 255  # ignored
    clean = label != 255
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 0][clean], label[clean].float()
    )
    got = segmentation_loss(logits, label, pos_weight=1.0, dice_weight=0.0)
    torch.testing.assert_close(got, bce)
    # the default weighs ISA twice and adds Dice: more loss for a model that misses ISA
    miss = torch.full_like(logits, -3.0)
    assert segmentation_loss(miss, label) > segmentation_loss(
        miss, label, pos_weight=1.0, dice_weight=0.0
    )


def test_fraction_loss_counts_only_fully_labelled_10m_pixels():
    label = torch.zeros(1, 10, 30, dtype=torch.uint8)
    label[0, :, :3] = 1  # pixel 0: 30 % ISA, all clean
    label[0, :, 10:12] = IGNORE  # pixel 1: partly ignored -> not counted
    label[0, :, 20:] = 2  # pixel 2: weak negatives -> not counted
    logits10 = torch.zeros(1, 1, 1, 3, requires_grad=True)
    fraction_loss(logits10, label).backward()
    g = logits10.grad[0, 0, 0]
    assert g[0] == pytest.approx(0.5 - 0.3)  # BCE gradient: sigmoid(0) - target
    assert g[1] == 0 and g[2] == 0


# --- the 10 m prior ---------------------------------------------------------------------


def test_prior_is_added_to_every_1m_pixel_of_its_10m_pixel():
    torch.manual_seed(0)
    net = JointSegNet.lite().eval()
    x = torch.rand(1, 3, 100, 100) * 2000 + 500
    with torch.no_grad():
        a = net(x, net.halo, sr=False)
        net.head10.out.bias += 2.0  # raise the prior everywhere by 2 logits
        b = net(x, net.halo, sr=False)
    assert a["logits10"].shape == (1, 1, 100 - 2 * net.halo, 100 - 2 * net.halo)
    assert a["sr"] is None
    torch.testing.assert_close(b["logits"] - a["logits"], torch.full_like(a["logits"], 2.0))
    torch.testing.assert_close(b["logits10"] - a["logits10"], torch.full_like(a["logits10"], 2.0))


def test_prior_alone_equals_the_prior_inside_the_whole_network():
    torch.manual_seed(1)
    net = JointSegNet.lite().eval()
    h = net.prior_halo
    x = torch.rand(2, 3, 30 + 2 * h, 30 + 2 * h) * 2000 + 300
    with torch.no_grad():
        alone = net.prior_logits(x, h)
        torch.testing.assert_close(alone, net(x, h, sr=False)["logits10"])
    assert alone.shape == (2, 1, 30, 30)
    with pytest.raises(ValueError, match="below the prior's halo"):
        net.prior_logits(x, h - 1)


def test_weights_without_a_prior_still_load():
    net = JointSegNet.lite(coarse_channels=0)
    assert net.head10 is None and net.config["coarse_channels"] == 0
    assert "logits10" not in net(torch.rand(1, 3, 12, 12) * 2000, 2)


# --- training ---------------------------------------------------------------------------


def stripes(name, seed):
    return aerial_stripes(name, name, seed)


def bright_is_built(name, seed, size=40):
    """A real-like 10 m scene: bright blocks are (weakly) built, dark ground is not."""
    rng = np.random.default_rng(seed)
    built = np.zeros((size, size), bool)
    for _ in range(5):
        y, x = rng.integers(0, size - 8, 2)
        built[y : y + 8, x : x + 8] = True
    lr = np.where(built, 2500, 600).astype(np.float32)[None].repeat(3, 0)
    lr += rng.normal(0, 50, lr.shape).astype(np.float32)
    weak = np.where(built, 1, 0).astype(np.uint8)
    return WeakScene(name, name, lr, weak, built_class=built.astype(np.uint8))


def real_cfg(**kw):
    return small_cfg(**{"batch_size": 2, "real_batch_size": 4, **kw})


def test_training_with_real_scenes_learns_to_rank_built_land(tmp_path):
    sim = [stripes(f"t{i}", i) for i in range(2)]
    real = [bright_is_built(f"r{i}", i) for i in range(3)]
    result = train(
        sim,
        [stripes("v", 9)],
        real_cfg(),
        tmp_path,
        real_train=real[:2],
        real_val=real[2:],
        progress=False,
    )
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("real_auc" in x and "selection" in x for x in lines)
    best = result["best"]
    assert best["real_auc"] > 0.9
    assert best["real_share_built"] > best["real_share_not_built"]
    assert best["selection"] == pytest.approx((best["macro_f1"] + best["real_auc"]) / 2)


def test_warm_start_loads_matching_layers_and_refuses_others(tmp_path):
    sim, val = [stripes("t", 0)], [stripes("v", 9)]
    first = train(sim, val, real_cfg(steps=10), tmp_path / "a", progress=False)
    start = tmp_path / "a" / "best.safetensors"
    import xjointseg

    before = xjointseg.load_model(start, device="cpu").network.state_dict()
    cfg = real_cfg(steps=10, init_from=str(start), lr=1e-12)  # (almost) no update
    train(sim, val, cfg, tmp_path / "b", progress=False)
    after = xjointseg.load_model(tmp_path / "b" / "best.safetensors", device="cpu")
    for k, v in before.items():
        torch.testing.assert_close(after.network.state_dict()[k], v, atol=1e-5, rtol=0)
    assert first["best"] is not None
    with pytest.raises(CheckpointError, match="holds a 'toy' network"):
        train(sim, val, real_cfg(arch="jointseg", init_from=str(start)), tmp_path / "c")


def test_simulation_cache_is_deterministic_and_reuses_versions():
    scene = stripes("s", 0)
    a, b = SimulationCache(2, True, seed=3), SimulationCache(2, True, seed=3)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(6):
        (la, ra), (lb, rb) = a.get(0, scene, rng_a), b.get(0, scene, rng_b)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ra["gain"], rb["gain"])
    assert len(a._made) <= 2  # never more simulations than versions


# --- ranking metric ---------------------------------------------------------------------


def test_roc_auc_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 300).astype(float)  # many ties
    ref = (rng.random(300) < 0.3 + 0.1 * score).astype(int)
    pos, neg = score[ref == 1], score[ref == 0]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert roc_auc(score, ref) == pytest.approx(pairs)
    assert roc_auc([1, 2], [255, 1]) != roc_auc([1, 2], [255, 1])  # one class only: NaN
    assert roc_auc([0.2, np.nan, 0.9], [0, 1, 1]) == 1.0  # NaN scores left out


# --- evaluation on real scenes ----------------------------------------------------------


def test_real_scores_on_an_oscd_city_with_change_labels():
    from xjointseg.testing import toy_model
    from xjointseg.training.evaluation import DW_CLASSES, real_scores

    root = shared_path("s2", "oscd")
    out = real_scores(toy_model(), root, ["bercy"], max_side=24)
    s = out["cities"]["bercy"]
    assert 0 <= s["auc"] <= 1 and out["pooled_auc"] == s["auc"] == out["min_auc"]
    assert 0 <= s["share_built"] <= 1 and 0 <= s["share_not_built"] <= 1
    for key in ("change_f1", "dw_change_f1", "new_isa_f1", "new_isa_precision"):
        assert key in s
    for key in ("new_isa", "change", "dw_change"):  # pooled over the one city
        assert out[f"pooled_{key}_f1"] == s[f"{key}_f1"] or np.isnan(s[f"{key}_f1"])
    assert 0 <= s["auc_probability"] <= 1 and "auc_prior" not in s  # the toy has no prior
    assert set(s["not_built_by_class"]) <= set(DW_CLASSES) and "built" not in s.get(
        "not_built_by_class", {}
    )
    assert all(0 <= v <= 1 for v in s["not_built_by_class"].values())


def test_open_land_classes_are_classes_of_the_havelland_land_use():
    """The open-land check reads classes by their name in the OSM extract: a name that is not
    there would silently drop out of it."""
    import geopandas as gpd

    from xjointseg.training.evaluation import OPEN_LAND

    gpkg = shared_path("s2", "havelland_T33UUU_20170216_L1C", "osm_landuse_water.gpkg")
    assert set(OPEN_LAND) <= set(gpd.read_file(gpkg)["fclass"])


# --- two dates of one place ---------------------------------------------------------------


def test_date_consistency_pulls_stable_shares_together_and_ignores_the_rest():
    from xjointseg.training.losses import date_consistency_loss

    a = torch.zeros(1, 1, 20, 20)
    b = torch.zeros(1, 1, 20, 20)
    b[..., :10, :10] = 4.0  # date b: one 10 m pixel far more ISA-like
    stable = torch.zeros(1, 2, 2, dtype=torch.bool)
    assert date_consistency_loss(a, b, stable).item() == 0.0  # changed land: no pull
    stable[0, 0, 0] = True
    loss = date_consistency_loss(a, b.requires_grad_(True), stable)
    share = torch.sigmoid(torch.tensor(4.0)) - 0.5
    assert loss.item() == pytest.approx(share.item() ** 2, rel=1e-5)
    loss.backward()
    assert b.grad[..., :10, :10].sum() > 0 and b.grad[..., 10:, :].abs().sum() == 0
    # the 10 m prior is held to the other date too
    prior = date_consistency_loss(
        None, None, stable, torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    )
    assert prior.item() == pytest.approx((torch.sigmoid(torch.tensor(1.0)) - 0.5).item() ** 2)


def test_date_pairs_share_windows_and_mark_land_stable_on_both_dates():
    from xjointseg.training.batches import date_pairs, sample_pair_batch

    one, other = bright_is_built("c/date1", 1), bright_is_built("c/date2", 1)
    other.weak[:20] = 1 - other.weak[:20]  # the north half changed its label
    one = WeakScene("c/date1", "c", one.lr, one.weak)
    other = WeakScene("c/date2", "c", other.lr, other.weak)
    alone = bright_is_built("d", 2)
    pairs = date_pairs([one, other, alone])
    assert pairs == [(one, other)]
    rng = np.random.default_rng(0)
    xa, xb, stable = sample_pair_batch(pairs, 2, np.zeros(3, np.float32), rng, 8, 6)
    assert xa.shape == xb.shape == (6, 3, 12, 12) and stable.shape == (6, 8, 8)
    assert torch.equal(xa, xb)  # same window, same flip: both dates hold the same image here
    assert stable.any() and not stable.all()


def test_training_with_the_date_term_runs_and_needs_pairs(tmp_path):
    sim = [stripes(f"t{i}", i) for i in range(2)]
    real = [bright_is_built(f"r{i}", i) for i in range(3)]
    with pytest.raises(TrainingDataError, match="two dates"):
        train(sim, [stripes("v", 9)], real_cfg(date_weight=1.0), tmp_path / "x", real_train=real)
    dated = [WeakScene(f"c/date{i}", "c", real[0].lr, real[0].weak) for i in (1, 2)]
    result = train(
        sim,
        [stripes("v", 9)],
        real_cfg(steps=10, date_weight=1.0),
        tmp_path / "y",
        real_train=dated,
        progress=False,
    )
    assert result["steps"] == 10


def test_wald_batches_are_real_crops_and_their_10x_degraded_copies():
    from xjointseg.training.batches import sample_wald_batch
    from xjointseg.training.simulate import degrade

    real = [bright_is_built(f"r{i}", i) for i in range(2)]
    fill = np.array([900.0, 800.0, 700.0], np.float32)
    rng = np.random.default_rng(0)
    x, target = sample_wald_batch(real, 20, 3, 4, fill, rng)
    assert x.shape == (3, 3, 2 + 8, 2 + 8) and target.shape == (3, 3, 20, 20)
    np.testing.assert_allclose(x[0, :, 4:-4, 4:-4], degrade(target[0].numpy()), rtol=1e-6)
    assert (x[0, :, 0, 0] == torch.from_numpy(fill)).all()  # context beyond the crop: fill
    with pytest.raises(TrainingDataError, match="Wald"):
        sample_wald_batch(real, 60, 1, 4, fill, rng)  # no scene holds a 60 px crop


def test_training_with_the_wald_term_calls_it_on_networks_with_an_sr_branch(tmp_path, monkeypatch):
    from xjointseg.training import trainer

    sim = [stripes(f"t{i}", i) for i in range(2)]
    real = [bright_is_built(f"r{i}", i) for i in range(2)]
    real_sample, calls = trainer.sample_wald_batch, []

    def counted(*args, **kw):
        calls.append(1)
        return real_sample(*args, **kw)

    monkeypatch.setattr(trainer, "sample_wald_batch", counted)
    cfg = real_cfg(steps=2, wald_weight=1.0, wald_crop=20, arch="jointseg", sr_warmup=0)
    result = train(sim, [stripes("v", 9)], cfg, tmp_path, real_train=real, progress=False)
    assert result["steps"] == 2 and len(calls) == 2
