"""Step 1: preprocessing equals scipy, chunked labels equal unchunked, agreement with the method."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi

from picket_dask.config import SegmentParams
from picket_dask.segment.apply import semantic_labels
from picket_dask.segment.features import fft_features_from_neighborhoods, gabor_bank, select_gabor
from picket_dask.segment.neighborhoods import gather_neighborhoods, sample_voxels
from picket_dask.segment.preprocess import blur_sigma_vox, preprocess, with_blur_scale

from conftest import SIX_PAIRS, fit_six, noisy_phantom

@pytest.fixture(scope="module")
def fitted():
    return fit_six()


def test_blur_and_scaling_equal_scipy():
    vol = noisy_phantom((20, 25, 30))
    scaled, lo, hi = preprocess(da.from_array(vol, chunks=(9, 11, 13)))
    ref = ndi.gaussian_filter(vol, 2.0, mode="reflect")
    np.testing.assert_array_equal(scaled.compute(), (ref - ref.min()) / (ref.max() - ref.min()))


def test_blur_scale_follows_the_size_prior():
    """sigma = smallest radius / sqrt(3) in voxels, clipped to 1-4; no prior: the reference's 2 voxels;
    an explicit sigma wins; the reference preset and the run options set it."""
    from picket_dask.cli import _config, build_parser
    from picket_dask.config import RunConfig

    assert blur_sigma_vox((60.0, 400.0), 10.0) == pytest.approx(30 / np.sqrt(3) / 10, abs=1e-4)
    assert blur_sigma_vox((60.0, 400.0), 7.0) == pytest.approx(30 / np.sqrt(3) / 7, abs=1e-4)  # the same 17 A
    assert blur_sigma_vox((60.0, 400.0), 1.0) == 4.0 and blur_sigma_vox((60.0, 400.0), 40.0) == 1.0  # clipped
    assert blur_sigma_vox(None, 10.0) == 2.0
    assert with_blur_scale(SegmentParams(), (100.0, 400.0), (10.0, 8.0, 8.0)).sigma_vox == pytest.approx(2.8868)
    assert with_blur_scale(SegmentParams(sigma_vox=3.0), (60.0, 400.0), (10.0,) * 3).sigma_vox == 3.0
    assert RunConfig(preset="reference").segment.sigma_vox == 2.0 and RunConfig().segment.sigma_vox is None
    args = build_parser().parse_args(["run", "t.mrc", "--sigma-vox", "1.5"])
    assert _config(args).segment.sigma_vox == 1.5


def test_sampled_neighborhoods_are_the_windows(fitted):
    _, scaled, sample, _ = fitted
    win = sliding_window_view(scaled, (5, 5, 5))
    z, y, x = (sample.coords - 2).T
    np.testing.assert_array_equal(sample.neighborhoods, win[z, y, x].reshape(len(z), 125))


def test_sample_respects_slab_and_seed():
    c1 = sample_voxels((40, 30, 30), (10, 20), 500, 7)
    c2 = sample_voxels((40, 30, 30), (10, 20), 500, 7)
    np.testing.assert_array_equal(c1, c2)
    assert c1[:, 0].min() >= 10 and c1[:, 0].max() < 20
    assert c1[:, 1:].min() >= 2 and c1[:, 1:].max() < 28


def test_compact_fft_distances_equal_full():
    from scipy.spatial.distance import pdist

    n = np.random.default_rng(0).random((30, 125))
    full = np.abs(np.fft.fftshift(np.fft.fftn(n.reshape(30, 5, 5, 5), axes=(1, 2, 3)), axes=(1, 2, 3))).reshape(30, -1)
    np.testing.assert_allclose(pdist(fft_features_from_neighborhoods(n)), pdist(full), rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fft_features_equal_rfftn(dtype):
    """The matrix-product DFT gives rfftn's unique magnitudes (weighted) to rounding, across slices."""
    from picket_dask.segment.features import FFT_INDEX, FFT_WEIGHTS

    n = (np.random.default_rng(1).normal(size=(1000, 125)) * 50 + 3).astype(dtype)
    spec = np.abs(np.fft.rfftn(n.astype(np.float64).reshape(-1, 5, 5, 5), axes=(1, 2, 3))).reshape(len(n), -1)
    ref = spec[:, FFT_INDEX] * FFT_WEIGHTS
    got = fft_features_from_neighborhoods(n, rows=96)  # 11 slices, the last one partial
    assert got.shape == (1000, 63) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13 * np.abs(ref).max())


def test_gabor_selection_by_std_matches_direct():
    n = np.random.default_rng(0).random((2000, 125)).astype(np.float32)
    direct = np.argsort(np.std(n.astype(np.float64) @ gabor_bank().T, axis=0))[-64:]
    assert set(select_gabor(n, 64)) == set(direct)


def _oracle_labels(scaled, sample, mode, clusterer, gabor_idx):
    """The straightforward method: full float64 features of every voxel, scikit-learn fit + predict."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    def feats(neigh):
        if mode == "intensities":
            return neigh.astype(np.float64)
        if mode == "ffts":
            return np.abs(np.fft.fftn(neigh.astype(np.float64).reshape(-1, 5, 5, 5), axes=(1, 2, 3))).reshape(len(neigh), -1)
        return neigh.astype(np.float64) @ gabor_bank()[gabor_idx].T

    model = (KMeans(n_clusters=2, random_state=42) if clusterer == "kmeans"
             else GaussianMixture(n_components=2, covariance_type="full", random_state=42))
    model.fit(feats(sample.neighborhoods))
    win = sliding_window_view(scaled, (5, 5, 5))
    return model.predict(feats(win.reshape(-1, 125))).reshape(win.shape[:3])


@pytest.mark.parametrize("idx", range(len(SIX_PAIRS)), ids=[f"{f}-{c}" for f, c in SIX_PAIRS])
def test_agreement_with_the_method(fitted, idx):
    vol, scaled, sample, segs = fitted
    seg = segs[idx]
    ours = semantic_labels(da.from_array(scaled, chunks=(11, 13, 17)), [seg.model.decision])[0].compute()[2:-2, 2:-2, 2:-2]
    ref = _oracle_labels(scaled, sample, seg.features, seg.clusterer, seg.gabor_idx)
    # cluster ids may be numbered differently by an equivalent model; compare up to a swap
    agree = max((ours == ref).mean(), (ours == 1 - ref).mean())
    assert agree >= 0.999, f"{seg.name}: {agree:.5f}"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cz=st.integers(3, 24), cy=st.integers(3, 30), cx=st.integers(3, 34))
def test_chunked_equals_unchunked(fitted, cz, cy, cx):
    _, scaled, _, segs = fitted
    decisions = [s.model.decision for s in segs]
    whole = semantic_labels(da.from_array(scaled, chunks=scaled.shape), decisions).compute()
    chunked = semantic_labels(da.from_array(scaled, chunks=(cz, cy, cx)), decisions).compute()
    np.testing.assert_array_equal(whole, chunked)
    border = np.ones(scaled.shape, bool)
    border[2:-2, 2:-2, 2:-2] = False
    assert (whole[:, border] == 255).all() and (whole[:, ~border] <= 1).all()


def test_segment_tomogram_writes_oriented_labels(tmp_path, sim_tiny):
    from picket_dask.io.omezarr import open_labels
    from picket_dask.io.tomogram import convert, open_tomogram
    from picket_dask.segment.semantic import segment_tomogram

    img = convert(sim_tiny["tomogram"], tmp_path / "t.zarr", chunks=32)
    t = open_tomogram(img, 32)
    segs, timings = segment_tomogram(img, t.data, t.voxel_size, [("gabor", "kmeans")], SegmentParams(max_fit_voxels=20000))
    labels, meta = open_labels(img, "semantic-gabor-kmeans")
    lab = labels.compute()
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 255}
    assert (lab == 1).sum() < (lab == 0).sum()  # particles are the smaller cluster
    assert meta["orientation"]["mode"] == "size" and "versions" in meta and "timings_s" in meta
    assert meta["model"]["method"] == "kmeans"


def test_invert_and_auto_orientation(tmp_path, sim_tiny):
    from picket_dask.io.omezarr import open_labels
    from picket_dask.io.tomogram import convert, open_tomogram
    from picket_dask.segment.semantic import segment_tomogram

    img = convert(sim_tiny["tomogram"], tmp_path / "t.zarr", chunks=32)
    t = open_tomogram(img, 32)
    p = SegmentParams(max_fit_voxels=20000)
    segment_tomogram(img, t.data, t.voxel_size, [("intensities", "kmeans")], p)
    size = open_labels(img, "semantic-intensities-kmeans")[0].compute()
    segment_tomogram(img, t.data, t.voxel_size, [("intensities", "kmeans")], p.model_copy(update={"orientation": "invert"}))
    inv = open_labels(img, "semantic-intensities-kmeans")[0].compute()
    inner = size != 255
    np.testing.assert_array_equal(inv[inner], 1 - size[inner])
    segs, _ = segment_tomogram(img, t.data, t.voxel_size, [("intensities", "kmeans")], p.model_copy(update={"orientation": "auto"}))
    assert segs[0].orientation["mode"] == "auto" and "reason" in segs[0].orientation
    auto = open_labels(img, "semantic-intensities-kmeans")[0].compute()
    np.testing.assert_array_equal(auto, size)  # on this volume the blobs are the smaller cluster too


def test_constant_volume_is_a_clear_error():
    from picket_dask.errors import PicketError

    with pytest.raises(PicketError, match="constant"):
        preprocess(da.zeros((20, 20, 20), chunks=10))


def test_dask_ml_kmeans_backend_agrees_with_sklearn(fitted):
    from picket_dask.segment.clustering import fit, predict

    _, _, sample, _ = fitted
    x = sample.neighborhoods.astype(np.float64)
    a = predict(fit("kmeans", x.copy(), None, "neighborhood", 42, "sklearn").decision, x)
    b = predict(fit("kmeans", x.copy(), None, "neighborhood", 42, "dask-ml").decision, x)
    # not the reference's model (k-means|| init, its own stopping rule): close, not identical (98.9 % here)
    assert max((a == b).mean(), (a == 1 - b).mean()) >= 0.98


@pytest.mark.parametrize("n,d,rows", [(6000, 5, 1000), (20000, 24, 4096), (3001, 64, 512), (50001, 1, 256)])
def test_streamed_gmm_equals_scikit_learn(n, d, rows):
    """The row-sliced EM gives scikit-learn's GaussianMixture: same iterations, parameters to rounding."""
    from sklearn.mixture import GaussianMixture

    from picket_dask.segment.gmm_em import fit_gaussian_mixture

    rng = np.random.default_rng(d)
    x = np.concatenate([rng.normal(0, 1, (n // 3, d)), rng.normal(0.8, 1.5, (n - n // 3, d))]) @ rng.normal(size=(d, d))
    ref = GaussianMixture(2, covariance_type="full", random_state=42).fit(x)
    ours = fit_gaussian_mixture(x, 2, 42, rows=rows)
    assert ours["n_iter"] == ref.n_iter_ and ours["converged"] == ref.converged_
    np.testing.assert_allclose(ours["weights"], ref.weights_, rtol=1e-9)
    np.testing.assert_allclose(ours["means"], ref.means_, rtol=1e-8, atol=1e-10 * np.abs(ref.means_).max())
    scale = np.abs(ref.precisions_cholesky_).max()
    np.testing.assert_allclose(ours["precisions_cholesky"], ref.precisions_cholesky_, rtol=1e-7, atol=1e-10 * scale)
    assert ours["lower_bound"] == pytest.approx(ref.lower_bound_, rel=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_gmm_split_over_threads_equals_one_thread(k):
    """The EM's passes split over threads (each range summed, ranges added in order) give one
    thread's fit to rounding: same iterations, same parameters; from k-means labels and warm-started."""
    from picket_dask.segment.gmm_em import fit_gaussian_mixture

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0, 1, (9000, 7)), rng.normal(0.9, 1.4, (6001, 7))]) @ rng.normal(size=(7, 7))
    one = fit_gaussian_mixture(x.copy(), k, 42, rows=1000)
    start = fit_gaussian_mixture(x[::5].copy(), k, 42, rows=1000)
    one_warm = fit_gaussian_mixture(x.copy(), k, 42, rows=1000, init_params=start)
    one_1d = fit_gaussian_mixture(x[:, :1].copy(), k, 42, rows=100)  # one feature: 3,200-row slices
    for threads in (2, 3):
        split_1d = fit_gaussian_mixture(x[:, :1].copy(), k, 42, rows=100, threads=threads)
        assert split_1d["n_iter"] == one_1d["n_iter"]
        for key in ("weights", "means", "precisions_cholesky"):
            np.testing.assert_allclose(split_1d[key], one_1d[key], rtol=1e-9, atol=1e-12)
        split = fit_gaussian_mixture(x.copy(), k, 42, rows=1000, threads=threads)
        warm = fit_gaussian_mixture(x.copy(), k, 42, rows=1000, threads=threads, init_params=start)
        for a, b in ((split, one), (warm, one_warm)):
            assert a["n_iter"] == b["n_iter"] and a["converged"] == b["converged"]
            for key in ("weights", "means", "precisions_cholesky"):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-12)
            assert a["lower_bound"] == pytest.approx(b["lower_bound"], rel=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_one_feature_gmm_and_posterior_equal_scikit_learn(k):
    """One feature (gmm_em's (k, rows) path, the mixture cut's fit): scikit-learn's fit and predict_proba."""
    from sklearn.mixture import GaussianMixture

    from picket_dask.segment.gmm_em import fit_gaussian_mixture, posterior

    rng = np.random.default_rng(k)
    x = np.concatenate([rng.normal(0, 1, 30000), rng.normal(2.5, 0.6, 4000), rng.normal(-4, 2, 6000)])[rng.permutation(40000)]
    ref = GaussianMixture(k, random_state=7).fit(x[:, None])
    ours = fit_gaussian_mixture(x[:, None].copy(), k, 7, rows=300)
    assert ours["n_iter"] == ref.n_iter_ and ours["converged"] == ref.converged_
    np.testing.assert_allclose(ours["weights"], ref.weights_, rtol=1e-9)
    np.testing.assert_allclose(ours["means"], ref.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours["precisions_cholesky"], ref.precisions_cholesky_, rtol=1e-8)
    assert ours["lower_bound"] == pytest.approx(ref.lower_bound_, rel=1e-12)
    grid = np.linspace(-10, 8, 2001)[:, None]
    np.testing.assert_allclose(posterior(ours, grid), ref.predict_proba(grid), rtol=1e-8, atol=1e-12)


def test_mixture_cut_equals_the_scikit_learn_cut():
    """mixture_cut's cut equals the one from scikit-learn's GaussianMixture and predict_proba."""
    from sklearn.mixture import GaussianMixture

    from picket_dask.segment.kmeans_cut import mixture_cut

    rng = np.random.default_rng(5)
    for tail in (0.04, 0.3):
        proj = np.concatenate([rng.normal(-1, 1, 60000), rng.normal(3, 1.2, int(60000 * tail))])[::-1].copy()
        t, report = mixture_cut(proj, 42)
        s = proj if report["small_cluster"] == 1 else -proj
        g = GaussianMixture(2, random_state=42).fit(s[:, None])
        part = int(np.argmax(g.means_.ravel()))
        grid = np.linspace(float(g.means_.ravel()[1 - part]), float(s.max()), 4001)
        hit = np.flatnonzero(g.predict_proba(grid[:, None])[:, part] >= 0.5)
        ref = float(grid[hit[0]]) if len(hit) else 0.0
        assert t == pytest.approx(max(ref, 0.0), rel=1e-12, abs=0.0)


def test_streamed_gmm_fits_repeated_points():
    from picket_dask.segment.gmm_em import fit_gaussian_mixture

    x = np.zeros((100, 3))
    x[50:, 0] = 1.0  # two points repeated: every covariance is reg_covar * I, still positive definite
    assert fit_gaussian_mixture(x, 2, 42)["converged"]


def test_sample_counts_equal_predictions_on_neighborhoods(fitted):
    """k-means counts taken on features (G unfolded) equal the folded decision on the neighborhoods;
    a mixture records none (its weights are its sample shares; no extra pass over the sample)."""
    from picket_dask.segment.clustering import predict

    _, _, sample, segs = fitted
    assert all(seg.model.sample_counts == [] for seg in segs if seg.clusterer == "gmm")
    for seg in (s for s in segs if s.clusterer == "kmeans"):
        x = sample.neighborhoods.astype(np.float64)
        if seg.features == "ffts":
            x = fft_features_from_neighborhoods(sample.neighborhoods)
        assert seg.model.sample_counts == np.bincount(predict(seg.model.decision, x), minlength=2).tolist(), seg.name


def test_sample_gathered_from_the_store_equals_overlap(tmp_path):
    """Tasks reading chunk + halo from the stored blur give the overlap path's neighborhoods."""
    vol = noisy_phantom((20, 26, 30), seed=3)
    data = da.from_array(vol, chunks=(7, 9, 11))
    scaled, lo, hi = preprocess(data, store=str(tmp_path / "blur"))
    coords = sample_voxels(vol.shape, None, 500, 0)
    a = gather_neighborhoods(scaled, coords)
    b = gather_neighborhoods(scaled, coords, stored=(str(tmp_path / "blur"), lo, hi))
    np.testing.assert_array_equal(a, b)


def test_gmm_started_from_the_kmeans_fit_equals_its_own_init():
    """The k-means clusterer's labels are the mixture's k-means initialisation: reusing them changes nothing."""
    from picket_dask.segment.clustering import fit_kmeans
    from picket_dask.segment.gmm_em import fit_gaussian_mixture

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 1, (1500, 6)), rng.normal(1.2, 0.7, (2500, 6))])
    own = fit_gaussian_mixture(x.copy(), 2, 42)
    _, labels = fit_kmeans(x.copy(), 42)
    reused = fit_gaussian_mixture(x.copy(), 2, 42, init_labels=labels)
    assert own["n_iter"] == reused["n_iter"]
    for key in ("weights", "means", "precisions_cholesky"):
        np.testing.assert_array_equal(own[key], reused[key])


def test_sample_coordinates_reach_the_cluster_by_reference(tmp_path):
    """On a distributed cluster the fitting sample's coordinates are scattered once, not copied into
    the task graph (1M voxels made `picket-dask demo` print "Sending large graph of size 22.89 MiB")."""
    import warnings

    import dask
    from distributed import Client, LocalCluster

    vol = noisy_phantom((20, 26, 30), seed=3)
    scaled, lo, hi = preprocess(da.from_array(vol, chunks=(7, 9, 11)), store=str(tmp_path / "blur"))
    coords = sample_voxels(vol.shape, None, None, 0)  # every interior voxel: 9,152 coordinates, 220 kB
    stored = (str(tmp_path / "blur"), lo, hi)
    expected = gather_neighborhoods(scaled, coords, stored=stored)
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "100kB"}), \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = gather_neighborhoods(scaled, coords, stored=stored)  # 4.6 kiB sent; 219 kiB with the coordinates inside
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]
    np.testing.assert_array_equal(got, expected)


def _noise_with_tail(n=20000, d=6, tail=0.05, seed=0):
    """A Gaussian noise cloud (d features) and a thin tail of 'particles' shifted along one axis."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    is_tail = rng.random(n) < tail
    x[is_tail, 0] += rng.normal(4.0, 1.0, is_tail.sum())
    return x, is_tail


def test_kmeans_mixture_cut_shrinks_a_noise_split_to_the_tail():
    """2-means halves a noise cloud with a thin tail; the mixture cut keeps the tail (sparse sample)."""
    from picket_dask.segment.clustering import fit, predict

    x, is_tail = _noise_with_tail()
    mid = fit("kmeans", x.copy(), None, "neighborhood", 42, kmeans_cut="midpoint")
    cut = fit("kmeans", x.copy(), None, "neighborhood", 42, kmeans_cut="mixture")
    small = lambda lab: lab if lab.mean() < 0.5 else 1 - lab  # noqa: E731
    a, b = small(predict(mid.decision, x)).astype(bool), small(predict(cut.decision, x)).astype(bool)
    assert a.mean() > 0.2 and is_tail[a].mean() < 0.3  # k-means: mostly noise
    assert 0.02 < b.mean() < 0.1 and is_tail[b].mean() > 0.6 and (b & ~a).sum() == 0  # same axis, moved in
    assert "mixture boundary" in cut.params["mixture_cut"]["cut"] and mid.params["offset"] == 0.0
    assert cut.sample_counts == np.bincount(predict(cut.decision, x), minlength=2).tolist()


def test_kmeans_mixture_cut_keeps_two_real_clusters():
    """Two comparable, separated populations: the cut stays between them (each keeps its own label),
    moved from k-means' midpoint only towards the Bayes boundary of the unequal mixture."""
    from picket_dask.segment.clustering import fit, predict

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (8000, 4)), rng.normal(0, 1, (4000, 4)) + [5, 0, 0, 0]])
    truth = np.r_[np.zeros(8000, int), np.ones(4000, int)]
    mid = fit("kmeans", x.copy(), None, "neighborhood", 42, kmeans_cut="midpoint")
    cut = fit("kmeans", x.copy(), None, "neighborhood", 42, kmeans_cut="mixture")
    a, b = predict(mid.decision, x), predict(cut.decision, x)
    a, b = (a if a[-1] == 1 else 1 - a), (b if b[-1] == 1 else 1 - b)
    assert (a == truth).mean() > 0.99 and (b == truth).mean() >= (a == truth).mean() - 1e-3
    assert (a != b).mean() < 0.01 and cut.params["offset"] >= 0.0


def test_kmeans_mixture_cut_stands_when_the_mixture_gives_more():
    """When the mixture's particle side reaches beyond the k-means boundary (a wide smaller population),
    the k-means boundary stands."""
    from picket_dask.segment.kmeans_cut import mixture_cut

    rng = np.random.default_rng(2)
    proj = np.concatenate([rng.normal(-3, 0.5, 50000), rng.normal(2.0, 2.5, 20000)])
    t, report = mixture_cut(proj, 42)
    assert t == 0.0 and "k-means boundary" in report["cut"]


def test_mirror_cut_keeps_a_one_sided_tail_and_nothing_of_symmetric_noise():
    """The noise is symmetric about its mode, the particles a tail on one side: the mirror cut keeps the tail;
    a cloud with wide shoulders and no tail (a 2-Gaussian mixture's second component there) keeps ~nothing."""
    from picket_dask.segment.kmeans_cut import mirror_cut

    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, 200000)
    tail = rng.normal(4.0, 1.0, 6000)
    proj = np.concatenate([noise, tail]) - 0.5  # the k-means boundary a little inside the cloud, on the tail's side
    t, report = mirror_cut(proj)
    kept = proj > t
    assert "mirror boundary" in report["cut"] and 0.015 < kept.mean() < 0.04
    assert kept[200000:].mean() > 0.7 and kept[:200000].mean() < 0.01
    shoulders = np.concatenate([rng.normal(0.0, 1.0, 150000), rng.normal(0.0, 2.0, 50000)]) - 0.5
    t, report = mirror_cut(shoulders)
    assert np.mean(shoulders > t) < 0.005


def test_mixture_cut_hands_a_shoulder_fit_to_the_mirror():
    """A sparse, faint tail in a cloud with wide shoulders: the mixture's second component is the shoulders
    (mean within one noise SD), so the mirror places the cut, and keeps the tail's order of size."""
    from picket_dask.segment.kmeans_cut import MIN_SEPARATION, mixture_cut

    rng = np.random.default_rng(4)
    noise = np.concatenate([rng.normal(0.0, 1.0, 120000), rng.normal(0.0, 1.8, 60000)])
    proj = np.concatenate([noise, rng.normal(4.5, 1.0, 2000)]) - 0.3
    t, report = mixture_cut(proj, 42)
    assert report["mixture_separation"] < MIN_SEPARATION and "mirror boundary" in report["cut"]
    kept = proj > t
    assert kept.mean() < 0.03 and kept[-2000:].mean() > 0.3


def _flat_noise_with_tail(n=30000, seed=5):
    """A flat-topped noise cloud (uneven about its middle, as a background's slow swings make it) that EM from
    k-means' labels splits near its middle, and a thin tail of 'particles' (2 %) on one side."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 0] = np.where(rng.random(n) < 0.6, rng.uniform(-2.0, 0.0, n), rng.uniform(0.0, 2.0, n))
    tail = rng.random(n) < 0.02
    x[tail, 0] += 6.0
    return x, tail


@pytest.mark.parametrize("n", [30000, 60000])  # 60k: the second start is tried on a probe of 15k rows first
def test_gmm_tail_start_wins_when_more_likely(n):
    """The mixture started from the outer rows reaches a more likely fit than from k-means' labels (which
    halve the noise), and that fit's smaller cluster is the tail; the k-means start alone is the reference's."""
    from picket_dask.segment.clustering import PROBE_MIN_ROWS, PROBE_STEP, fit, predict

    x, tail = _flat_noise_with_tail(n)
    ref = fit("gmm", x.copy(), None, "neighborhood", 42, gmm_starts="kmeans")
    two = fit("gmm", x.copy(), None, "neighborhood", 42, gmm_starts="kmeans+tail")
    small = lambda lab: (lab if lab.mean() < 0.5 else 1 - lab).astype(bool)  # noqa: E731
    a, b = small(predict(ref.decision, x)), small(predict(two.decision, x))
    assert a.mean() > 0.3 and tail[a].mean() < 0.1 and "starts" not in ref.params
    report = two.params["starts"]
    assert report["kept"] == "tail" and report["tail_lower_bound"] > report["kmeans_lower_bound"]
    assert ("probe_rows" in report) == (n // PROBE_STEP >= PROBE_MIN_ROWS)
    assert report["kmeans_lower_bound"] == round(ref.params["lower_bound"], 6)
    assert 0.015 < b.mean() < 0.03 and tail[b].mean() > 0.95 and b[tail].mean() > 0.95


def test_gmm_tail_start_loses_to_kmeans_on_two_real_clusters():
    """Two comparable populations: both starts reach the same fit (within the EM's tolerance), k-means' is kept."""
    from picket_dask.segment.clustering import fit, predict

    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(0, 1, (9000, 4)), rng.normal(0, 2, (3000, 4)) + [7, 0, 0, 0]])
    ref = fit("gmm", x.copy(), None, "neighborhood", 42, gmm_starts="kmeans")
    two = fit("gmm", x.copy(), None, "neighborhood", 42, gmm_starts="kmeans+tail")
    report = two.params["starts"]
    assert abs(report["kmeans_lower_bound"] - report["tail_lower_bound"]) < 1e-3 and report["kept"] == "kmeans"
    assert (predict(ref.decision, x) == predict(two.decision, x)).mean() > 0.999


def test_tail_labels_mark_the_outer_share():
    from picket_dask.segment.clustering import TAIL_START_SHARE, tail_labels

    rng = np.random.default_rng(7)
    x = rng.normal(size=(20000, 3)) * [1.0, 5.0, 0.2]  # unequal spreads: the distance is Mahalanobis, not Euclidean
    lab = tail_labels(x)
    assert lab.dtype == np.uint8 and abs(lab.mean() - TAIL_START_SHARE) < 1e-3
    z = x / x.std(axis=0)
    d2 = (z ** 2).sum(axis=1)
    assert d2[lab == 1].min() >= np.quantile(d2, 1 - TAIL_START_SHARE) * 0.95


def test_fit_turns_are_told_on_the_console(capsys, monkeypatch):
    """A refit without the gold and a mixture kept from the outer start each get one line; a plain fit none."""
    from picket_dask import progress
    from picket_dask.segment.semantic import _note_fit

    monkeypatch.setattr(progress, "_QUIET", [False])

    _note_fit("gabor-gmm", {"extreme_class": {"smaller_cluster_gold_share": 0.93, "refitted_without_gold_rows": True},
                            "starts": {"kept": "tail", "kmeans_lower_bound": 366.7227, "tail_lower_bound": 366.7360}})
    _note_fit("gabor-kmeans", {"extreme_class": {"smaller_cluster_gold_share": 0.01}, "offset": 0.0})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "gabor-gmm: fitted again without the gold rows (93% of its smaller cluster" in lines[0]
    assert "outer rows" in lines[1] and "+0.013 per row" in lines[1]
