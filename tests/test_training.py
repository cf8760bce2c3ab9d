"""The trainer: it learns, checkpoints, resumes, keeps the best weights, and refuses bad input."""

import json

import numpy as np
import pytest

from xjointseg.metrics import confusion, scores_from_counts
from xjointseg.training.datasets import IGNORE, WEAK_NEGATIVE, Scene, TrainingDataError
from xjointseg.training.trainer import CheckpointError, TrainConfig, train


def stripes(name, place, seed):
    """A learnable scene: bright stripes are ISA, dark ground is not."""
    rng = np.random.default_rng(seed)
    label = np.zeros((200, 200), np.uint8)
    for _ in range(4):
        c = int(rng.integers(20, 180))
        label[:, c - 8 : c + 8] = 1
    hr = np.where(label[..., None] == 1, 200, 60).astype(np.uint8).repeat(3, -1)
    hr = np.clip(hr + rng.normal(0, 8, hr.shape), 0, 255).astype(np.uint8)
    return Scene(name, place, label, hr=hr)


TRAIN = [stripes(f"t{i}", f"p{i}", i) for i in range(3)]
VAL = [stripes("v", "held-out", 9)]


def small_cfg(**kw):
    base = dict(
        arch="toy",
        steps=30,
        batch_size=4,
        crop=8,
        context=2,
        eval_every=10,
        sr_warmup=0,
        lr=1e-2,
        patience=10,
        seed=0,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def test_training_learns_and_writes_metrics_and_weights(tmp_path):
    result = train(TRAIN, VAL, small_cfg(), tmp_path, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30]
    assert result["best"]["f1"] > 0.8  # stripes are easy: a network that learns gets them
    assert (tmp_path / "best.safetensors").exists()
    import xjointseg

    model = xjointseg.load_model(tmp_path / "best.safetensors", device="cpu")
    assert model.metadata["training"]["steps"] == 30
    assert model.metadata["metrics"]["f1"] == result["best"]["f1"]
    # the weights carry the mask rule selection scored (the default: fraction)
    assert model.mask_rule.kind == "fraction"


def test_selection_scores_the_configured_mask_rule(tmp_path):
    from xjointseg import errors

    with pytest.raises(errors.OptionError, match="mask rule"):
        train(TRAIN, VAL, small_cfg(mask_rule="majority"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    result = train(TRAIN, VAL, small_cfg(steps=10, mask_rule="threshold"), tmp_path, progress=False)
    import xjointseg

    model = xjointseg.load_model(tmp_path / "best.safetensors", device="cpu")
    assert model.mask_rule.kind == "threshold"
    assert model.metadata["metrics"]["f1"] == result["best"]["f1"]


def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    from xjointseg.training import trainer

    clean = train(TRAIN, VAL, small_cfg(), tmp_path / "clean", progress=False)
    real_sample, calls = trainer.sample_batch, []

    def crash_at_step_15(*args, **kw):
        calls.append(1)
        if len(calls) == 15:
            raise KeyboardInterrupt  # Ctrl-C mid-training
        return real_sample(*args, **kw)

    monkeypatch.setattr(trainer, "sample_batch", crash_at_step_15)
    with pytest.raises(KeyboardInterrupt):
        train(TRAIN, VAL, small_cfg(), tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer, "sample_batch", real_sample)
    resumed = train(TRAIN, VAL, small_cfg(), tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [10, 20, 30]  # lost steps 11-14 redone
    assert resumed["best"]["f1"] == clean["best"]["f1"]
    assert resumed["best"]["macro_f1"] == clean["best"]["macro_f1"]


def test_crash_between_evaluation_and_checkpoint_leaves_no_duplicate_metrics(tmp_path, monkeypatch):
    from xjointseg.training import trainer

    real_checkpoint, calls = trainer.save_checkpoint, []

    def crash_at_second_checkpoint(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # step 20 evaluated (and its best weights saved), not checkpointed
            raise KeyboardInterrupt
        return real_checkpoint(*args, **kw)

    monkeypatch.setattr(trainer, "save_checkpoint", crash_at_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(TRAIN, VAL, small_cfg(), tmp_path, progress=False)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10]  # the metrics never run ahead of the checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", real_checkpoint)
    train(TRAIN, VAL, small_cfg(), tmp_path, progress=False)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]  # step 20 evaluated again, once


def test_a_checkpoint_of_an_earlier_version_keeps_its_metrics_up_to_its_step(tmp_path):
    import torch

    train(TRAIN, VAL, small_cfg(steps=20), tmp_path, progress=False)
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del blob["state"]["history"]  # as written before checkpoints held the evaluations
    torch.save(blob, tmp_path / "checkpoint.pt")
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 25, "f1": 0.0}) + "\n")  # an evaluation it never saw
    train(TRAIN, VAL, small_cfg(steps=30), tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]


@pytest.mark.parametrize("name", ["metrics.jsonl", "best.safetensors"])
def test_a_fresh_run_refuses_the_outputs_of_another(tmp_path, name):
    from xjointseg.errors import OutputExistsError

    (tmp_path / name).write_bytes(b"another run's")
    with pytest.raises(OutputExistsError, match="another output folder"):
        train(TRAIN, VAL, small_cfg(steps=10), tmp_path, progress=False)
    assert (tmp_path / name).read_bytes() == b"another run's"
    assert not (tmp_path / "checkpoint.pt").exists()


def test_same_seed_same_result(tmp_path):
    a = train(TRAIN, VAL, small_cfg(steps=10), tmp_path / "a", progress=False)
    b = train(TRAIN, VAL, small_cfg(steps=10), tmp_path / "b", progress=False)
    assert a["best"]["f1"] == b["best"]["f1"]


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    train(TRAIN, VAL, small_cfg(steps=10), tmp_path, progress=False)
    blob = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "checkpoint.pt").write_bytes(blob)
    from xjointseg.models import architectures
    from xjointseg.models.toy import ToyNet

    class OtherNet(ToyNet):
        arch = "other"

    architectures.ARCHITECTURES["other"] = OtherNet
    architectures.CONFIGS["other"] = {"lite": {"depth": 3}}
    try:
        with pytest.raises(CheckpointError, match="architecture"):
            train(TRAIN, VAL, small_cfg(arch="other"), tmp_path / "other", progress=False)
    finally:
        del architectures.ARCHITECTURES["other"], architectures.CONFIGS["other"]


def test_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        train(TRAIN, VAL, small_cfg(steps=10), tmp_path, progress=False)


def test_empty_sets_are_refused(tmp_path):
    with pytest.raises(TrainingDataError, match="empty"):
        train([], VAL, small_cfg(), tmp_path, progress=False)
    with pytest.raises(TrainingDataError, match="empty"):
        train(TRAIN, [], small_cfg(), tmp_path, progress=False)


def test_scores_match_hand_counts():
    pred = np.array([1, 1, 0, 0, 1, 0], np.uint8)
    label = np.array([1, 0, 1, 0, 255, 2], np.uint8)
    c = confusion(pred, label, ignore=(WEAK_NEGATIVE, IGNORE))  # as the trainer scores
    assert c == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}  # weak (2) and ignored (255): not scored
    s = scores_from_counts(c)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["macro_f1"] == 0.5 and s["iou"] == pytest.approx(1 / 3)


def test_adversarial_term_trains_generator_and_discriminator_after_warmup(tmp_path, monkeypatch):
    import torch

    from xjointseg.training import trainer

    calls = {"gen": 0, "disc": 0}
    gen_loss, disc_loss = trainer.generator_adversarial_loss, trainer.discriminator_loss

    def counted_gen(*args):
        calls["gen"] += 1
        return gen_loss(*args)

    def counted_disc(disc, *args):
        calls["disc"] += 1
        before = [p.detach().clone() for p in disc.parameters()]
        loss = disc_loss(disc, *args)
        assert torch.isfinite(loss)
        counted_disc.before = before
        counted_disc.disc = disc
        return loss

    monkeypatch.setattr(trainer, "generator_adversarial_loss", counted_gen)
    monkeypatch.setattr(trainer, "discriminator_loss", counted_disc)
    cfg = small_cfg(arch="jointseg", steps=4, batch_size=2, crop=4, sr_warmup=2, adv_weight=0.1)
    train(TRAIN, VAL, cfg, tmp_path, progress=False)
    assert calls == {"gen": 2, "disc": 2}  # steps 3 and 4, after the 2 warm-up steps
    after = list(counted_disc.disc.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, counted_disc.before, strict=True))
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert blob["disc"] is not None and blob["disc_opt"] is not None


def test_placement_loss_ranks_inside_cells_and_ignores_their_share():
    import torch

    from xjointseg.training.losses import placement_loss

    rng = np.random.default_rng(3)
    label = torch.from_numpy((rng.random((2, 20, 20)) < 0.4).astype(np.uint8))
    right = label[:, None].float() * 2 - 1  # ISA pixels above the others in every cell
    assert placement_loss(right * 3, label) < placement_loss(-right * 3, label)
    # a constant per 10 m pixel (its share) changes neither the loss nor the ranking
    logits = torch.from_numpy(rng.normal(size=(2, 1, 20, 20)).astype(np.float32))
    logits.requires_grad_(True)
    shift = torch.from_numpy(np.kron(rng.normal(size=(2, 1, 2, 2)), np.ones((10, 10))))
    assert placement_loss(logits + shift.float(), label).item() == pytest.approx(
        placement_loss(logits, label).item(), rel=1e-5
    )
    placement_loss(logits, label).backward()
    per_cell = logits.grad[:, 0].reshape(2, 2, 10, 2, 10).sum(dim=(2, 4))
    assert torch.allclose(per_cell, torch.zeros_like(per_cell), atol=1e-6)
    # ignored labels or a cell without a mix leave nothing to rank: zero, with a graph
    ignored = torch.full((2, 20, 20), IGNORE, dtype=torch.uint8)
    zero = placement_loss(logits, ignored)
    assert zero.item() == 0.0 and zero.requires_grad


def test_skeleton_recall_counts_a_thin_road_per_metre_not_per_area():
    import torch

    from xjointseg.training.losses import skeleton_recall_loss, soft_skeleton

    label = torch.zeros((1, 40, 60), dtype=torch.uint8)
    label[0, 17:24, 5:55] = 1  # a road 7 px wide
    skeleton = soft_skeleton((label == 1).float())
    # thinned to its centreline: one pixel wide, along the road's middle row
    assert (skeleton[0].sum(dim=0)[10:50] == 1).all() and (skeleton[0, 20, 10:50] == 1).all()
    roof = torch.zeros((1, 40, 60))
    roof[0, 5:35, 15:45] = 1  # 30 x 30: too wide to thin in 10 erosions, no centreline
    assert soft_skeleton(roof)[0, 10:30, 20:40].sum() == 0
    # the road found along its centre (3 px of its 7) scores far better than a map that
    # covers more of its area but not the middle
    middle = torch.full((1, 1, 40, 60), -6.0)
    middle[0, 0, 19:22, 5:55] = 6.0
    edges = torch.full((1, 1, 40, 60), -6.0)
    edges[0, 0, 17:19, 5:55] = edges[0, 0, 22:24, 5:55] = 6.0
    assert skeleton_recall_loss(middle, label) < 0.01 < 0.99 < skeleton_recall_loss(edges, label)
    logits = torch.zeros((1, 1, 40, 60), requires_grad=True)
    skeleton_recall_loss(logits, label).backward()
    assert (logits.grad[0, 0, 20, 10:50] < 0).all() and logits.grad[0, 0, 5].abs().sum() == 0
    # no ISA (or only ignored pixels): zero, with a graph
    empty = skeleton_recall_loss(logits, torch.full((1, 40, 60), IGNORE, dtype=torch.uint8))
    assert empty.item() == 0.0 and empty.requires_grad


def test_train_only_freezes_every_other_layer(tmp_path):
    import xjointseg
    from xjointseg.models.weights import read_weights

    train(TRAIN, VAL, small_cfg(steps=10), tmp_path / "start", progress=False)
    start = tmp_path / "start" / "best.safetensors"
    cfg = small_cfg(
        steps=10,
        init_from=str(start),
        train_only=["head."],
        placement_weight=1.0,
        skeleton_weight=1.0,
    )
    result = train(TRAIN, VAL, cfg, tmp_path / "head", progress=False)
    before = read_weights(start).tensors
    after = read_weights(tmp_path / "head" / "best.safetensors")
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after.tensors[k].numpy())}
    assert changed and all(k.startswith("head.") for k in changed)
    # validation reports the placement skill next to its smooth baseline
    assert {"placement_auc", "placement_auc_smooth"} <= set(result["best"])
    assert xjointseg.load_model(tmp_path / "head" / "best.safetensors").metadata["training"][
        "train_only"
    ] == ["head."]
    with pytest.raises(TrainingDataError, match="names no layer.*body"):
        train(TRAIN, VAL, small_cfg(train_only=["trunk."]), tmp_path / "none", progress=False)


def _labelled(place, isa_pixels):
    label = np.full((20, 20), IGNORE, np.uint8)
    label.flat[:isa_pixels] = 1
    return Scene(place, place, label)


def test_source_shares_fix_each_sources_part_of_the_crops():
    from xjointseg.training.batches import scene_weights

    # dubai labels 300 + 100 pixels, massachusetts 10 + 30: by supervision it gets 40 / 440
    scenes = [_labelled("dubai/a", 300), _labelled("dubai/b", 100)]
    scenes += [_labelled("massachusetts/x", 10), _labelled("massachusetts/y", 30)]
    assert scene_weights(scenes, 0.1)[2:].sum() == pytest.approx(40 / 440)
    w = scene_weights(scenes, 0.1, {"massachusetts": 0.5})
    assert w.sum() == pytest.approx(1) and w[2:].sum() == pytest.approx(0.5)
    assert w[0] / w[1] == pytest.approx(3) and w[3] / w[2] == pytest.approx(3)  # kept inside
    w = scene_weights(scenes, 0.1, {"massachusetts": 0.25, "dubai": 0.75})
    assert w[:2].sum() == pytest.approx(0.75)
    for shares, why in [
        ({"paris": 0.5}, "no training scene comes from"),
        ({"dubai": 0.5, "massachusetts": 0.4}, "name every source.*sum to 1"),
        ({"dubai": 0.7, "massachusetts": 0.7}, "sum to at most 1"),
        ({"dubai": 0.0}, r"in \(0, 1\]"),
        ({"dubai": 1.0}, "leave nothing for.*massachusetts"),
    ]:
        with pytest.raises(TrainingDataError, match=why):
            scene_weights(scenes, 0.1, shares)


def test_training_draws_crops_by_source_share_and_records_it(tmp_path):
    import xjointseg

    scenes = [stripes("a", "big/a", 1), stripes("b", "big/b", 2), stripes("c", "small/c", 3)]
    cfg = small_cfg(steps=2, eval_every=2, source_shares={"small": 0.5})
    train(scenes, VAL, cfg, tmp_path / "run", progress=False)
    model = xjointseg.load_model(tmp_path / "run" / "best.safetensors", device="cpu")
    assert model.metadata["training"]["source_shares"] == {"small": 0.5}
    with pytest.raises(TrainingDataError, match="no training scene comes from"):
        train(scenes, VAL, small_cfg(source_shares={"nope": 0.5}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before any output


def test_anchor_loss_is_zero_where_student_and_teacher_agree():
    import torch

    from xjointseg.training.losses import anchor_loss

    teacher = torch.tensor([[-4.0, 0.0, 3.0]])
    assert anchor_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    loss = anchor_loss(student, teacher)
    assert loss.item() > 0.1
    loss.backward()
    # a gradient step moves each logit towards the teacher's; where they agree, nowhere
    step = -student.grad[0]
    assert step[0] < 0 and step[2] > 0 and step[1] == 0


def _grey(name, place, isa=0):
    """A scene unlike the stripes (uniform mid grey), labelled ``isa`` everywhere."""
    label = np.full((200, 200), isa, np.uint8)
    return Scene(name, place, label, hr=np.full((200, 200, 3), 130, np.uint8))


def _grey_probability(path):
    """The mean ISA probability a weights file gives the simulated grey scene."""
    import torch

    import xjointseg
    from xjointseg.training.simulate import simulate_sentinel2

    net = xjointseg.load_model(path, device="cpu").network
    lr = simulate_sentinel2(_grey("g", "g").hr[:120, :120], augment=False)
    x = torch.from_numpy(np.ascontiguousarray(lr, np.float32))[None]
    with torch.no_grad():
        return torch.sigmoid(net(x, 2)["logits"]).mean().item()


def test_anchor_sources_hold_the_start_on_their_crops_and_never_read_their_labels(tmp_path):
    import xjointseg
    from xjointseg.models.weights import read_weights

    train(TRAIN, VAL, small_cfg(steps=10), tmp_path / "start", progress=False)
    start = str(tmp_path / "start" / "best.safetensors")
    stripes_ = [stripes(f"s{i}", f"stripes/{i}", i) for i in range(2)]
    cfg = dict(steps=20, eval_every=20, patience=1, init_from=start, anchor_sources=["grey"])

    def run(name, weight, isa=0):
        scenes = [*stripes_, _grey("g", "grey/g", isa)]
        train(scenes, VAL, small_cfg(**cfg, anchor_weight=weight), tmp_path / name, progress=False)
        return tmp_path / name / "best.safetensors"

    # the same crops in both runs: the stripes move grey away from the start, the anchor
    # holds it there in proportion to its weight
    before = _grey_probability(start)
    loose = abs(_grey_probability(run("loose", 0.01)) - before)
    held = abs(_grey_probability(run("held", 50.0)) - before)
    assert loose > 0.03 and held < loose / 3
    # the grey scenes' labels are never read: other labels, the same weights
    other = read_weights(run("other", 50.0, isa=1)).tensors
    same = read_weights(tmp_path / "held" / "best.safetensors").tensors
    assert all(np.array_equal(same[k].numpy(), other[k].numpy()) for k in same)
    meta = xjointseg.load_model(tmp_path / "held" / "best.safetensors").metadata["training"]
    assert meta["anchor_sources"] == ["grey"] and meta["anchor_weight"] == 50.0


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (dict(anchor_sources=["grey"], anchor_weight=1.0), "give init_from"),
        (dict(anchor_sources=["grey"]), "go together"),
        (dict(anchor_weight=1.0), "go together"),
        (dict(anchor_sources=["paris"], anchor_weight=1.0, init_from="x"), "no training scene"),
        (dict(anchor_sources=["grey", "stripes"], anchor_weight=1.0, init_from="x"), "every"),
    ],
)
def test_anchor_options_that_cannot_work_are_refused_before_any_output(tmp_path, options, why):
    scenes = [stripes("s", "stripes/0", 0), _grey("g", "grey/g")]
    with pytest.raises(TrainingDataError, match=why):
        train(scenes, VAL, small_cfg(**options), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
