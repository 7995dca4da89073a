"""The membrane detector's sheet test: a membrane faces along its normal, a back-projection streak does not."""

import dask.array as da
import numpy as np


def _sheet_and_streak(rng, shape=(48, 96, 112)):
    """10 A voxels, noise of SD 1: a bilayer (two dense leaflets 40 A apart) across the box at y ~ 24,
    tilted, and a streak like the one a weighted back-projection draws through a dense bead: density
    ringing along x (period 40 A) in a 60 A thin slab of the x-z plane at y = 72, 800 A long in x."""
    vol = rng.normal(size=shape).astype(np.float32)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    dist = (yy - 0.3 * xx - 0.2 * zz - 10) / np.sqrt(1 + 0.09 + 0.04)  # signed distance to the mid-plane, voxels
    sheet = np.broadcast_to(np.abs(dist) <= 2, shape) & np.broadcast_to(yy < 56, shape)
    vol[np.broadcast_to(np.abs(np.abs(dist) - 2) <= 0.75, shape) & np.broadcast_to(yy < 56, shape)] -= 1.5
    streak = np.broadcast_to((np.abs(yy - 72) <= 3) & (xx >= 16) & (xx < 96) & (zz >= 4) & (zz < 44), shape)
    vol += np.where(streak, 1.5 * np.cos(2 * np.pi * xx / 4.0), 0).astype(np.float32)
    return vol, sheet, streak


def test_sheet_kept_streak_along_its_normal_dropped(rng):
    from picket_dask.localize.membranes import FACING_MIN, membrane_mask

    vol, sheet, streak = _sheet_and_streak(rng)
    inside = da.ones(tuple(s // 2 for s in vol.shape), chunks=24, dtype=bool)
    mask, rep = membrane_mask(da.from_array(vol, chunks=32), 10.0, inside, 2, min_extent_A=400.0)
    m = mask.compute()
    # both pass the length-and-area test (the former rule kept both); only the sheet faces its normal
    assert rep["membranes"] == 1 and rep["not_facing"] == 1
    low, high = sorted(rep["facing_of_sheets"])
    assert low < 0.25 < FACING_MIN < 0.7 < high
    assert m[sheet[::2, ::2, ::2]].mean() > 0.8      # the bilayer, on the 20 A grid
    assert m[streak[::2, ::2, ::2]].mean() < 0.05    # the streak stays free


def test_facing_fraction_chunked_equals_whole(rng):
    from picket_dask.localize.membranes import facing_fraction, planarity_and_normal
    from scipy import ndimage as ndi

    vol, _, _ = _sheet_and_streak(rng, shape=(32, 64, 64))
    pn = planarity_and_normal(da.from_array(vol, chunks=64), 10.0, 2).compute()
    above = pn[0] > np.percentile(pn[0], 97)
    labels, n = ndi.label(above)
    whole = facing_fraction(da.from_array(above), da.from_array(pn[1:]), da.from_array(labels.astype(np.uint32)), n)
    chunked = facing_fraction(da.from_array(above, chunks=8), da.from_array(pn[1:], chunks=(3, 8, 8, 8)),
                              da.from_array(labels.astype(np.uint32), chunks=8), n)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-9)
    assert whole[0] == 0 and np.all((whole[1:] >= 0) & (whole[1:] <= 1)) and n > 1


def test_closed_form_top_eigenvector_equals_eigh(rng):
    from picket_dask.localize.hessian import symmetric_eigvals, symmetric_eigvec

    a = rng.normal(size=(500, 3, 3))
    a = a @ a.transpose(0, 2, 1)  # structure tensors are positive semi-definite
    _, vecs = np.linalg.eigh(a)
    for dt, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        h = [a[:, i, j].astype(dt) for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
        v = symmetric_eigvec(h, symmetric_eigvals(h)[0])
        assert v.dtype == dt
        np.testing.assert_allclose(np.abs(np.sum(v.T * vecs[:, :, 2], axis=1)), 1.0, atol=tol)  # sign-free
    flat = [np.array([2.0]), np.zeros(1), np.zeros(1), np.array([2.0]), np.zeros(1), np.array([1.0])]
    assert np.all(symmetric_eigvec(flat, np.array([2.0])) == 0)  # l1 = l2: no one direction


def test_membrane_mask_independent_of_the_grids_chunks(rng):
    """The mask follows the caller's binned-grid chunks (the filters keep their own blocks and are
    merged into them): any chunking of the image and of the sample mask gives the same voxels."""
    from picket_dask.localize.membranes import membrane_mask

    vol, _, _ = _sheet_and_streak(rng)
    small = tuple(s // 2 for s in vol.shape)
    masks = []
    for image_chunks, grid_chunks in ((32, 24), (48, small), (40, (10, 48, 17))):
        inside = da.ones(small, chunks=grid_chunks, dtype=bool)
        mask, rep = membrane_mask(da.from_array(vol, chunks=image_chunks), 10.0, inside, 2, min_extent_A=400.0)
        assert mask.chunks == inside.chunks
        masks.append(mask.compute())
        assert rep["membranes"] == 1
    assert masks[0].any()
    for m in masks[1:]:
        np.testing.assert_array_equal(m, masks[0])


def test_planarity_on_a_thin_slab_equals_the_whole_volume_filters(rng):
    """A slab thinner than the structure tensor's window (12 slices: 6 on the 20 A grid, window radius 9)
    crashed in dask's halo; along such an axis the block is the whole axis and the filters' own reflection
    gives the whole-volume result: the same numbers as scipy on the whole slab, chunked or not."""
    from scipy import ndimage as ndi

    from picket_dask.localize.hessian import symmetric_eigvals
    from picket_dask.localize.membranes import (GRADIENT_SIGMA_A, INTEGRATION_SIGMA_A, PAIRS, _coarsen,
                                                planarity_and_normal)

    vol = rng.normal(size=(12, 40, 44)).astype(np.float32)
    g = [ndi.gaussian_filter(vol, GRADIENT_SIGMA_A / 10.0, order=o, mode="reflect")
         for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    t = [ndi.gaussian_filter(_coarsen(g[i] * g[j], 2), INTEGRATION_SIGMA_A / 20.0, mode="reflect") for i, j in PAIRS]
    m1, m2, _ = symmetric_eigvals(t)
    for chunks in (64, (12, 16, 16)):
        pn = planarity_and_normal(da.from_array(vol, chunks=chunks), 10.0, 2).compute()
        np.testing.assert_allclose(pn[0], m1 - m2, rtol=1e-4, atol=1e-6 * float(np.abs(m1).max()))
