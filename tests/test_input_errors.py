"""Every bad input raises a specific XJointSegError subclass, before anything is computed."""

import numpy as np
import pytest
import xarray as xr

from xjointseg import XJointSegError, errors, segment
from xjointseg.testing import synthetic_scene, toy_model

MODEL = toy_model(depth=2)
DS = synthetic_scene(32, 32)


def check(exc_type, obj, match, **kw):
    with pytest.raises(exc_type, match=match) as info:
        segment(obj, kw.pop("model", MODEL), **kw)
    assert isinstance(info.value, XJointSegError)
    return info.value


def test_missing_band():
    check(errors.BandError, DS.drop_vars("B03"), "B03")


def test_dataarray_without_band_dim():
    check(errors.DimensionError, DS.B04, "'band' dimension")


def test_misnamed_band_dim_gets_a_hint():
    arr = DS.to_dataarray("bands")
    err = check(errors.DimensionError, arr, "rename")
    assert "bands" in str(err)


def test_band_dim_without_labels():
    arr = DS.to_dataarray("band").drop_vars("band")
    check(errors.BandError, arr, "assign_coords")


def test_extra_dimension():
    extra = xr.concat([DS, DS], dim="ensemble").expand_dims(time=1)
    check(errors.DimensionError, extra, "extra dimensions")


def test_no_crs():
    plain = xr.Dataset(
        {b: (("y", "x"), np.ones((8, 8), "uint16")) for b in ("B02", "B03", "B04")},
        coords={"y": 100.0 - 10 * np.arange(8), "x": 10.0 * np.arange(8)},
    )
    check(errors.CRSError, plain, "no CRS")


def test_geographic_crs():
    check(errors.CRSError, DS.odc.assign_crs("EPSG:4326"), "degrees")


def test_non_uniform_grid():
    xs = DS.x.values.copy()
    xs[5] += 3.0
    check(errors.GridError, DS.assign_coords(x=xs), "evenly spaced")


def test_rotated_grid():
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_zeros

    gbox = GeoBox(
        (16, 16), Affine.rotation(10) * Affine(10, 0, 330000, 0, -10, 5822040), "EPSG:32633"
    )
    z = xr_zeros(gbox, dtype="uint16")
    ds = xr.Dataset({b: z for b in ("B02", "B03", "B04")})
    with pytest.raises(errors.GridError):
        segment(ds, MODEL)


def test_wrong_resolution():
    coarse = DS.assign_coords(x=DS.x.values[0] + 20 * np.arange(DS.sizes["x"]))
    coarse = coarse.assign_coords(y=DS.y.values[0] - 20 * np.arange(DS.sizes["y"]))
    check(errors.GridError, coarse, "10 m")


@pytest.mark.parametrize("dtype", ["bool", "complex64"])
def test_unsupported_dtype(dtype):
    check(errors.DTypeError, DS.astype(dtype), str(np.dtype(dtype)))


def test_string_dtype():
    strings = DS.copy()
    for v in strings.data_vars:
        strings[v] = strings[v].astype(str)
    check(errors.DTypeError, strings, "reflectance")


def test_chunks_that_cannot_hold_the_halo():
    check(errors.ChunkError, DS.chunk(y=5, x=5), "multiples of the tile", chunks="keep", tile=16)


def test_band_dimension_chunked():
    arr = DS.to_dataarray("band").chunk(band=1)
    check(errors.ChunkError, arr, "band=-1")


def test_unknown_model_name():
    check(errors.UnknownModelError, DS, "unknown model", model="no-such-model")


def test_unknown_output_kind():
    check(errors.OptionError, DS, "output", output="logits")


def test_zero_sized_array():
    check(errors.EmptyInputError, DS.isel(x=slice(0, 0)), "no pixels")


def test_errors_are_value_errors_too():
    assert issubclass(errors.BandError, ValueError)
    assert issubclass(errors.UnknownModelError, KeyError)


def test_plausible_dn_that_the_range_checks_must_accept():
    """What real DN look like stays accepted: harmonised values down to -1000, fractional
    DN of a resampled or composited load, a dark water scene of small whole DN."""
    from xjointseg.testing import synthetic_scene, toy_model

    model = toy_model()
    ds = synthetic_scene(16, 16).astype("float32")
    harmonised = ds - 1000  # processing baseline 04.00 offset: dark pixels go negative
    resampled = ds + 0.37
    water = (ds * 0 + 90).astype("uint16")  # a dark block: whole DN, below any percent
    for scene in (harmonised, resampled, water):
        assert segment(scene, model).shape == (160, 160)
