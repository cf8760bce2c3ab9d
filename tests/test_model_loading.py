"""Weights files, load_model, the process cache, and Model.predict's contract."""

import json
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
    with torch.inference_mode():
        expect = net.eval()(torch.from_numpy(x), 2)["logits"][:, 0].numpy()
    got = model.predict(x, output="probability", margin=2)
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-expect)), rtol=1e-6, atol=1e-7)


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
    digest = load_model(path).sha256
    model = load_model(f"{url}#sha256={digest}", device="cpu")
    assert model.sha256 == digest
    assert (tmp_path / "cache" / f"{digest}.safetensors").exists()
    with pytest.raises(errors.WeightsError, match="checksum mismatch"):
        load_model(url, sha256="f" * 64)


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
