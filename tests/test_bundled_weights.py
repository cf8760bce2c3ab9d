"""The weights shipped in the package: what the registry says about them holds.

The validation scores in the registry are recomputed from the bundled files (the simulated
validation place and the real validation windows), the default model is checked on a real
Sentinel-2 city it never saw against Dynamic World, and on the real Havelland scene against
OpenStreetMap land use.
"""

import warnings

import numpy as np
import pytest
from conftest import shared_path

import xjointseg
from xjointseg.models import registered_models
from xjointseg.training.splits import DUBAI_SPLITS, OSCD_SPLITS

SHIPPED = ("jointseg", "bilinear")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_by_name(name):
    entry = registered_models()[name]
    model = xjointseg.load_model(name, device="cpu")
    assert model.sha256 == entry["sha256"]
    assert model.network.arch == entry["arch"] == name
    assert model.bands == ("B04", "B03", "B02") and model.scale == 10 and model.halo == 39
    assert model.metadata["metrics"] == entry["validation"]


def test_default_weights_never_saw_a_test_place():
    training = xjointseg.load_model("jointseg", device="cpu").metadata["training"]
    assert training["val_places"] == DUBAI_SPLITS["val"]
    assert training["real_places"] == OSCD_SPLITS["train"]
    assert training["real_val_places"] == OSCD_SPLITS["val"]
    assert not set(training["real_places"] + training["real_val_places"]) & set(OSCD_SPLITS["test"])
    assert not set(training["val_places"]) & set(DUBAI_SPLITS["test"])


def test_registered_validation_scores_are_reproduced():
    """The default model's recorded validation scores, recomputed from the shipped file: the
    simulated validation place and the real validation windows."""
    from xjointseg.training import evaluate, load_dubai, load_oscd, split_by_place
    from xjointseg.training.validation import (
        evaluate_real,
        real_validation_windows,
        validation_inputs,
    )

    recorded = registered_models()["jointseg"]["validation"]
    model = xjointseg.load_model("jointseg", device="cpu")
    net, rule = model.network, model.mask_rule
    _, val = split_by_place(load_dubai(shared_path("hr", "dubai")), DUBAI_SPLITS["val"])
    scores = evaluate(net, validation_inputs(val), context=net.halo, rule=rule)
    for key in ("f1", "precision", "recall", "macro_f1"):
        assert scores[key] == pytest.approx(recorded[key], abs=5e-3), key
    real = load_oscd(shared_path("s2", "oscd"), OSCD_SPLITS["val"])
    real_scores = evaluate_real(net, real_validation_windows(real, net.halo), net.halo, rule)
    assert real_scores["real_auc"] == pytest.approx(recorded["real_auc"], abs=5e-3)
    # the SR branch beats plain up-sampling on a place it never trained on
    assert scores["psnr_model"] > scores["psnr_bilinear"]


def test_baseline_scores_are_reproduced_with_its_own_radiometry():
    """The baseline was trained and scored before the simulator was calibrated: its recorded
    scores hold on the simulation it was scored with (recorded beside them)."""
    from xjointseg.training import evaluate, load_dubai, split_by_place
    from xjointseg.training.validation import validation_inputs

    entry = registered_models()["bilinear"]
    model = xjointseg.load_model("bilinear", device="cpu")
    training = model.metadata["training"]
    _, val = split_by_place(load_dubai(shared_path("hr", "dubai")), training["val_places"])
    inputs = validation_inputs(val, **entry["validation_radiometry"])
    scores = evaluate(model.network, inputs, context=training["context"])
    for key in ("f1", "precision", "recall", "macro_f1"):
        assert scores[key] == pytest.approx(entry["validation"][key], abs=2e-3), key


def test_default_model_ranks_built_land_in_an_unseen_city():
    """On the centre of a held-out OSCD city (both dates, real L1C), the 10 m share of the
    1 m map ranks Dynamic World's built class above the rest, and confidently built pixels
    hold far more ISA than confidently open ones."""
    from xjointseg.training.evaluation import real_scores

    out = real_scores("jointseg", shared_path("s2", "oscd"), ["pisa"], max_side=96)
    s = out["cities"]["pisa"]
    assert s["auc"] > 0.8, s
    assert s["share_built"] > 4 * s["share_not_built"], s
    assert s["auc_prior"] > 0.8 and s["auc_probability"] > 0.8, s  # the diagnostics


def test_demo_with_the_default_model_follows_land_use(tmp_path):
    """`xjointseg demo` with no --model runs the shipped jointseg; on the real Havelland scene
    it finds ISA inside residential areas, and much less in forest, meadow or water."""
    import geopandas as gpd
    from rasterio.features import rasterize

    from xjointseg.cli import main

    polygons = gpd.read_file(
        shared_path("s2", "havelland_T33UUU_20170216_L1C", "osm_landuse_water.gpkg")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # L1C: no SCL band, said once per load
        assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    cube = xjointseg.open_cube(tmp_path / "isa.zarr")
    assert cube.attrs["model"] == "jointseg"
    assert cube.attrs["model_sha256"] == registered_models()["jointseg"]["sha256"]
    values = cube.isel(time=0).values
    geobox = cube.odc.geobox
    share = {}
    for fclass in ("residential", "forest", "meadow", "water"):
        shapes = polygons.to_crs(cube.odc.crs).query("fclass == @fclass").geometry
        inside = rasterize(shapes, out_shape=geobox.shape, transform=geobox.transform) == 1
        inside &= values != 255
        assert inside.sum() > 40_000, fclass  # each class covers > 4 ha of the crop
        share[fclass] = float(np.mean(values[inside] == 1))
    assert share["residential"] > 0.25, share
    for other in ("forest", "meadow", "water"):  # ISA concentrates where people live
        assert share[other] < share["residential"] / 4, share


def test_registered_placement_is_reproduced_and_shown():
    """Model.placement (the registry's within-pixel AUC of the shipped weights on the Dubai
    test places) holds when recomputed from the bundled file, and captions say it."""
    from xjointseg.models.model import placement_note
    from xjointseg.training.evaluation import aerial_scores

    model = xjointseg.load_model("jointseg", device="cpu")
    recorded = model.placement
    assert recorded is not None and recorded["places"] == DUBAI_SPLITS["test"]
    scores = aerial_scores(model, shared_path("hr", "dubai"), recorded["places"])
    assert scores["placement_auc"] == pytest.approx(recorded["within_pixel_auc"], abs=2e-3)
    assert scores["placement_auc_smooth"] == pytest.approx(recorded["smooth_field_auc"], abs=2e-3)
    assert f"{recorded['within_pixel_auc']:.3f}" in placement_note(model)


def test_a_real_rural_road_ranks_above_clean_open_land():
    """eo-learn's Slovenia sample (real L1C, three clear dates, a rural road through a
    forested valley): the shipped jointseg keeps the open land almost free of ISA and ranks
    the road above it. It maps the road far below its cover (model card, Roads)."""
    from xjointseg.training.evaluation import real_road_scores, road_sample

    scenes, labels = road_sample(shared_path("s2", "eolearn_slovenia_L1C"))
    assert len(scenes) == 3  # two of the five dates are cloudy
    r = real_road_scores(xjointseg.load_model("jointseg"), scenes, labels)
    assert r["artificial_px"] == 198
    assert max(r["open"]) < 0.02
    assert min(r["artificial"]) > 2 * max(r["open"])
    assert r["auc"] > 0.7


def test_registering_weights_keeps_measurements_only_for_the_same_file(tmp_path, capsys):
    """scripts/register_weights.py: measured fields (``placement``) survive registering the
    same weights again; other weights drop them and say so."""
    import importlib.util
    import json
    import shutil
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "register_weights.py"
    spec = importlib.util.spec_from_file_location("register_weights", script)
    assert spec is not None and spec.loader is not None
    register = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(register)
    shipped = Path(xjointseg.__file__).parent / "models" / "weights"
    register.WEIGHTS = tmp_path
    registry = json.loads((shipped / "registry.json").read_text())
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    source = tmp_path / "source.safetensors"

    shutil.copyfile(shipped / "jointseg-lite.safetensors", source)
    register.main(str(source), "jointseg")
    again = json.loads((tmp_path / "registry.json").read_text())
    assert again == registry  # the same file: nothing measured is lost

    shutil.copyfile(shipped / "bilinear-lite.safetensors", source)
    register.main(str(source), "jointseg")
    entry = json.loads((tmp_path / "registry.json").read_text())["jointseg"]
    assert "placement" not in entry and entry["sha256"] != registry["jointseg"]["sha256"]
    assert "dropped placement" in capsys.readouterr().out
