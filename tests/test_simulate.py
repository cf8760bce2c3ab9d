"""The Sentinel-2 simulator: geometry, units, PSF fit, and the training datasets' rules."""

import numpy as np
import pytest
from conftest import shared_path

from xjointseg.errors import InputError
from xjointseg.training.datasets import (
    IGNORE,
    WEAK_NEGATIVE,
    Scene,
    TrainingDataError,
    load_dubai,
    load_massachusetts,
    split_by_place,
)
from xjointseg.training.simulate import psf_sigma, simulate_sentinel2, srgb_to_linear


def test_bright_point_lands_in_its_10m_pixel():
    img = np.zeros((100, 100, 3), np.uint8)
    img[47, 63] = 255  # 1 m pixel (47, 63) lies in 10 m pixel (4, 6)
    lr = simulate_sentinel2(img, noise_dn=0)
    assert lr.shape == (3, 10, 10)
    assert np.unravel_index(np.argmax(lr[0]), lr[0].shape) == (4, 6)


def test_public_api_is_the_design_one():
    import xjointseg.training as training

    assert training.simulate_sentinel2 is simulate_sentinel2
    assert {"train", "TrainConfig", "load_dubai", "load_geotiff_scene"} <= set(training.__all__)


def test_units_are_dn():
    white = np.full((20, 20, 3), 255, np.uint8)
    lr = simulate_sentinel2(white, noise_dn=0, gain=0.4, offset=0.0)
    np.testing.assert_allclose(lr, 4000)  # linear 1.0 x gain 0.4 = reflectance 0.4 = 4000 DN
    black = simulate_sentinel2(np.zeros((20, 20, 3), np.uint8), noise_dn=0, offset=0.02)
    np.testing.assert_allclose(black, 200)


def test_srgb_curve_round_numbers():
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 1.0])), [0.0, 1.0])
    assert abs(float(srgb_to_linear(np.array(0.5))) - 0.214) < 1e-3


def test_psf_matches_mtf_at_nyquist():
    # the Gaussian x pixel-box MTF at f = 0.5 must equal the requested value
    for mtf in (0.15, 0.25, 0.3):
        s = psf_sigma(mtf)
        assert abs(np.exp(-2 * np.pi**2 * s**2 * 0.25) * (2 / np.pi) - mtf) < 1e-9
    with pytest.raises(InputError):
        psf_sigma(0.9)


def test_blur_spreads_a_point_to_neighbours_but_conserves_energy():
    img = np.zeros((100, 100, 3), np.uint8)
    img[45, 45] = 255
    lr = simulate_sentinel2(img, noise_dn=0, mtf_nyquist=0.15)
    assert lr[0, 4, 3] > 1 and lr[0, 4, 4] > lr[0, 4, 3]
    sharp = simulate_sentinel2(img, noise_dn=0, mtf_nyquist=0.3)
    assert sharp[0, 4, 4] > lr[0, 4, 4]


def test_footprint_integration_equals_blurring_at_1m_then_pooling():
    """The simulator blurs and integrates in one strided pass; the reference blurs the whole
    1 m image (separable Gaussian, reflected edges), then averages each 10 x 10 footprint."""
    import torch
    import torch.nn.functional as F

    from xjointseg.training.simulate import _blur_and_integrate, _psf_kernel

    img = torch.rand(1, 3, 120, 90, generator=torch.Generator().manual_seed(0)) * 5000
    for mtf in (0.15, 0.3):
        sigma = psf_sigma(mtf) * 10
        k = _psf_kernel(sigma, img.dtype)
        r = (len(k) - 1) // 2
        kx = k.view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        ref = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), kx, groups=3)
        ref = F.conv2d(F.pad(ref, (0, 0, r, r), mode="reflect"), kx.transpose(2, 3), groups=3)
        ref = F.avg_pool2d(ref, 10)
        out = _blur_and_integrate(img, sigma)
        assert out.shape == (1, 3, 12, 9)
        torch.testing.assert_close(out, ref, rtol=0, atol=0.01)  # DN


def test_gsd_resampling_and_size_checks():
    img = np.full((50, 50, 3), 100, np.uint8)
    assert simulate_sentinel2(img, gsd=2.0, noise_dn=0).shape == (3, 10, 10)
    with pytest.raises(InputError, match="multiple of 10"):
        simulate_sentinel2(np.zeros((15, 20, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        simulate_sentinel2(np.zeros((20, 20), np.uint8))


def test_return_hr_gives_the_sr_target_in_the_same_units():
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    lr, hr = simulate_sentinel2(img, noise_dn=0, mtf_nyquist=0.3, return_hr=True)
    assert hr.shape == (3, 40, 40)
    # integrating the 1 m target gives the 10 m input up to the blur
    assert abs(hr.mean() - lr.mean()) / hr.mean() < 0.02


def test_augmentation_changes_radiometry_reproducibly():
    img = np.full((20, 20, 3), 128, np.uint8)
    a = simulate_sentinel2(img, augment=True, rng=1)
    b = simulate_sentinel2(img, augment=True, rng=1)
    c = simulate_sentinel2(img, augment=True, rng=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scene_rules():
    label = np.zeros((20, 20), np.uint8)
    with pytest.raises(TrainingDataError, match="differ in size"):
        Scene("x", "p", label, hr=np.zeros((30, 20, 3), np.uint8))
    with pytest.raises(TrainingDataError, match="codes"):
        Scene("x", "p", np.full((20, 20), 7, np.uint8), hr=np.zeros((20, 20, 3), np.uint8))
    s = Scene("x", "p", label, hr=np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(TrainingDataError, match="at least one"):
        split_by_place([s], ["elsewhere"])


def test_unreadable_image(tmp_path):
    (tmp_path / "tile1" / "images").mkdir(parents=True)
    (tmp_path / "tile1" / "masks").mkdir()
    (tmp_path / "classes.json").write_text(
        '{"classes": {"road": [1, 2, 3]}, "isa": ["road"], "not_isa": []}'
    )
    (tmp_path / "tile1" / "images" / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "tile1" / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(TrainingDataError, match="cannot read image"):
        load_dubai(tmp_path)


def test_real_dubai_labels_follow_the_colour_table():
    scenes = load_dubai(shared_path("hr", "dubai"))
    assert len({s.place for s in scenes}) == 7
    codes = set(np.unique(np.concatenate([s.label.ravel() for s in scenes])).tolist())
    assert codes == {0, 1, IGNORE}
    assert all(s.label.shape[0] % 10 == 0 and s.label.shape[1] % 10 == 0 for s in scenes)


def test_real_massachusetts_unknown_pixels_are_weak_and_white_is_ignored():
    scenes = load_massachusetts(shared_path("hr", "massachusetts_roads"))
    s = scenes[0]
    assert set(np.unique(s.label).tolist()) <= {1, WEAK_NEGATIVE, IGNORE}
    white = (s.hr == 255).all(-1)
    assert (s.label[white] == IGNORE).all()


def test_massachusetts_vegetation_becomes_clean_negatives(tmp_path):
    """With ``vegetation_negatives``, green unlabelled pixels (trees, lawns) are clean
    negatives; roads stay ISA even under green, grey unlabelled pixels stay weak, white is
    ignored; a threshold outside the index's range is refused."""
    from PIL import Image

    rgb = np.full((20, 30, 3), 120, np.uint8)  # grey: unknown (a roof? a yard?)
    rgb[:, :10] = (60, 140, 50)  # trees
    rgb[0, 0] = (255, 255, 255)  # no-data
    mask = np.zeros((20, 30, 3), np.uint8)
    mask[5:8] = 255  # a road across the trees and the grey
    for folder, array in (("images", rgb), ("masks", mask)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "t.png")
    weak = load_massachusetts(tmp_path)[0].label
    label = load_massachusetts(tmp_path, vegetation_negatives=0.12)[0].label
    assert (weak[5:8] == 1).all() and (label[5:8] == 1).all()
    assert label[0, 0] == IGNORE
    assert (label[10:, :10] == 0).all() and (weak[10:, :10] == WEAK_NEGATIVE).all()
    assert (label[10:, 10:] == WEAK_NEGATIVE).all()
    with pytest.raises(TrainingDataError, match="excess green"):
        load_massachusetts(tmp_path, vegetation_negatives=5)


def test_default_radiometry_is_the_calibrated_l1c_one():
    """Blue carries the most path radiance (offset) and the least gain, as fitted on real L1C."""
    from xjointseg.training.simulate import DEFAULT_GAIN, DEFAULT_OFFSET

    red, green, blue = DEFAULT_OFFSET
    assert 0 < red < green < blue < 0.15
    assert DEFAULT_GAIN[0] > DEFAULT_GAIN[1] > DEFAULT_GAIN[2] > 0
    black = simulate_sentinel2(np.zeros((20, 20, 3), np.uint8), noise_dn=0)
    np.testing.assert_allclose(black[:, 0, 0], np.round(np.array(DEFAULT_OFFSET) * 1e4))


def test_degrade_sees_a_real_image_10x_coarser_with_the_sensor_optics():
    from xjointseg.training.simulate import degrade

    flat = np.full((3, 40, 30), 700.0, np.float32)
    np.testing.assert_allclose(degrade(flat), 700.0, rtol=1e-5)  # a flat scene stays flat
    rng = np.random.default_rng(3)
    img = rng.uniform(300, 3000, (3, 60, 80)).astype(np.float32)
    low = degrade(img)
    assert low.shape == (3, 6, 8)
    assert abs(low.mean() - img.mean()) < 0.01 * img.mean()  # integration keeps the mean
    box = img.reshape(3, 6, 10, 8, 10).mean(axis=(2, 4))
    assert low.std() < box.std()  # the PSF blurs more than the 10 x 10 box alone
    with pytest.raises(InputError, match="whole 10 x 10"):
        degrade(img[:, :55])
