"""Weights files, load_model, the process cache, and Model.predict's contract."""

import hashlib
import json
import os
import pickle
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import xjointseg
from xjointseg import errors
from xjointseg.models import load_model, save_model
from xjointseg.models.model import ModelRef, registered_models
from xjointseg.models.toy import ToyNet
from xjointseg.testing import toy_weights

BANDS = ("B04", "B03", "B02")


def test_save_load_round_trip_is_bit_exact(tmp_path):
    net = ToyNet(in_bands=3, depth=2, seed=5)
    path = tmp_path / "w.safetensors"
    digest = save_model(net, path, name="mine", bands=BANDS, extra={"training": {"data": "none"}})
    model = load_model(path, device="cpu")
    assert model.sha256 == digest and model.name == "mine" and model.bands == BANDS
    assert model.metadata["training"] == {"data": "none"}
    assert model.metadata["library_version"] == xjointseg.__version__
    for key, value in net.state_dict().items():
        assert torch.equal(model.network.state_dict()[key].contiguous(), value)
    x = np.random.default_rng(0).uniform(0, 3000, (2, 3, 12, 12)).astype(np.float32)
    # predict() feeds the CPU network channels-last, whose convolutions round differently
    # from the default layout, one tile at a time on one torch thread: the expectation is
    # computed the same way
    t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            tiles = [net.eval()(t[i : i + 1], 2)["logits"][:, 0] for i in range(len(t))]
            expect = torch.sigmoid(torch.cat(tiles)).numpy()
    finally:
        torch.set_num_threads(threads)
    got = model.predict(x, output="probability", margin=2, precision="fp32")
    np.testing.assert_array_equal(got, expect)


def test_loading_never_unpickles(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors")
    assert not path.read_bytes().startswith(b"\x80")  # a pickle stream would start so
    with pytest.raises(errors.WeightsError, match="not an xjointseg weights file"):
        bad = tmp_path / "pickled.safetensors"
        bad.write_bytes(pickle.dumps({"w": torch.zeros(2)}))
        load_model(bad)


def test_corrupt_file(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors")
    data = bytearray(path.read_bytes())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(errors.WeightsError):
        load_model(truncated)


def test_checksum_mismatch(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors")
    with pytest.raises(errors.WeightsError, match="checksum mismatch"):
        load_model(path, sha256="0" * 64)


def _write_with_metadata(path, tensors, meta):
    path.write_bytes(st_save(tensors, metadata={"xjointseg": json.dumps(meta)}))


def test_weights_of_another_config(tmp_path):
    net = ToyNet(in_bands=3, depth=2)
    meta = {"arch": "toy", "config": {**net.config, "depth": 3}, "name": "x", "bands": list(BANDS)}
    _write_with_metadata(tmp_path / "w.safetensors", net.state_dict(), meta)
    with pytest.raises(errors.WeightsError, match="do not match architecture"):
        load_model(tmp_path / "w.safetensors")


def test_weights_of_unknown_architecture(tmp_path):
    net = ToyNet(in_bands=3)
    meta = {"arch": "unet9000", "config": {}, "name": "x", "bands": list(BANDS)}
    _write_with_metadata(tmp_path / "w.safetensors", net.state_dict(), meta)
    with pytest.raises(errors.WeightsError, match="unknown to this xjointseg"):
        load_model(tmp_path / "w.safetensors")


def test_unknown_name():
    with pytest.raises(errors.UnknownModelError, match="unknown model 'nope'"):
        load_model("nope")


def test_url_needs_checksum_and_is_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("XJOINTSEG_CACHE", str(tmp_path / "cache"))
    path = toy_weights(tmp_path / "w.safetensors", seed=11)
    url = path.resolve().as_uri()
    with pytest.raises(errors.WeightsError, match="needs its checksum"):
        load_model(url)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # not loaded: no cache hit
    model = load_model(f"{url}#sha256={digest}", device="cpu")
    assert model.sha256 == digest
    assert (tmp_path / "cache" / f"{digest}.safetensors").exists()
    with pytest.raises(errors.WeightsError, match="checksum mismatch"):
        load_model(url, sha256="f" * 64)


def test_a_failed_download_says_why_and_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XJOINTSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(errors.WeightsError, match="cannot download.*Protocol not known"):
        load_model("nosuch://host/w.safetensors", sha256="a" * 64)
    missing = (tmp_path / "absent.safetensors").resolve().as_uri()
    with pytest.raises(errors.WeightsError, match="cannot download"):
        load_model(missing, sha256="a" * 64)
    assert not list((tmp_path / "cache").iterdir())


def test_cache_returns_one_model_per_checksum_and_device(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors", seed=3)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    results = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(load_model(p, device="cpu")))
        for p in [path, copy] * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in results}) == 1


def test_model_ref_is_small_and_reloads(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors", seed=4)
    model = load_model(path, device="cpu")
    blob = pickle.dumps(model.ref())
    assert len(blob) < 500
    assert pickle.loads(blob).load() is model


def test_in_memory_model_ref_cannot_travel():
    from xjointseg.testing import toy_model

    ref = pickle.loads(pickle.dumps(toy_model().ref()))
    with pytest.raises(errors.UnknownModelError, match="save it"):
        ref.load()
    assert isinstance(ref, ModelRef)


@pytest.mark.parametrize(
    "batch,match",
    [
        (np.zeros((1, 3, 8, 8), np.float64), "float32"),
        (np.zeros((1, 4, 8, 8), np.float32), "shape"),
        (np.zeros((3, 8, 8), np.float32), "shape"),
        ([[[[0.0]]]], "float32"),
    ],
)
def test_predict_rejects_bad_batches(batch, match):
    from xjointseg.testing import toy_model

    with pytest.raises(errors.PredictInputError, match=match):
        toy_model().predict(batch)


def test_registry_lists_files_with_checksums():
    for name, entry in registered_models().items():
        assert set(entry) >= {"file", "sha256", "arch"}, name


def test_builtin_name_without_bundled_weights_says_how_to_get_them(monkeypatch):
    from xjointseg.models import model as model_module

    monkeypatch.setattr(model_module, "registered_models", lambda: {})
    with pytest.raises(errors.UnknownModelError, match="xjointseg train --arch jointseg"):
        load_model("jointseg")


# --- the process cache comes before the file ------------------------------------------


def test_cached_model_loads_without_touching_the_file(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors", seed=21)
    model = load_model(path, device="cpu")
    path.unlink()  # the file is gone: only the cache can answer now
    ref = ModelRef(source=str(path), sha256=model.sha256, device="cpu")
    assert pickle.loads(pickle.dumps(ref)).load() is model
    assert load_model(path, device="cpu", sha256=model.sha256.upper()) is model
    # without a checksum a path that no longer exists means nothing: no stale answer
    with pytest.raises(errors.UnknownModelError):
        load_model(path, device="cpu")


def test_cache_hits_neither_read_nor_hash(tmp_path, monkeypatch):
    from xjointseg.models import model as model_module

    path = toy_weights(tmp_path / "w.safetensors", seed=22)
    first = {name: load_model(name, device="cpu") for name in (str(path), "jointseg")}

    def no_reading(*args, **kwargs):
        raise AssertionError("the weights file was read again")

    monkeypatch.setattr(model_module, "read_weights", no_reading)
    assert load_model("jointseg", device="cpu") is first["jointseg"]  # sha256 from the registry
    assert load_model(path, device="cpu") is first[str(path)]  # the same file, already hashed
    ref = ModelRef(str(path), first[str(path)].sha256, "cpu")
    assert ref.load() is first[str(path)]


def test_a_rewritten_file_is_read_again(tmp_path):
    path = toy_weights(tmp_path / "w.safetensors", seed=23)
    old = load_model(path, device="cpu")
    toy_weights(tmp_path / "w.safetensors", seed=24)  # other weights under the same name
    new = load_model(path, device="cpu")
    assert new is not old and new.sha256 != old.sha256
    with pytest.raises(errors.WeightsError, match="checksum mismatch"):
        load_model(path, device="cpu", sha256="1" * 64)


# --- precision ------------------------------------------------------------------------


def test_auto_precision_is_fp32_on_every_cpu(monkeypatch):
    # bf16 on a CPU depends on the thread count: auto stays fp32 even where it is native
    from xjointseg import _system
    from xjointseg.models import model as model_module
    from xjointseg.testing import toy_model

    m = toy_model()
    monkeypatch.setattr(_system, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(model_module, "cpu_has_bf16", lambda: True, raising=False)
    assert m.resolve_precision() == "fp32" and m.resolve_precision("bf16") == "bf16"
    assert m.resolve_precision("auto") == "fp32" and m.resolve_precision("fp32") == "fp32"
    with pytest.raises(errors.OptionError, match="precision"):
        m.resolve_precision("fp16")
    with pytest.raises(errors.OptionError, match="precision"):
        m.predict(np.zeros((1, 3, 8, 8), np.float32), precision="half")


def test_bf16_changes_probabilities_only_by_rounding():
    from xjointseg.testing import toy_model

    m = toy_model(depth=3)
    x = np.random.default_rng(1).uniform(200, 3000, (2, 3, 24, 24)).astype(np.float32)
    p32 = m.predict(x, output="probability", margin=4, precision="fp32")
    p16 = m.predict(x, output="probability", margin=4, precision="bf16")
    assert not np.array_equal(p32, p16)  # bf16 really ran
    diff = np.abs(p16 - p32)
    assert diff.mean() < 0.01 and diff.max() < 0.1  # bf16 keeps 8 bits of mantissa
    again = m.predict(x, output="probability", margin=4, precision="bf16")
    np.testing.assert_array_equal(again, p16)  # and is deterministic


def test_the_cpu_flag_is_read_in_one_place():
    from xjointseg import _system
    from xjointseg.training import trainer

    assert trainer._cpu_has_bf16 is _system.cpu_has_bf16
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert _system.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


# --- activation footprint -------------------------------------------------------------


def test_activation_bytes_are_measured_per_tile():
    from xjointseg.models.jointseg import JointSegNet

    m = xjointseg.Model.from_network(JointSegNet.lite(), name="lite", bands=BANDS)
    small, large = m.activation_bytes(64), m.activation_bytes(128)
    assert 3 < large / small < 4.5  # the area of the tile, plus its halo
    # at least the 1 m logits and the 1 m features of one layer must be alive at once
    assert large > (1280 * 1280) * 4 * 2
    toy = xjointseg.Model.from_network(ToyNet(in_bands=3), name="t", bands=BANDS)
    assert toy.activation_bytes(128) < large / 5  # a tiny network needs far less


def test_mask_is_the_probability_at_the_models_threshold(tmp_path):
    rng = np.random.default_rng(0)
    batch = rng.uniform(300, 3000, (2, 3, 24, 24)).astype(np.float32)
    net = ToyNet(in_bands=3)
    save_model(net, tmp_path / "plain.safetensors", name="t", bands=("B04", "B03", "B02"))
    extra = {"threshold": 0.7}
    save_model(net, tmp_path / "t.safetensors", name="t", bands=("B04", "B03", "B02"), extra=extra)
    plain = load_model(str(tmp_path / "plain.safetensors"), device="cpu")
    strict = load_model(str(tmp_path / "t.safetensors"), device="cpu")
    assert plain.threshold == 0.5 and strict.threshold == 0.7
    prob = strict.predict(batch, output="probability", margin=2, precision="fp32")
    for model, t in ((plain, 0.5), (strict, 0.7)):
        mask = model.predict(batch, output="mask", margin=2, precision="fp32")
        near = np.abs(prob - t) < 1e-6  # float rounding at the boundary itself
        assert np.array_equal(mask[~near], (prob >= t)[~near])
    assert strict.predict(batch, margin=2).sum() < plain.predict(batch, margin=2).sum()
