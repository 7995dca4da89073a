"""Context masks (gold), the particle-size prior, per-pick scores, and their end-to-end effect."""

import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest

from picket_dask.localize.context import extreme_density
from picket_dask.localize.score import instance_means_and_background, score_instances
from picket_dask.localize.size_prior import equivalent_diameter_A, min_distance_vox, size_keep


def test_equivalent_diameter_and_prior():
    vox = np.pi / 6 * np.array([1.0, 6.0, 40.0]) ** 3  # spheres of 1, 6 and 40 voxels across
    assert np.allclose(equivalent_diameter_A(vox, 10.0), [10.0, 60.0, 400.0])
    extent = np.array([[1, 1, 1], [6, 6, 6], [40, 40, 40]])
    assert size_keep(vox, extent, 10.0, (60.0, 400.0)).tolist() == [False, True, True]
    thin_long = size_keep(np.array([500.0]), np.array([[3, 3, 70]]), 10.0, (60.0, 400.0))
    assert not thin_long[0]  # 700 A long: a filament or a membrane piece, not a particle
    assert min_distance_vox((60.0, 400.0), 10.0) == 6


def test_scores_rank_dense_blobs_first(rng):
    shape = (32, 48, 48)
    image = rng.normal(size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint32)
    labels[5:10, 5:10, 5:10] = 1     # dense particle: -1.5 (particles darker than the ice)
    labels[20:24, 20:24, 20:24] = 2  # faint particle: -0.3
    labels[10:11, 30:31, 30:32] = 3  # speck of noise
    image[labels == 1] -= 1.5
    image[labels == 2] -= 0.3
    lab = da.from_array(labels, chunks=16)
    img = da.from_array(image, chunks=16)
    ids = np.array([1, 2, 3])
    counts = np.bincount(labels.ravel())[1:]
    means, mu, sd = instance_means_and_background(lab, img, ids, counts, lab == 0)
    assert np.allclose(means, [image[labels == i].mean() for i in ids], atol=1e-5)
    assert mu == pytest.approx(image[labels == 0].mean(), abs=1e-5) and sd == pytest.approx(image[labels == 0].std(), rel=1e-4)
    sc = score_instances(means, counts, mu, sd)
    assert sc.polarity == -1 and sc.score[0] > sc.score[1] > sc.score[2] - 3 and sc.score[0] > 10


def test_gold_masked_particles_kept(rng):
    shape = (32, 64, 64)
    vol = rng.normal(size=shape).astype(np.float32)
    zz, yy, xx = np.ogrid[:32, :64, :64]
    particle = (zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 16
    gold = (zz - 16) ** 2 + (yy - 45) ** 2 + (xx - 45) ** 2 <= 9
    vol[particle] -= 3.0   # protein: a few noise SDs after the blur
    vol[gold] -= 60.0      # gold: an order of magnitude denser
    image = da.from_array(vol, chunks=16)
    inside = da.ones(shape, chunks=16, dtype=bool)
    ctx = extreme_density(image, 10.0, inside, margin_A=30.0)
    mask = ctx.labels.compute() > 0
    assert mask[16, 45, 45] and mask[16, 45, 49]  # the bead and its rim (margin 3 voxels)
    assert not mask[particle].any()
    assert mask.mean() < 0.05
    # chunked == whole-volume
    whole = extreme_density(da.from_array(vol, chunks=64), 10.0, da.ones(shape, chunks=64, dtype=bool), margin_A=30.0)
    assert (whole.labels.compute() == ctx.labels.compute()).all()
    # a margin wider than the chunks and than the 10-slice axis (60 A at 5 A voxels: 12): the same mask as whole
    thin = vol[11:21]
    small = extreme_density(da.from_array(thin, chunks=(10, 8, 8)), 5.0, da.ones(thin.shape, chunks=8, dtype=bool), margin_A=60.0)
    one = extreme_density(da.from_array(thin, chunks=64), 5.0, da.ones(thin.shape, chunks=64, dtype=bool), margin_A=60.0)
    assert small.labels.compute().any() and (small.labels.compute() == one.labels.compute()).all()


@pytest.mark.slow
def test_defaults_and_reference_end_to_end(tmp_path):
    """Realistic tiny scene: the default preset finds the slab, records it, scores and sorts the picks,
    and writes every format with the score; the reference preset writes none of that."""
    from picket_dask.simulate import simulate
    from picket_dask.workflows import run

    files = simulate(tmp_path / "sim", "tiny", seed=5)
    res = run(files["tomogram"], tmp_path / "out", ["gabor-gmm-cc"], chunks=32, max_fit_voxels=20_000)[0]
    doc = json.loads(res.run_json.read_text())
    assert doc["config"]["preset"] == "default" and "lamella" in doc and doc["context"]["mode"] == "auto"
    df = pd.read_csv(res.picks["gabor-gmm-cc"]["csv"], comment="#")
    assert {"score", "contrast"} <= set(df.columns)
    assert (np.diff(df.score.to_numpy()) <= 0).all()
    star = open(res.picks["gabor-gmm-cc"]["star"]).read()
    assert "rlnAutopickFigureOfMerit" in star
    inst = json.loads((res.image / "labels" / "instances-gabor-gmm-cc" / ".zattrs").read_text())["picket_dask"]
    assert inst["duplicates"]["distance_vox"] == 6.0  # the smallest particle's diameter, 60 A at 10 A voxels
    assert inst["params"]["face_layer"] == "auto" and inst["face_layer"] >= 0
    z, y, x = df[["z", "y", "x"]].to_numpy().T  # no pick left on the first labelled layer (2 voxels in) of any face
    assert (np.minimum.reduce([z, y, x, 47 - z, 95 - y, 95 - x]) >= 3).all()
    ref = run(files["tomogram"], tmp_path / "ref", ["gabor-gmm-cc"], chunks=32, max_fit_voxels=20_000, preset="reference")[0]
    rdoc = json.loads(ref.run_json.read_text())
    assert rdoc["config"]["preset"] == "reference" and rdoc["context"] == {"mode": "off"} and not rdoc["lamella"]["found"]
    sem = json.loads((ref.image / "labels" / "semantic-gabor-gmm" / ".zattrs").read_text())["picket_dask"]
    assert sem["params"]["lamella"] == "off"
    rinst = json.loads((ref.image / "labels" / "instances-gabor-gmm-cc" / ".zattrs").read_text())["picket_dask"]
    assert "duplicates" not in rinst and rinst["params"]["merge_close"] == "off"
    assert "face_layer" not in rinst and rinst["params"]["face_layer"] == "off"
    # the blur: matched to the size prior's smallest particle by default (60 A at 10 A voxels), PickET's 2 voxels in the reference
    assert doc["blur_sigma_vox"] == 1.7321 and rdoc["blur_sigma_vox"] == 2.0 and sem["params"]["sigma_vox"] == 2.0
    dsem = json.loads((res.image / "labels" / "semantic-gabor-gmm" / ".zattrs").read_text())["picket_dask"]
    assert dsem["params"]["sigma_vox"] == 1.7321


def test_pr_curve_counts_each_truth_once():
    from picket_dask.evaluate import pr_curve

    truth = np.array([[10, 10, 10], [40, 40, 40]], float)
    picks = np.array([[10, 10, 11], [10, 11, 10], [80, 80, 80], [40, 40, 41]], float)
    c = pr_curve(picks, np.array([4.0, 3.0, 2.0, 1.0]), truth, 3)
    assert c.precision.round(3).tolist() == [1.0, 1.0, 0.667, 0.75]
    assert c.recall.tolist() == [0.5, 0.5, 0.5, 1.0]
    assert c.f1.idxmax() == 3 and c.score.tolist() == [4.0, 3.0, 2.0, 1.0]


def _bilayer_and_spheres(rng, shape=(48, 96, 96)):
    """10 A voxels: a tilted bilayer through the box (two dense leaflets 40 A apart) and three dense
    spheres of 60-160 A diameter away from it, in noise of SD 1."""
    vol = rng.normal(size=shape).astype(np.float32)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    dist = (xx - 0.4 * yy - 0.3 * zz - 20) / np.sqrt(1 + 0.16 + 0.09)  # signed distance to the mid-plane, voxels
    leaflets = np.broadcast_to((np.abs(np.abs(dist) - 2) <= 0.75), shape)
    vol[leaflets] -= 1.5
    centres = [(24, 30, 75, 8), (12, 75, 80, 5), (36, 20, 80, 3)]  # z, y, x, radius (voxels)
    for z, y, x, r in centres:
        vol[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r] -= 1.5
    return vol, np.broadcast_to(np.abs(dist) <= 2, shape), centres


def test_membrane_sheet_found_spheres_not(rng):
    from picket_dask.localize.membranes import membrane_mask, planarity

    vol, sheet, centres = _bilayer_and_spheres(rng)
    inside = da.ones(tuple(s // 2 for s in vol.shape), chunks=24, dtype=bool)
    mask, rep = membrane_mask(da.from_array(vol, chunks=32), 10.0, inside, 2, min_extent_A=400.0)
    m = mask.compute()
    assert rep["membranes"] == 1 and rep["seed_level"] > rep["grow_level"] > rep["median"]
    assert m[sheet[::2, ::2, ::2]].mean() > 0.8          # the bilayer, on the 20 A grid
    for z, y, x, _ in centres:                            # the spheres' centres stay free
        assert not m[z // 2, y // 2, x // 2]
    assert m.mean() < 0.3
    # chunked == whole volume
    whole = planarity(da.from_array(vol, chunks=96), 10.0, 2).compute()
    np.testing.assert_allclose(planarity(da.from_array(vol, chunks=32), 10.0, 2).compute(), whole, rtol=1e-4,
                               atol=1e-6 * whole.max())


def test_sheet_test_needs_length_and_area():
    from picket_dask.localize.membranes import is_sheet

    # 20 A voxels, d_max 400 A: a 1500-voxel patch 60 voxels long is a sheet; a 300-voxel chain as long
    # (touching particles, a filament) and a 1500-voxel blob 15 voxels across are not
    got = is_sheet(np.array([1500, 300, 1500]), np.array([60, 60, 15]), 20.0, 400.0)
    assert got.tolist() == [True, False, False]


def test_centres_near_context():
    from picket_dask.localize.context import centres_near

    mask = np.zeros((20, 24, 24), bool)
    mask[10, :, 5:8] = True  # a masked sheet piece, split over chunks
    cents = np.array([[10, 12, 10.0], [10, 12, 11.0], [3, 12, 6.0], [10, 12, 20.0]])
    got = centres_near(cents, da.from_array(mask, chunks=8), 3)
    assert got.tolist() == [True, False, False, False]  # 3 voxels off, 4 off, 7 above, far
    assert centres_near(np.zeros((0, 3)), da.from_array(mask, chunks=8), 3).shape == (0,)


@pytest.mark.parametrize("radius,chunks", [(0, 8), (1, 7), (3, 8), (5, (5, 9, 16))])
def test_points_near_equals_grown_mask(rng, radius, chunks):
    """The point lookup equals the whole mask grown per chunk (the former centres_near) and a
    whole-volume dilation, points on the volume's and the chunks' faces included."""
    from scipy import ndimage as ndi

    from picket_dask.localize.morphology import ball, grown, points_near

    shape = (19, 23, 26)
    mask = rng.random(shape) < 0.004
    pts = np.concatenate([rng.integers(0, shape, (300, 3)), [[0, 0, 0], [18, 22, 25], [8, 7, 16], [7, 8, 15]]])
    dm = da.from_array(mask, chunks=chunks)
    old = grown(dm, radius).vindex[pts[:, 0], pts[:, 1], pts[:, 2]].compute()
    whole = mask if radius == 0 else ndi.binary_dilation(mask, structure=ball(radius))
    got = points_near(dm, pts, radius, batch=64)  # small batches: the loop over point batches is exercised
    assert got.tolist() == old.tolist() == whole[tuple(pts.T)].tolist()
    assert 0 < got.sum() < len(pts) or radius == 0
    assert points_near(dm, np.zeros((0, 3), int), radius).shape == (0,)


@pytest.mark.parametrize("radius,chunks", [(2, 6), (7, (5, 9, 16)), (30, 8)])
def test_grown_equals_whole_dilation_even_past_the_volume(rng, radius, chunks):
    """The chunked dilation equals scipy's on the whole volume, also for a radius longer than the volume
    (a large particle diameter on a small tomogram: dask refuses a halo deeper than the array)."""
    from scipy import ndimage as ndi

    from picket_dask.localize.morphology import ball, grown

    mask = np.zeros((12, 17, 21), bool)
    mask[rng.integers(0, 12, 3), rng.integers(0, 17, 3), rng.integers(0, 21, 3)] = True
    got = grown(da.from_array(mask, chunks=chunks), radius).compute()
    want = ndi.binary_dilation(mask, structure=ball(radius))
    assert got.tolist() == want.tolist()
    assert (0 < want.sum() < want.size) or radius == 30


@pytest.mark.parametrize("radius", [0, 1, 3, 4])
def test_ball_hits_both_ways(rng, radius):
    """Few points: the ball's voxels looked up; many points: a distance transform; both equal a dilation."""
    from scipy import ndimage as ndi

    from picket_dask.localize.morphology import _ball_hits, ball

    region = rng.random((9, 11, 13)) < 0.01
    region[4, 5, 6] = True
    grown = np.pad(ndi.binary_dilation(np.pad(region, 2 * radius), structure=ball(radius)) if radius else
                   np.pad(region, 2 * radius), 0)
    pts = rng.integers(-radius, np.array(region.shape) + radius, (4000, 3))  # up to a radius outside the region
    want = grown[tuple((pts + 2 * radius).T)]
    many = _ball_hits(region, pts, radius, 1 << 22)  # 4000 x K > padded voxels: the distance transform
    few = np.concatenate([_ball_hits(region, pts[i:i + 1], radius, 1 << 22) for i in range(0, 4000, 40)])
    assert many.tolist() == want.tolist() and few.tolist() == want[::40].tolist()
    assert 0 < want.sum() < len(want)


def test_block_stats_bincount_equals_sorting(rng):
    """Centroid sums, counts and boxes per block: the bincount path equals the sorting path."""
    from picket_dask.localize.centroids import _block_stats, _block_stats_sorted

    for ids_from, n_ids in ((1, 30), (10**7, 500), (1, 10**7)):  # the last: ids spread widely, sorting path
        block = np.where(rng.random((13, 17, 19)) < 0.3, rng.integers(ids_from, ids_from + n_ids, (13, 17, 19)), 0)
        block = block.astype(np.uint32)
        origin = np.array([5, 200, 3000])
        got, ref = _block_stats(block, origin), _block_stats_sorted(block, origin)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)
    assert _block_stats(np.zeros((3, 4, 5), np.uint32), origin) is None


def test_closed_form_hessian_eigenvalues_equal_eigvalsh():
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    from picket_dask.localize.hessian import symmetric_eigvals

    x = np.random.default_rng(0).normal(size=(12, 14, 16))
    h = hessian_matrix(x, sigma=1.5, order="rc", use_gaussian_derivatives=False)
    h[1][0, 0, 0] = h[2][0, 0, 0] = h[4][0, 0, 0] = 0.0  # a diagonal matrix ...
    h[0][0, 0, 0] = h[3][0, 0, 0] = h[5][0, 0, 0] = 0.25  # ... with a triple eigenvalue (p = 0)
    scale = np.abs(np.stack(h)).max()
    for got, ref in zip(symmetric_eigvals(h), hessian_matrix_eigvals(h)):
        np.testing.assert_allclose(got, ref, atol=1e-9 * scale)


def test_face_layer_is_the_first_labelled_layer_at_any_face():
    """Centroids less than one voxel inside the first labelled layer (2 voxels from a face) at any of the six
    faces are the blur's face artefacts; one voxel further in, or a particle cut by a face, is not."""
    from picket_dask.localize.faces import on_face_layer, touches_faces

    shape = (40, 60, 80)
    c = np.array([[20, 30, 2.0], [20, 30, 2.9], [20, 30, 3.0], [20, 30, 76.0], [20, 30, 77.0],
                  [2.4, 30, 40], [37.5, 30, 40], [20, 57.2, 40], [20, 56.0, 40], [20, 30, 40]])
    assert on_face_layer(c, shape, 2).tolist() == [True, True, False, False, True, True, True, True, False, False]
    assert on_face_layer(np.zeros((0, 3)), shape, 2).shape == (0,)
    lo, hi = np.array([[10, 2, 30], [10, 20, 30]]), np.array([[12, 8, 35], [12, 25, 35]])
    assert touches_faces(lo, hi, shape, 2).tolist() == [True, False]
