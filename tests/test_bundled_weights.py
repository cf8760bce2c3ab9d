"""The weights shipped in the package: what the registry says about them holds.

The validation scores in the registry (and the model card in the README) are recomputed from
the bundled files on the held-out Dubai places, and the default model is checked on the real
Havelland scene against OpenStreetMap land use.
"""

import warnings

import numpy as np
import pytest
from conftest import shared_path

import xjointseg
from xjointseg.models import registered_models

SHIPPED = ("jointseg", "bilinear")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_by_name(name):
    entry = registered_models()[name]
    model = xjointseg.load_model(name, device="cpu")
    assert model.sha256 == entry["sha256"]
    assert model.network.arch == entry["arch"] == name
    assert model.bands == ("B04", "B03", "B02") and model.scale == 10 and model.halo == 39
    meta = model.metadata
    assert meta["training"]["val_places"] == ["dubai/tile1", "dubai/tile3"]
    assert meta["metrics"] == entry["validation"]


@pytest.fixture(scope="module")
def held_out():
    from xjointseg.training import load_dubai, split_by_place
    from xjointseg.training.trainer import validation_inputs

    scenes = load_dubai(shared_path("hr", "dubai"))
    _, val = split_by_place(scenes, ["dubai/tile1", "dubai/tile3"])
    return validation_inputs(val)


@pytest.mark.parametrize("name", SHIPPED)
def test_registered_validation_scores_are_reproduced(name, held_out):
    from xjointseg.training import evaluate

    recorded = registered_models()[name]["validation"]
    model = xjointseg.load_model(name, device="cpu")
    scores = evaluate(model.network, held_out, context=8)
    for key in ("f1", "precision", "recall", "macro_f1"):
        assert scores[key] == pytest.approx(recorded[key], abs=2e-3), key
    if name == "jointseg":  # the SR branch beats plain up-sampling on unseen places
        assert scores["psnr_model"] > scores["psnr_bicubic"] > scores["psnr_bilinear"]


def test_demo_with_the_default_model_follows_land_use(tmp_path):
    """`xjointseg demo` with no --model runs the shipped jointseg; on the real Havelland scene
    it finds ISA inside residential areas and almost none in forest, meadow or water."""
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
    assert share["residential"] > 0.01, share
    for other in ("forest", "meadow", "water"):
        assert share[other] < share["residential"] / 10, share
