"""Simulate a Sentinel-2 10 m input from a high-resolution 8-bit RGB image.

The chain, in order:

1. **Geometry** — resample to 1 m if the image's ground sampling distance ``gsd`` differs
   (area-weighted, so no aliasing when shrinking).
2. **Radiometry** — undo the sRGB transfer curve (IEC 61966-2-1) to get linear intensity,
   then map linearly to reflectance per band, ``rho = offset + gain * linear``; DN = 10000 *
   rho. The default gain and offset are fitted on real Sentinel-2 L1C of the OSCD training
   cities (``scripts/calibrate_simulator.py``: least squares between the 2nd-98th
   percentiles of simulated and real 10 m pixels). The offset is the path radiance of
   top-of-atmosphere images, largest in blue; augmentation scales it down to none, the
   atmospherically corrected (L2A) case.
3. **Optics** — blur with the MSI point-spread function: a Gaussian whose width is fitted so
   that, combined with the 10 m detector footprint, the system MTF at Nyquist equals
   ``mtf_nyquist``. ESA specifies 0.15-0.30 at Nyquist for the 10 m bands (ESA SP-1322/2,
   "Sentinel-2: ESA's Optical High-Resolution Mission for GMES Operational Services", 2012);
   0.25 is the default.
4. **Detector** — integrate 10 x 10 areas (the 10 m pixel footprint).
5. **Noise** — additive Gaussian noise (``noise_dn``, default 10 DN ~ 0.001 reflectance, the
   order of rho_ref / SNR for the visible bands, whose required SNR is 150-170 at reference
   radiance in the same document), then rounding to integer DN.

Optional augmentation draws gain, offset and MTF at random per call so a model does not learn
one radiometry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

SCALE = 10  # 10 m pixels from 1 m pixels
# fitted on the OSCD training cities (B04, B03, B02), see scripts/calibrate_simulator.py
DEFAULT_GAIN = (0.3397, 0.2148, 0.1447)
DEFAULT_OFFSET = (0.0198, 0.0562, 0.0866)
# the radiometry before that calibration (equal gains, no path radiance): for diagnostics
UNCALIBRATED = {"gain": 0.38, "offset": 0.0}


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer function; ``v`` in [0, 1]."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def psf_sigma(mtf_nyquist: float) -> float:
    """Gaussian sigma (in 10 m pixels) such that Gaussian x 10 m box has ``mtf_nyquist``.

    A Gaussian of sigma s has MTF exp(-2 pi^2 s^2 f^2); the pixel footprint (a box of one
    pixel) has MTF sinc(f) = sin(pi f) / (pi f). At Nyquist, f = 0.5 cycles/pixel.
    """
    box = math.sin(math.pi / 2) / (math.pi / 2)  # 0.637
    gauss = mtf_nyquist / box
    if not 0 < gauss < 1:
        raise InputError(f"mtf_nyquist={mtf_nyquist} is outside (0, {box:.3f})")
    return math.sqrt(-2 * math.log(gauss)) / math.pi


def _psf_kernel(sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``sigma`` (1 m pixels), cut at 3 sigma."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur_and_integrate(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a 1 m image by the PSF, then average each 10 x 10 footprint: ``(1, C, H, W)`` ->
    ``(1, C, H/10, W/10)``.

    Both steps are linear, so per axis they are one convolution with the PSF convolved with
    the 10-pixel box, evaluated every 10th pixel only: the same numbers as blurring the whole
    1 m image and pooling it, at a tenth of the cost. Edges are padded by reflection ('reflect'
    keeps edge pixels from darkening), as the 1 m blur would.
    """
    psf = _psf_kernel(sigma, img.dtype)
    radius = (len(psf) - 1) // 2
    box = torch.full((SCALE,), 1.0 / SCALE, dtype=img.dtype)
    k = F.conv1d(psf.view(1, 1, -1), box.flip(0).view(1, 1, -1), padding=SCALE - 1).view(-1)
    c = img.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    img = F.conv2d(
        F.pad(img, (radius, radius, 0, 0), mode="reflect"), kx, stride=(1, SCALE), groups=c
    )
    ky = kx.transpose(2, 3)
    return F.conv2d(
        F.pad(img, (0, 0, radius, radius), mode="reflect"), ky, stride=(SCALE, 1), groups=c
    )


def degrade(dn: np.ndarray, mtf_nyquist: float = 0.25) -> np.ndarray:
    """A real image seen by the same optics and detector 10x coarser (Wald's protocol).

    ``(C, H, W)`` DN, ``H`` and ``W`` multiples of 10 -> ``(C, H/10, W/10)`` float32: the
    PSF blur and 10 x 10 integration of :func:`simulate_sentinel2`, applied to the image's
    own pixels, so a real 10 m scene gives a 100 m one whose x10 restoration can be scored
    against the real 10 m pixels (Wald, Ranchin & Mangolini 1997, "Fusion of satellite
    images of different spatial resolutions: assessing the quality of resulting images",
    PE&RS 63(6):691-699: quality is judged after degrading the inputs by the fusion's own
    scale factor). No noise is added: the real pixels carry their own.
    """
    c, h, w = dn.shape
    if h % SCALE or w % SCALE:
        raise InputError(f"a {h} x {w} image does not hold whole {SCALE} x {SCALE} cells")
    img = torch.from_numpy(np.ascontiguousarray(dn, np.float32))[None]
    return _blur_and_integrate(img, psf_sigma(mtf_nyquist) * SCALE)[0].numpy()


def simulate_sentinel2(
    hr_rgb: np.ndarray,
    gsd: float = 1.0,
    *,
    gain: float | tuple[float, float, float] = DEFAULT_GAIN,
    offset: float | tuple[float, float, float] = DEFAULT_OFFSET,
    mtf_nyquist: float = 0.25,
    noise_dn: float = 10.0,
    augment: bool = False,
    rng: np.random.Generator | int | None = None,
    return_hr: bool = False,
    return_radiometry: bool = False,
):
    """High-resolution 8-bit sRGB image -> Sentinel-2-like 10 m DN in (B04, B03, B02).

    Parameters
    ----------
    hr_rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB. ``H`` and ``W`` at 1 m must be multiples of 10 (crop first).
    gsd : float
        Ground sampling distance of ``hr_rgb`` in metres; resampled to 1 m first.
    gain, offset : float or 3-tuple
        Linear intensity -> surface reflectance, per band (R, G, B) or for all.
    mtf_nyquist : float
        System MTF at Nyquist of the simulated sensor (ESA specification: 0.15-0.30).
    noise_dn : float
        Standard deviation of the additive noise, in DN.
    augment : bool
        Draw gain (x0.75-1.3, and x0.93-1.07 per band), offset (x0-1.4: from no haze, as in
        L2A, to more than the fitted L1C path radiance) and MTF (0.15-0.30) at random.
    rng : numpy Generator or seed
        Source of the noise and augmentation draws.
    return_hr : bool
        Also return the 1 m reflectance image (DN) the simulation started from: the
        super-resolution target, in the same units as the input.
    return_radiometry : bool
        Also return the ``gain`` and ``offset`` used (drawn, with ``augment``), so the 1 m
        target of any crop can be made later with :func:`hr_dn`.

    Returns
    -------
    numpy.ndarray or tuple
        float32 ``(3, H/10, W/10)`` DN (reflectance x 10000), bands B04, B03, B02; with
        ``return_hr`` also float32 ``(3, H, W)`` DN at 1 m; with ``return_radiometry`` also
        ``{"gain": (3,), "offset": (3,)}``.

    Examples
    --------
    >>> img = np.full((40, 30, 3), 128, np.uint8)
    >>> lr = simulate_sentinel2(img, noise_dn=0)
    >>> lr.shape, round(float(lr[0, 0, 0]))
    ((3, 4, 3), 931)
    """
    rng = np.random.default_rng(rng)
    img = np.asarray(hr_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"hr_rgb must be (H, W, 3) uint8 sRGB, got {img.shape} {img.dtype}")
    x = torch.from_numpy(srgb_to_linear(img.astype(np.float32) / 255.0)).permute(2, 0, 1)[None]
    if gsd != 1.0:
        size = (round(img.shape[0] * gsd), round(img.shape[1] * gsd))
        x = F.interpolate(x, size=size, mode="area" if gsd < 1 else "bilinear", antialias=False)
    h, w = x.shape[2:]
    if h % SCALE or w % SCALE:
        raise InputError(f"the 1 m image ({h} x {w}) must be a multiple of {SCALE} px per side")

    g = np.broadcast_to(np.asarray(gain, np.float32), (3,)).copy()
    o = np.broadcast_to(np.asarray(offset, np.float32), (3,)).copy()
    mtf = mtf_nyquist
    if augment:
        g *= rng.uniform(0.75, 1.3) * rng.uniform(0.93, 1.07, 3)
        o *= rng.uniform(0.0, 1.4)  # L2A (no path radiance) to hazy L1C
        mtf = rng.uniform(0.15, 0.30)
    refl = x * torch.from_numpy(g).view(1, 3, 1, 1) + torch.from_numpy(o).view(1, 3, 1, 1)
    hr_dn = refl * 10000.0

    lr = _blur_and_integrate(hr_dn, psf_sigma(mtf) * SCALE)[0].numpy()
    if noise_dn > 0:
        lr = lr + rng.normal(scale=noise_dn, size=lr.shape)
    lr = np.clip(np.round(lr), 1, 10000).astype(np.float32)
    out: list[Any] = [lr]
    if return_hr:
        out.append(hr_dn[0].numpy().astype(np.float32))
    if return_radiometry:
        out.append({"gain": g, "offset": o})
    return out[0] if len(out) == 1 else tuple(out)


def hr_dn(hr_rgb: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The 1 m super-resolution target of an 8-bit sRGB image (or crop) at 1 m: float32
    ``(3, H, W)`` DN, with the radiometry (``gain``, ``offset`` per band) of its simulation."""
    lin = srgb_to_linear(np.asarray(hr_rgb, np.float32) / 255.0)
    refl = lin * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
    return np.ascontiguousarray(np.moveaxis(refl * 10000.0, -1, 0), dtype=np.float32)
