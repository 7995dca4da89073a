"""chunking.map_reflected: dask's reflect-boundary overlap rebuilt with the faces mirrored in the task."""

import dask.array as da
import numpy as np
import pytest

from picket_dask.chunking import map_reflected


def _grown(block):
    return block.copy()


@pytest.mark.parametrize("chunks,depth", [((5, 7, 6), (2, 3, 1)), ((5, 9, 20), (3, 0, 2)), ((8, 8, 8), (1, 1, 1))])
def test_map_reflected_gives_the_blocks_of_dask_reflect_overlap(rng, chunks, depth):
    """Every block the function sees equals the block of ``da.overlap.overlap(..., boundary='reflect')``,
    inside (neighbours' voxels) and at every face of the volume (mirrored), for uneven chunks and halos."""
    x = da.from_array(rng.normal(size=(13, 20, 20)).astype(np.float32), chunks=chunks)
    want = da.overlap.overlap(x, depth=dict(enumerate(depth)), boundary="reflect")
    got = map_reflected(x, _grown, depth, chunks=want.chunks, dtype=np.float32)
    np.testing.assert_array_equal(got.compute(), want.compute())
    trimmed = map_reflected(x, _grown, depth, trim=True, dtype=np.float32)
    np.testing.assert_array_equal(trimmed.compute(), x.compute())


def test_map_reflected_with_a_leading_axis(rng):
    """Leading axes (the six tensor products) are taken whole; the halo is on the last three."""
    x = da.from_array(rng.normal(size=(6, 10, 12, 14)).astype(np.float32), chunks=(6, 5, 6, 7))
    want = da.overlap.overlap(x, depth={0: 0, 1: 2, 2: 2, 3: 2}, boundary="reflect")
    got = map_reflected(x, _grown, (2, 2, 2), chunks=want.chunks, dtype=np.float32)
    np.testing.assert_array_equal(got.compute(), want.compute())


def test_planarity_chunked_on_every_axis_equals_the_whole_volume_filters(rng):
    """The structure tensor's planarity with halos on all three axes (160^3 voxels at 10 A: two filter
    blocks per axis) equals scipy's filters on the whole volume."""
    from scipy import ndimage as ndi

    from picket_dask.localize.hessian import symmetric_eigvals
    from picket_dask.localize.membranes import GRADIENT_SIGMA_A, INTEGRATION_SIGMA_A, PAIRS, _coarsen, planarity_and_normal

    vol = rng.normal(size=(160, 160, 160)).astype(np.float32)
    g = [ndi.gaussian_filter(vol, GRADIENT_SIGMA_A / 10.0, order=o, mode="reflect") for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    t = [ndi.gaussian_filter(_coarsen(g[i] * g[j], 2), INTEGRATION_SIGMA_A / 20.0, mode="reflect") for i, j in PAIRS]
    m1, m2, _ = symmetric_eigvals(t)
    pn = planarity_and_normal(da.from_array(vol, chunks=80), 10.0, 2)
    assert pn.numblocks[1:] == (2, 2, 2)
    np.testing.assert_allclose(pn[0].compute(), m1 - m2, rtol=1e-4, atol=1e-5 * float(np.abs(m1).max()))
