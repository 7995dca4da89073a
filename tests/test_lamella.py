"""Lamella (ice slab) detection: a slab in vacuum is found, tilt is followed, no vacuum changes nothing."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from picket_dask.config import RunConfig
from picket_dask.segment.lamella import Lamella, box_fit, detect_lamella, find_lamella
from picket_dask.segment.semantic import sample_in_lamella


def slab_volume(shape=(64, 128, 128), lower=(16.0, 0.0, 0.0), upper=(47.0, 0.0, 0.0), seed=0, ice_sd=3.0):
    """Blurred noise everywhere (vacuum) plus stronger structure between two planes (ice)."""
    rng = np.random.default_rng(seed)
    z = np.arange(shape[0])[:, None, None]
    y = np.arange(shape[1])[None, :, None]
    x = np.arange(shape[2])[None, None, :]
    lo = lower[0] + lower[1] * y + lower[2] * x
    hi = upper[0] + upper[1] * y + upper[2] * x
    inside = (z >= lo) & (z <= hi)
    noise = rng.normal(size=shape).astype(np.float32)
    structure = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.5) * ice_sd
    return ndi.gaussian_filter(noise + structure * inside, 2.0), inside


def test_box_fit_finds_the_step():
    p = np.r_[np.zeros(10), np.ones(30), np.zeros(8)]
    z0, z1, a, b = box_fit(p)
    assert (z0, z1) == (10, 40) and a == 1.0 and b == 0.0


def test_flat_slab_found_and_masks_agree():
    vol, inside = slab_volume()
    lam = detect_lamella(da.from_array(vol, chunks=32), tile=32)
    assert lam.found, lam.reason
    assert abs(lam.lower[0] - 16) <= 3 and abs(lam.upper[0] - 47) <= 3
    core = np.asarray(lam.mask(((32, 32), (64, 64), (64, 64))).compute())
    assert (core == lam.inside_block((0, 0, 0), vol.shape)).all()
    assert (core & inside).sum() / inside.sum() > 0.85 and (core & ~inside).sum() / core.sum() < 0.1
    ext = lam.inside_block((0, 0, 0), vol.shape, extract=True)
    assert ext.sum() > core.sum() and (ext | ~core).all()  # extraction reaches beyond the core
    back = Lamella.from_dict(lam.as_dict(), vol.shape)
    assert back.found and back.lower == lam.lower and back.pad == lam.pad


def _tile_grid(profile, seed=0):
    """A (z, 8, 8) grid of tile log-stds following ``profile`` with a little tile-to-tile noise."""
    return np.asarray(profile)[:, None, None] + 0.01 * np.random.default_rng(seed).normal(size=(len(profile), 8, 8))


def test_fitting_core_leaves_out_only_the_blurred_surface():
    """The core drops a side's ramp only when the blur explains it; a denser layer inside the ice
    (the profile rises on inside the slab) keeps the ice up to the surface in the fit."""
    z = np.arange(64)
    ice = (z >= 12) & (z <= 50)
    step = ndi.gaussian_filter1d(np.where(ice, -4.2, -5.0), 2.0)
    lam = find_lamella(_tile_grid(step), (64, 256, 256), 32, footprint_vox=6)
    assert lam.found and 0 < max(lam.core) <= 6
    assert lam.z_range() == (lam.levels["flat_bounds"][0], lam.levels["flat_bounds"][1] + 1)
    layered = np.where(ice, -4.65, -5.0)
    layered[(z >= 30) & (z <= 50)] = -4.2  # a sparse lower half of the ice, dense upper half
    lam = find_lamella(_tile_grid(ndi.gaussian_filter1d(layered, 2.0)), (64, 256, 256), 32, footprint_vox=6)
    assert lam.found and lam.levels["ramps"][0] > 6 and lam.core[0] == 0.0 and lam.core[1] <= 6
    lo, hi = lam.z_range()
    assert lo <= 15 and hi >= 50  # the sparse layer is fitted, not only the dense one


def test_tilted_slab_followed():
    vol, inside = slab_volume(lower=(10.0, 0.08, 0.0), upper=(34.0, 0.08, 0.0))
    lam = detect_lamella(da.from_array(vol, chunks=32), tile=16)
    assert lam.found, lam.reason
    assert lam.lower[1] == pytest.approx(0.08, abs=0.03) and lam.upper[1] == pytest.approx(0.08, abs=0.03)
    core = lam.inside_block((0, 0, 0), vol.shape)
    assert (core & inside).sum() / inside.sum() > 0.8


def test_no_vacuum_leaves_the_box_whole():
    vol, _ = slab_volume(lower=(-1.0, 0, 0), upper=(64.0, 0, 0))
    lam = detect_lamella(da.from_array(vol, chunks=32), tile=32)
    assert not lam.found and "no vacuum" in lam.reason or "fills" in lam.reason
    assert lam.inside_block((0, 0, 0), vol.shape).all()
    assert lam.fraction_inside() == 1.0


def test_sample_stays_inside_the_slab():
    lam = Lamella((64, 128, 128), True, (16.0, 0.05, 0.0), (40.0, 0.05, 0.0))
    pts = sample_in_lamella((64, 128, 128), lam, 5000, seed=1)
    assert len(pts) == 5000 and lam.inside_points(pts).all()
    assert (np.diff(np.ravel_multi_index(pts.T, (64, 128, 128))) > 0).all()  # sorted, unique


def test_reference_preset_turns_everything_off_but_explicit_keys_win():
    ref = RunConfig(preset="reference")
    assert ref.segment.lamella == "off" and ref.localize.context == "off" and ref.localize.particle_diameter_A is None
    assert ref.segment.kmeans_cut == "midpoint" and RunConfig().segment.kmeans_cut == "mixture"
    assert ref.segment.gmm_starts == "kmeans" and RunConfig().segment.gmm_starts == "kmeans+tail"
    mixed = RunConfig(preset="reference", segment={"lamella": "auto"})
    assert mixed.segment.lamella == "auto" and mixed.localize.context == "off"
    default = RunConfig()
    assert default.segment.lamella == "auto" and default.localize.particle_diameter_A == (60.0, 400.0)


def test_binned_mask_equals_coarsened_full_mask():
    """Lamella.mask(binning=f) is the full mask coarsened with `all` over f^3 cubes (trailing remainder
    dropped), for any chunking of the binned grid; the whole box gives all True."""
    import dask.array as da

    lam = Lamella((37, 50, 45), True, (9.3, 0.11, -0.07), (27.6, -0.05, 0.09), pad=1.5)
    for f in (2, 3):
        full = lam.mask(((37,), (50,), (45,)), extract=True).compute()
        want = da.coarsen(np.all, da.from_array(full), {0: f, 1: f, 2: f}, trim_excess=True).compute()
        small = tuple(s // f for s in full.shape)
        for chunks in (small, (5, 7, 4)):
            got = lam.mask(da.empty(small, chunks=chunks).chunks, extract=True, binning=f).compute()
            assert np.array_equal(got, want)
        assert 0 < want.mean() < 1
    box = Lamella.whole_box((10, 12, 14), "test").mask(((5,), (6,), (7,)), binning=2).compute()
    assert box.shape == (5, 6, 7) and box.all()


def test_constant_fill_is_neither_vacuum_nor_ice():
    """A turned reconstruction's corners hold a constant fill (no data): its local std is 0, which would
    pass for the deepest vacuum and throw the vacuum level off; tiles without data are left out."""
    from picket_dask.segment.lamella import tile_log_std
    from picket_dask.segment.nodata import no_data_mask

    vol, inside = slab_volume(lower=(20.0, 0.0, -0.1), upper=(44.0, 0.0, -0.1), shape=(64, 128, 128))
    z = np.arange(64)[:, None, None]
    x = np.arange(128)[None, None, :]
    fill = np.broadcast_to((z < 6 - 0.14 * (x - 64)) | (z > 57 - 0.14 * (x - 64)), vol.shape)  # two wedges
    raw = np.where(fill, np.float32(vol.mean()), vol).astype(np.float32)
    mask = no_data_mask(da.from_array(raw, chunks=32), 1.0)  # the pipeline's: from the raw tomogram, blur sigma 1
    assert np.asarray(mask)[fill].mean() > 0.9  # all but the wedges' thin tips (under the 5^3 cube)
    data = da.from_array(ndi.gaussian_filter(raw, 1.0), chunks=32)  # what the lamella finder sees: the blurred volume
    grid = tile_log_std(data, 16, mask)
    assert np.isnan(grid).any() and not np.isnan(tile_log_std(data, 16)).any()
    blind = detect_lamella(data, tile=16)
    lam = detect_lamella(data, tile=16, no_data=mask)
    assert lam.found, lam.reason
    assert lam.lower[2] == pytest.approx(-0.1, abs=0.03) and lam.upper[2] == pytest.approx(-0.1, abs=0.03), lam.reason
    core = lam.inside_block((0, 0, 0), vol.shape)
    assert (core & inside).sum() / inside.sum() > 0.8 and (core & ~inside & ~fill).sum() / core.sum() < 0.15
    # without the mask the fill is taken for vacuum: the slab's bounds are not followed as well
    blind_core = blind.inside_block((0, 0, 0), vol.shape)
    assert (blind_core & ~inside & ~fill).sum() > (core & ~inside & ~fill).sum()
