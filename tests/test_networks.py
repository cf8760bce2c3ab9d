"""The networks: shapes, exact x10 geometry, tight halo, cropping, locality, configs, FLOPs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from xjointseg.models.architectures import ARCHITECTURES, build_network, default_config
from xjointseg.models.base import Span
from xjointseg.models.bilinear import BilinearSegNet
from xjointseg.models.discriminator import UNetDiscriminatorSN
from xjointseg.models.flops import count_macs, count_params
from xjointseg.models.jointseg import JointSegNet
from xjointseg.models.layers import Up2p5

SMALL_JOINTSEG = {
    "stage1_channels": 8,
    "stage1_growth": 4,
    "stage1_blocks": 1,
    "stage2_channels": 8,
    "stage2_growth": 4,
    "stage2_blocks": 1,
    "shuffle_channels": 2,
    "hr_channels": 8,
    "seg_channels": 8,
}
SMALL_BILINEAR = {
    "enc1_channels": 4,
    "enc2_channels": 8,
    "trunk_channels": 8,
    "trunk_growth": 4,
    "trunk_blocks": 1,
    "dec2_channels": 8,
    "dec2_growth": 4,
    "dec2_blocks": 1,
    "dec1_channels": 8,
    "seg_channels": 8,
}
BUILDERS = {
    "jointseg-lite": lambda: JointSegNet.lite(),
    "jointseg-small": lambda: JointSegNet(**SMALL_JOINTSEG),
    "bilinear-lite": lambda: BilinearSegNet.lite(),
    "bilinear-small": lambda: BilinearSegNet(**SMALL_BILINEAR),
}
SMALL = ["jointseg-small", "bilinear-small"]


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    out = {}
    for i, (name, build) in enumerate(BUILDERS.items()):
        torch.manual_seed(i)
        out[name] = build().eval()
    return out


def dn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random Sentinel-2-like DN (reflectance x 10000)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype) * 3000 + 200


def run(net: nn.Module, x: torch.Tensor, margin: int = 0) -> dict:
    with torch.no_grad():
        return net(x, margin)


# --- shapes and the interface ---------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("margin", [0, 2])
def test_output_shapes(nets, name, margin):
    net = nets[name]
    out = run(net, dn(2, 3, 13, 17), margin)
    h, w = 10 * (13 - 2 * margin), 10 * (17 - 2 * margin)
    assert out["logits"].shape == (2, 1, h, w)
    assert out["logits"].dtype == torch.float32
    if name.startswith("jointseg"):
        assert out["sr"].shape == (2, 3, h, w)
    else:
        assert out["sr"] is None
    assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_segment_logits_equals_forward(nets, name):
    net, x = nets[name], dn(1, 3, 15, 14, seed=1)
    with torch.no_grad():
        assert torch.equal(net.segment_logits(x, 3), net(x, 3)["logits"])


def test_other_band_counts():
    torch.manual_seed(0)
    net = JointSegNet(in_bands=4, band_mean=[900.0] * 4, band_std=[600.0] * 4, **SMALL_JOINTSEG)
    out = run(net.eval(), dn(1, 4, 9, 11), 1)
    assert out["logits"].shape == (1, 1, 70, 90) and out["sr"].shape == (1, 4, 70, 90)


def test_forward_all_extras(nets):
    net = nets["jointseg-small"]
    with torch.no_grad():
        out = net.forward_all(dn(2, 3, 12, 13), 2)
        ref = net(dn(2, 3, 12, 13), 2)
    assert out["sr_x4"].shape == (2, 3, 32, 36)
    assert out["features"]["10m"].shape[-2:] == (8, 9)
    assert out["features"]["2.5m"].shape[-2:] == (32, 36)
    assert out["features"]["1m"].shape[-2:] == (80, 90)
    assert torch.equal(out["logits"], ref["logits"]) and torch.equal(out["sr"], ref["sr"])


@pytest.mark.parametrize("margin", [-1, 5, 6])
def test_bad_margin_raises(nets, margin):
    with pytest.raises(ValueError, match="margin"):
        nets["jointseg-small"](dn(1, 3, 10, 12), margin)


def test_determinism(nets):
    for name in SMALL + ["jointseg-lite"]:
        net, x = nets[name], dn(2, 3, 11, 12, seed=2)
        a, b = run(net, x, 1), run(net, x, 1)
        assert torch.equal(a["logits"], b["logits"])
        if a["sr"] is not None:
            assert torch.equal(a["sr"], b["sr"])


@pytest.mark.parametrize("name", SMALL)
def test_channels_last_and_bf16(nets, name):
    """The engine runs channels_last on CPU and bf16 autocast on GPU."""
    net, x = nets[name], dn(1, 3, 12, 12, seed=3)
    ref = run(net, x, 2)["logits"]
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    with torch.no_grad():
        got = cl.segment_logits(x.contiguous(memory_format=torch.channels_last), 2)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = net.segment_logits(x, 2)
    assert low.shape == ref.shape and torch.isfinite(low).all()


def test_10m_prior_stays_fp32_under_bf16_autocast(nets):
    """The 10 m layers decide most of the mask; bf16 autocast leaves them in fp32."""
    torch.manual_seed(5)
    net, x = JointSegNet(**SMALL_JOINTSEG, coarse_channels=4).eval(), dn(1, 3, 40, 40, seed=4)
    margin = net.prior_halo
    with torch.no_grad():
        ref = net.prior_logits(x, margin)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net.prior_logits(x, margin)
            full = net(x, margin, sr=False)
    assert low.dtype == torch.float32 and torch.equal(low, ref)
    assert full["logits10"].dtype == torch.float32


# --- exact x10 geometry -----------------------------------------------------------------


def symmetrize(net: nn.Module) -> nn.Module:
    """Make every kernel mirror-symmetric (and the x2.5 step phase-free).

    Such a network commutes with flips of its input iff its pixel geometry is exact: any
    half-pixel (or 0.5 m sub-pixel) shift anywhere would break the symmetry.
    """
    net = copy.deepcopy(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)
        for m in net.modules():
            if isinstance(m, Up2p5):
                # one kernel per channel for all 25 sub-pixels ...
                w, b = m.conv.weight, m.conv.bias
                w.copy_(
                    w.view(m.c, 25, *w.shape[1:])
                    .mean(1, keepdim=True)
                    .expand(-1, 25, -1, -1, -1)
                    .reshape(w.shape)
                )
                b.copy_(b.view(m.c, 25).mean(1, keepdim=True).expand(-1, 25).reshape(b.shape))
        if isinstance(net, JointSegNet):
            # ... and the 1 m convolution reads the 4 gathered 0.5 m sub-pixels alike
            w = net.s2_hr.weight
            w.copy_(
                w.view(w.shape[0], -1, 4, 3, 3)
                .mean(2, keepdim=True)
                .expand(-1, -1, 4, -1, -1)
                .reshape(w.shape)
            )
    return net


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("margin", [0, 3])
def test_one_bright_pixel_lands_in_its_10x10_cell(nets, name, margin):
    net = symmetrize(nets[name]).double()
    n, c = 15, 7  # odd tile; the bright pixel is its centre pixel
    x = torch.full((1, 3, n, n), 1000.0, dtype=torch.float64)
    x[..., c, c] = 6000.0
    const = run(net, torch.full_like(x, 1000.0), margin)
    out = run(net, x, margin)
    for key in ("logits", "sr"):
        if out[key] is None:
            continue
        y = out[key]
        # float64 rounding of the interpolation coordinates (0.1 is not exact) is ~1e-9
        torch.testing.assert_close(y, y.flip(-1), atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(y, y.flip(-2), atol=1e-7, rtol=1e-6)
        # the response's centre of mass is the centre of the bright pixel's 10x10 cell
        r = (y - const[key]).abs().sum((0, 1))
        assert r.sum() > 0
        cell = 10 * (c - margin)  # first 1 m pixel of the bright pixel's cell
        idx = torch.arange(r.shape[0], dtype=r.dtype)
        com_y = (r.sum(1) * idx).sum() / r.sum()
        com_x = (r.sum(0) * idx[: r.shape[1]]).sum() / r.sum()
        assert abs(com_y - (cell + 4.5)) < 1e-4 and abs(com_x - (cell + 4.5)) < 1e-4


def test_unsymmetric_shift_would_be_caught(nets):
    """Control for the test above: a 1 m shift of the output breaks its mirror symmetry."""
    net = symmetrize(nets["jointseg-small"]).double()
    x = torch.full((1, 3, 15, 15), 1000.0, dtype=torch.float64)
    x[..., 7, 7] = 6000.0
    y = run(net, x)["logits"]
    shifted = torch.roll(y, 1, -1)
    assert not torch.allclose(shifted, shifted.flip(-1), atol=1e-6)


def test_sr_of_constant_image_is_constant_at_init():
    """At initialisation (ICNR x2.5) the SR residual over bilinear has no 5-pixel phase."""
    torch.manual_seed(5)
    net = JointSegNet(**SMALL_JOINTSEG).eval()
    h = net.halo
    x = torch.full((1, 3, 2 * h + 4, 2 * h + 4), 1200.0)
    sr = run(net, x, h)["sr"]  # every output pixel sees a full, constant receptive field
    assert sr.shape == (1, 3, 40, 40)
    spread = (sr - sr.mean((-2, -1), keepdim=True)).abs().max()
    assert spread < 1e-3  # DN; float32 noise only


# --- the halo is tight ------------------------------------------------------------------


def _halo_positions(net: nn.Module, c: int) -> tuple[list, list]:
    h = net.halo
    span = net.input_span(Span(0, net.scale - 1))
    assert h == max(-span.lo, span.hi)
    at = []
    if -span.lo == h:
        at += [(c - h, c), (c, c - h), (c - h, c - h)]
    if span.hi == h:
        at += [(c + h, c), (c, c + h), (c + h, c + h)]
    d = h + 1
    beyond = [(c - d, c), (c + d, c), (c, c - d), (c, c + d), (c - d, c - d), (c + d, c + d)]
    return at, beyond


@pytest.mark.parametrize("name", ["jointseg-lite", "jointseg-small", "bilinear-lite"])
def test_halo_is_tight(nets, name):
    """A pixel at distance ``halo`` changes the centre pixel's 10x10 logits; at ``halo + 1``
    nothing changes, bit for bit.

    The sensitivity to the farthest pixel is a product of ~40 corner weights and residual
    scalings of a randomly initialised net (~1e-90), so the check runs in float64: the
    gradient shows it is non-zero, and a perturbation of 1/gradient DN (huge, but the
    network is piecewise linear and float64 holds it) changes the output.
    """
    net = copy.deepcopy(nets[name]).double()
    h = net.halo
    m = h + 1
    c = m  # the centre pixel of a (2m+1)^2 tile, whose outputs are the 10x10 logits
    x = dn(1, 3, 2 * m + 1, 2 * m + 1, seed=7, dtype=torch.float64)
    with torch.no_grad():
        base = net.segment_logits(x, m)
    assert base.shape == (1, 1, 10, 10)
    xg = x.clone().requires_grad_(True)
    r = torch.randn(base.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    (net.segment_logits(xg, m) * r).sum().backward()
    grad = xg.grad[0]

    at, beyond = _halo_positions(net, c)
    assert at
    for i, j in at:
        band = int(grad[:, i, j].abs().argmax())
        g = grad[band, i, j].abs().item()
        assert g > 0, f"no dependence on pixel ({i}, {j}) at distance {h}"
        xp = x.clone()
        xp[0, band, i, j] += min(1.0 / g, 1e250)
        with torch.no_grad():
            assert not torch.equal(net.segment_logits(xp, m), base)
    for i, j in beyond:
        assert (grad[:, i, j] == 0).all()
        for size in (1e4, 1e250):
            xp = x.clone()
            xp[0, :, i, j] += size
            with torch.no_grad():
                assert torch.equal(net.segment_logits(xp, m), base)
    # and no pixel outside the halo square matters at all
    inside = torch.zeros_like(grad[0], dtype=torch.bool)
    inside[c - h : c + h + 1, c - h : c + h + 1] = True
    assert (grad[:, ~inside] == 0).all()


@pytest.mark.parametrize("name", SMALL)
def test_far_context_is_ignored(nets, name):
    """No global pooling or tile-wide normalisation: two tiles that agree within the halo of
    every output pixel but differ wildly beyond it give bit-identical outputs."""
    net = copy.deepcopy(nets[name]).double()
    h, k = net.halo, 5
    m = h + k
    a = dn(1, 3, 2 * m + 6, 2 * m + 4, seed=8, dtype=torch.float64)
    ring = torch.ones_like(a, dtype=torch.bool)
    ring[..., k:-k, k:-k] = False
    b = torch.where(ring, torch.full_like(a, 20000.0), a)
    c = torch.where(ring, dn(*a.shape, seed=9, dtype=a.dtype) * 5, a)
    out = [run(net, t, m) for t in (a, b, c)]
    for o in out[1:]:
        assert torch.equal(o["logits"], out[0]["logits"])
        if o["sr"] is not None:
            assert torch.equal(o["sr"], out[0]["sr"])


# --- cropping and tiling ----------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL)
def test_margin_crop_equals_uncropped_centre(nets, name):
    net = nets[name]
    h = net.halo
    x = dn(1, 3, 2 * h + 7, 2 * h + 9, seed=4)
    full = run(net, x, 0)
    for m in (1, 3, h - 1, h, h + 2):
        out = run(net, x, m)
        s = 10 * m
        torch.testing.assert_close(
            out["logits"], full["logits"][..., s:-s, s:-s], atol=1e-5, rtol=1e-5
        )
        if out["sr"] is not None:
            # SR is in DN (~1e3): compare at float32 precision of those values
            torch.testing.assert_close(out["sr"], full["sr"][..., s:-s, s:-s], atol=1e-2, rtol=1e-5)


def test_margin_crop_lite(nets):
    net = nets["jointseg-lite"]
    h = net.halo
    x = dn(1, 3, 2 * h + 3, 2 * h + 4, seed=4)
    full, out = run(net, x, 0), run(net, x, h)
    s = 10 * h
    torch.testing.assert_close(out["logits"], full["logits"][..., s:-s, s:-s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_independent_of_tile_extent_and_origin(nets, name):
    """Tiles of other sizes and origins (shifted by odd amounts, align = 1) give the same
    output for the pixels they share, given context >= halo."""
    net = nets[name]
    assert net.align == 1
    h = net.halo
    scene = dn(1, 3, 2 * h + 14, 2 * h + 15, seed=6)
    ref = run(net, scene, h)["logits"]  # covers scene pixels h .. h+13 / h+14
    for y0, x0, ny, nx in [(3, 4, 2 * h + 5, 2 * h + 7), (1, 0, 2 * h + 9, 2 * h + 4)]:
        tile = scene[..., y0 : y0 + ny, x0 : x0 + nx]
        for m in (h, h + 1):
            got = run(net, tile, m)["logits"]
            # tile centre pixel i is scene pixel y0 + m + i, i.e. ref pixel y0 + m + i - h
            oy, ox = 10 * (y0 + m - h), 10 * (x0 + m - h)
            want = ref[..., oy : oy + got.shape[-2], ox : ox + got.shape[-1]]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --- configurations ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_config_rebuilds_the_network(nets, name):
    net = nets[name]
    config = json.loads(json.dumps(net.config))  # JSON-serialisable
    twin = type(net)(**config)
    a, b = net.state_dict(), twin.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    twin.load_state_dict(a)
    x = dn(1, 3, 9, 9)
    assert torch.equal(run(twin.eval(), x, 1)["logits"], run(net, x, 1)["logits"])
    assert twin.halo == net.halo


def test_registry():
    assert {"jointseg", "bilinear"} <= set(ARCHITECTURES)
    for arch in ("jointseg", "bilinear"):
        config = default_config(arch)
        net = build_network(arch, **config)
        assert net.arch == arch and net.config == {
            **config,
            "in_bands": 3,
            "band_mean": None,
            "band_std": None,
        }
        default_config(arch)["in_bands"] = 99  # a copy: the named config is unchanged
        assert "in_bands" not in default_config(arch)
    with pytest.raises(KeyError):
        build_network("nope")
    with pytest.raises(KeyError):
        default_config("jointseg", "huge")
    net = build_network("jointseg", **default_config("jointseg"), band_mean=[1.0, 2.0, 3.0])
    assert net.config["band_mean"] == [1.0, 2.0, 3.0]
    assert net.band_mean.flatten().tolist() == [1.0, 2.0, 3.0]


def test_lite_budget_and_bilinear_is_matched(nets):
    """lite: halo <= 40 px and <= 50 kMAC per 1 m pixel; the baseline has the same halo
    (receptive field in metres) and similar MACs."""
    j, b = nets["jointseg-lite"], nets["bilinear-lite"]
    assert j.halo <= 40 and j.halo == b.halo
    px = 100 * 12 * 12
    mj, mb = count_macs(j, 12, 12) / px, count_macs(b, 12, 12) / px
    assert mj <= 50_000
    assert 0.75 < mb / mj < 1.25
    assert 0.75 < count_params(b) / count_params(j) < 1.25
    # inference of the mask skips the 1 m SR head
    assert count_macs(j, 12, 12, logits_only=True) < count_macs(j, 12, 12)


def test_paper_configs_match():
    j, b = JointSegNet.paper(), BilinearSegNet.paper()
    assert j.halo == b.halo
    assert 25e6 < count_params(j) < 40e6 and 20e6 < count_params(b) < 40e6
    for block in j.s1_trunk.blocks[:1]:
        assert block.blocks[0].convs[0].out_channels == 32  # growth
    assert len(j.s1_trunk.blocks) == len(j.s2_trunk.blocks) == 23


def test_cropping_pays_off(nets):
    """With margin = halo, the 2.5 m and 1 m layers run on the centre plus a few pixels, so
    the MACs per output pixel stay close to those without any context."""
    net = nets["jointseg-lite"]
    h, n = net.halo, 128  # the engine's kind of tile
    per_px = count_macs(net, n + 2 * h, n + 2 * h, h) / (100 * n * n)
    bare = count_macs(net, 12, 12) / (100 * 12 * 12)
    assert per_px < 1.25 * bare
    # without cropping, every stage would run on the whole tile
    assert count_macs(net, n + 2 * h, n + 2 * h, 0) > 2 * count_macs(net, n + 2 * h, n + 2 * h, h)


def test_count_macs_of_one_conv():
    class One(nn.Module):
        in_bands = 3

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x, margin=0):
            return self.conv(x)

    assert count_macs(One(), 7, 9) == 7 * 9 * 5 * 3 * 9
    assert count_params(One()) == 5 * 3 * 9 + 5


# --- discriminator ----------------------------------------------------------------------


def test_discriminator_shapes_and_spectral_norm():
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(in_channels=3, channels=8)
    for shape in [(2, 3, 40, 40), (1, 3, 37, 45)]:
        y = d(torch.randn(*shape))
        assert y.shape == (shape[0], 1, *shape[2:])
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    normed = [m for m in convs if parametrize.is_parametrized(m, "weight")]
    assert len(convs) == 10 and len(normed) == 8
    # spectral norm bounds the largest singular value of each normalised weight by ~1
    d.train()
    for _ in range(30):
        d(torch.randn(1, 3, 16, 16))
    d.eval()
    for m in normed:
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        assert sigma < 1.05
    d(torch.randn(1, 3, 24, 24)).mean().backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)


def test_discriminator_is_local_per_pixel():
    """Per-pixel logits: a change in one corner leaves the far corner's logits unchanged
    beyond the network's (large but finite) receptive field."""
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(in_channels=3, channels=4).eval()
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[..., :4, :4] += 5
    with torch.no_grad():
        a, b = d(x), d(y)
    assert not torch.equal(a[..., :8, :8], b[..., :8, :8])
    torch.testing.assert_close(a[..., -8:, -8:], b[..., -8:, -8:])
