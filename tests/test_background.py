"""Background removal (segment/background.py): the local mean at the largest particle's scale, chunked."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from picket_dask.config import RunConfig
from picket_dask.segment.background import (bin_factor, background_sigma_vox, fitted_plane, local_mean_binned,
                                            remove_background)


@pytest.fixture
def noise():
    return np.random.default_rng(0).normal(size=(48, 80, 72)).astype(np.float32)


def test_plane_is_exact_on_a_linear_function():
    z, y, x = np.meshgrid(np.arange(9), np.arange(14), np.arange(11), indexing="ij")
    a = 3 + 0.5 * z - 0.2 * y + 0.1 * x
    np.testing.assert_allclose(fitted_plane(a.astype(float)), a, atol=1e-12)


def test_a_ramp_is_removed_up_to_the_faces(noise):
    ramp = noise + (np.arange(72)[None, None, :] / 71 - 0.5) * 2.0  # 2 noise SDs across x
    out, report = remove_background(da.from_array(ramp, chunks=24), 16.0)
    profile = np.asarray(out.compute()).mean(axis=(0, 1))
    assert abs(profile[:8].mean() - profile[-8:].mean()) < 0.05  # was 1.8 across the same columns
    assert report["binned_by"] == bin_factor(16.0, ramp.shape) == 4


@pytest.mark.parametrize("chunks", [(48, 80, 72), 16, (20, 33, 40)])
def test_chunked_equals_whole(noise, chunks):
    """Each chunk interpolates its own voxels from the one binned mean: any chunking gives the same volume."""
    vol = noise + np.linspace(0, 1, 80)[None, :, None]
    whole = remove_background(da.from_array(vol, chunks=(48, 80, 72)), 12.0)[0].compute()
    np.testing.assert_array_equal(remove_background(da.from_array(vol, chunks=chunks), 12.0)[0].compute(), whole)


def test_close_to_the_full_resolution_definition(noise):
    """Binned, blurred and interpolated back: within a few hundredths of a noise SD of subtracting plane + Gaussian
    computed at full resolution (shapes not multiples of the binning included)."""
    vol = noise[:47, :79, :71] + np.linspace(0, 1.5, 71)[None, None, :]
    out = remove_background(da.from_array(vol, chunks=24), 12.0)[0].compute()
    plane = fitted_plane(vol.astype(float))
    ref = vol - (plane + ndi.gaussian_filter(vol - plane, 12.0, mode="reflect"))
    assert np.abs(out - ref).max() < 0.06 and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.999


def test_a_particle_keeps_its_contrast(noise):
    """A dense ball of the largest particle's size loses a few percent of its contrast at most."""
    vol = 0.1 * noise
    zz, yy, xx = np.ogrid[:48, :80, :72]
    ball = (zz - 24) ** 2 + (yy - 40) ** 2 + (xx - 36) ** 2 <= 10**2  # 20 voxels across: the largest particle
    vol[ball] -= 1.0
    out = remove_background(da.from_array(vol, chunks=24), background_sigma_vox((60, 200), 10.0))[0].compute()
    contrast = out[~ball].mean() - out[ball].mean()
    assert 0.9 < contrast < 1.05


def test_sigma_from_the_size_prior_and_binning_limits():
    assert background_sigma_vox((60, 400), 10.0) == 40.0
    assert background_sigma_vox(None, 10.0) == 40.0  # the default prior's largest diameter
    assert bin_factor(40.0, (200, 512, 512)) == 4 and bin_factor(6.0, (200, 512, 512)) == 2
    assert bin_factor(40.0, (6, 512, 512)) == 2  # at least two binned voxels along every axis
    mean, f = local_mean_binned(da.zeros((7, 9, 8), chunks=4), 20.0)
    assert f == 2 and mean.shape == (4, 5, 4) and not mean.any()


def test_reference_preset_turns_it_off():
    assert RunConfig().segment.background == "auto"
    assert RunConfig(preset="reference").segment.background == "off"


def test_a_constant_fill_weighs_nothing_and_sits_at_the_datas_level(noise):
    """A zero-filled margin of a tomogram whose values sit 5 SDs above 0: with the fill excluded the data's local mean
    is its own (no ramp towards the margin) and the fill comes out at the data's level (0), not 5 SDs below it."""
    vol = noise + 5.0
    vol[:, :, :20] = 0.0  # the fill
    fill = np.zeros(vol.shape, bool)
    fill[:, :, :20] = True
    out = remove_background(da.from_array(vol, chunks=24), 16.0, exclude=da.from_array(fill, chunks=24))[0].compute()
    profile = out[:, :, 20:].mean(axis=(0, 1))
    assert np.abs(profile).max() < 0.1  # flat up to the margin
    assert (out[fill] == 0).all()
    unweighted = remove_background(da.from_array(vol, chunks=24), 16.0)[0].compute()[:, :, 20:].mean(axis=(0, 1))
    assert np.abs(unweighted).max() > 1.0  # what the fill did to the data's mean without the weights
