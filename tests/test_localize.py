"""Step 2: chunked connected components and centroids equal scipy; watershed matches skimage."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from conftest import blobs
from picket_dask.localize.centroids import instance_table, size_filter
from picket_dask.localize.components import connected_components_chunked
from picket_dask.localize.mask import particle_mask
from picket_dask.localize.watershed import fill_unreached, watershed_chunked


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to relabelling: the map between ids is one-to-one and background stays background."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), level=st.floats(0.47, 0.53),
       cz=st.integers(2, 20), cy=st.integers(2, 24), cx=st.integers(2, 28))
def test_cc_and_centroids_equal_scipy(seed, level, cz, cy, cx):
    r = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(r.random((20, 24, 28)), 1.2) > level
    ref, n = ndi.label(mask)
    labels, n2 = connected_components_chunked(da.from_array(mask, chunks=(cz, cy, cx)))
    ours = labels.compute()
    assert n2 == n and ours.dtype == np.uint32
    assert same_partition(ours, ref)
    assert set(np.unique(ours)) == set(range(n + 1))
    table = instance_table(da.from_array(ours, chunks=(cz, cy, cx)), n2)
    if n:
        np.testing.assert_allclose(table.centroids, ndi.center_of_mass(mask, ours, np.arange(1, n + 1)), rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(table.counts, np.bincount(ours.ravel())[1:])
        objs = ndi.find_objects(ours)
        np.testing.assert_array_equal(table.bbox_min, [[s.start for s in o] for o in objs])
        np.testing.assert_array_equal(table.bbox_max, [[s.stop - 1 for s in o] for o in objs])


def test_empty_mask():
    labels, n = connected_components_chunked(da.zeros((10, 10, 10), dtype=bool, chunks=5))
    assert n == 0 and labels.compute().max() == 0
    assert len(instance_table(labels)) == 0


def test_size_filter():
    mask = np.zeros((10, 10, 10), bool)
    mask[1, 1, 1] = True
    mask[4:8, 4:8, 4:8] = True
    labels, _ = connected_components_chunked(da.from_array(mask, chunks=5))
    t, lut = size_filter(instance_table(labels), min_size=2)
    assert len(t) == 1 and t.counts[0] == 64 and lut[labels.compute()].max() == 1


def test_watershed_matches_skimage():
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = blobs((48, 96, 96), 70, 3, 7, seed=5)
    d = ndi.distance_transform_edt(mask)
    pk = peak_local_max(d, min_distance=5, exclude_border=False)
    markers = np.zeros(mask.shape, int)
    markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    ref = watershed(-d, markers, mask=mask)
    m = da.from_array(mask, chunks=(24, 40, 40))
    ws, n, report = watershed_chunked(m, min_distance=5)
    filled, n_cc = fill_unreached(m, da.from_array(ws.compute(), chunks=(24, 40, 40)), n)
    ours = filled.compute()
    assert ((ours > 0) == mask).all()
    a = instance_table(da.from_array(ref, chunks=48)).centroids
    b = instance_table(da.from_array(ours, chunks=48)).centroids
    dist, _ = cKDTree(b).query(a)
    assert (dist <= 1).mean() >= 0.99, (len(a), len(b), (dist <= 1).mean(), report, n_cc)
    dist_b, _ = cKDTree(a).query(b)
    assert (dist_b <= 1).mean() >= 0.95, (len(a), len(b), (dist_b <= 1).mean(), report, n_cc)


def test_mask_z_bounds_and_errors():
    from picket_dask.errors import PicketError

    sem = da.ones((10, 4, 4), dtype=np.uint8, chunks=3)
    m = particle_mask(sem, 1, (2, 5)).compute()
    assert m[:2].sum() == 0 and m[6:].sum() == 0 and m[2:6].all()
    with pytest.raises(PicketError, match="outside"):
        particle_mask(sem, 1, (3, 40))
    with pytest.raises(PicketError, match="particle id"):
        particle_mask(sem, 255)


def test_watershed_distance_cache_changes_nothing(tmp_path):
    """Cached squared distances give the very labels of computing each distance map twice."""
    mask = blobs((40, 70, 90), 50, 3, 7, seed=9)
    m = da.from_array(mask, chunks=(17, 30, 40))
    plain, n_plain, _ = watershed_chunked(m, min_distance=4)
    cached, n_cached, _ = watershed_chunked(m, min_distance=4, scratch=str(tmp_path / "cache"))
    assert n_plain == n_cached
    np.testing.assert_array_equal(plain.compute(), cached.compute())
    assert (tmp_path / "cache").exists()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), md=st.integers(1, 7), kind=st.sampled_from(["blobs", "plateaus", "noise", "flat"]),
       dtype=st.sampled_from([np.float32, np.uint8, np.uint16, np.float64]))
def test_local_peaks_equal_peak_local_max(seed, md, kind, dtype):
    """Same coordinates in the same order as skimage's peak_local_max(exclude_border=False), on
    distance maps, integer plateaus (many tied candidates), noise and a constant image."""
    import edt
    from skimage.feature import peak_local_max

    from picket_dask.localize.watershed import local_peaks

    r = np.random.default_rng(seed)
    shape = tuple(int(n) for n in r.integers(1, 26, 3))
    if kind == "blobs":
        img = edt.edtsq(blobs(shape, 12, 1, 4, seed=seed), black_border=False)
    elif kind == "plateaus":
        img = r.integers(0, 4, shape)
    elif kind == "noise":
        img = r.random(shape) * 200
    else:
        img = np.full(shape, 3)
    img = img.astype(dtype)
    ref = peak_local_max(img, min_distance=md, exclude_border=False)
    np.testing.assert_array_equal(local_peaks(img, md), ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flood_and_compact_distances_equal_skimage(seed):
    """The watershed on pre-padded arrays equals skimage's public function, and peaks of the squared
    distances in the smallest unsigned type equal those of the float32 map (same order of values)."""
    import edt
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from picket_dask.localize.morphology import distance_sq
    from picket_dask.localize.watershed import _compact, flood, local_peaks

    region = blobs((30 + seed, 41, 37), 40, 2, 6, seed=seed)
    region[0, :5, :5] = True  # touches the faces
    sq = edt.edtsq(region, black_border=False, parallel=1)
    np.testing.assert_array_equal(distance_sq(region), sq)  # through edt's uint8 path
    small = _compact(sq)
    assert small.dtype == np.uint8 and np.array_equal(small, sq)
    pk = peak_local_max(sq, min_distance=3, exclude_border=False)
    np.testing.assert_array_equal(local_peaks(small, 3), pk)
    mid, big = _compact(sq * 1000.0), _compact(sq * 1e5)  # values beyond uint8, beyond uint16
    assert mid.dtype == np.uint16 and big.dtype == np.uint32
    for other in (mid, big):
        np.testing.assert_array_equal(local_peaks(other, 3), pk)
    rng = np.random.default_rng(seed)
    points = np.concatenate([pk, rng.integers(0, region.shape, (5, 3))])  # some may fall outside the mask
    ids = rng.permutation(np.arange(1, len(points) + 1)).astype(np.uint32)
    markers = np.zeros(region.shape, np.uint32)
    markers[tuple(points.T)] = ids
    for dist in (sq, small, mid, big):
        ref = watershed(-dist.astype(np.float64), markers, mask=region)
        got = flood(dist, region, points, ids)
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, ref)


@settings(max_examples=15, deadline=None)
@given(cz=st.integers(1, 20), cy=st.integers(1, 30), cx=st.integers(1, 40), seed=st.integers(0, 10))
def test_value_counts_equal_bincount(cz, cy, cx, seed):
    from picket_dask.chunking import value_counts

    a = np.random.default_rng(seed).integers(0, 4, (20, 30, 40)).astype(np.uint8)
    a[seed, seed, seed] = 255
    d = da.from_array(a, chunks=(cz, cy, cx))
    np.testing.assert_array_equal(value_counts(d, 256).compute(), np.bincount(a.ravel(), minlength=256))
    np.testing.assert_array_equal(value_counts(d, 2).compute(), np.bincount(a.ravel())[:2])


def test_watershed_block_grid_takes_short_axes_whole():
    """An axis no longer than a haloed chunk becomes one block (no larger than a haloed chunk along it);
    longer axes keep their chunks."""
    from picket_dask.localize.watershed import block_grid

    m = da.zeros((200, 512, 512), dtype=bool, chunks=128)
    g = block_grid(m, 40)
    assert g.chunks == ((200,), (128,) * 4, (128,) * 4)
    assert max(g.chunks[0]) <= 128 + 2 * 40
    assert block_grid(m, 30).chunks == m.chunks  # 200 > 128 + 60: z keeps its chunks
    small = da.zeros((48, 96, 96), dtype=bool, chunks=(24, 40, 40))
    assert block_grid(small, 12).chunks == ((48,), (40, 40, 16), (40, 40, 16))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_watershed_floods_only_components_reaching_the_chunk(seed):
    """A haloed block's watershed inside its chunk equals skimage's on the whole haloed block, with
    the components that never reach the chunk dropped and the arrays cut to the box of the rest.
    One marker per component: no two basins tie, so the result is exact."""
    from skimage.segmentation import watershed

    from picket_dask.localize.morphology import distance_sq
    from picket_dask.localize.watershed import _block_watershed, reaching

    region = blobs((40, 48, 44), 60, 2, 5, seed=seed)
    sq = distance_sq(region)
    lab, n = ndi.label(region)
    peaks = np.array([np.unravel_index(np.argmax(np.where(lab == i, sq, -1)), region.shape) for i in range(1, n + 1)])
    lo, origin, shape = np.zeros(3, int), np.array([10, 12, 14]), np.array([20, 20, 16])
    inner = tuple(slice(o, o + s) for o, s in zip(origin, shape))
    kept, box = reaching(region, inner)
    touching = set(np.unique(lab[inner])) - {0}
    assert set(np.unique(lab[kept])) - {0} == touching and 0 < len(touching) < n  # some components dropped
    assert all(b.start <= s.start and b.stop >= s.stop for b, s in zip(box, inner))
    outside = np.ones(region.shape, bool)
    outside[box] = False
    assert not kept[outside].any()
    markers = np.zeros(region.shape, np.uint32)
    markers[tuple(peaks.T)] = np.arange(1, n + 1)
    ref = watershed(-sq.astype(np.float64), markers, mask=region)[inner]
    got = _block_watershed(region.copy(), lo, origin, shape, peaks)
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=3), st.lists(st.integers(1, 9), min_size=1, max_size=3),
       st.lists(st.integers(1, 9), min_size=1, max_size=3), st.integers(0, 6))
def test_haloed_blocks_tile_the_volume(cz, cy, cx, halo):
    """The owned parts tile the volume once; each haloed box is the owned part grown by the halo, clipped."""
    from picket_dask.chunking import haloed_blocks

    chunks = (tuple(cz), tuple(cy), tuple(cx))
    shape = tuple(sum(c) for c in chunks)
    seen = np.zeros(shape, int)
    blocks = list(haloed_blocks(chunks, halo))
    assert [hb.index for hb in blocks] == list(range(len(blocks)))
    for hb in blocks:
        box = np.zeros(shape, bool)
        box[hb.slices] = True
        own = np.zeros(shape, bool)
        own[tuple(slice(int(o), int(e)) for o, e in zip(hb.origin, hb.end))] = True
        seen += own
        grown = ndi.binary_dilation(own, np.ones((3, 3, 3), bool), iterations=halo) if halo else own
        bounds = np.zeros(shape, bool)  # the dilation's bounding box: what the haloed box must be
        idx = np.argwhere(grown)
        bounds[tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))] = True
        assert (box == bounds).all()
        assert box[hb.slices][hb.interior].all() and own[hb.slices][hb.interior].all()
        assert own[hb.slices][hb.interior].sum() == own.sum()
    assert (seen == 1).all()
