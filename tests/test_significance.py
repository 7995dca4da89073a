"""The significance cut (localize/significance.py): empirical null of the pick score, BH at an FDR."""

import importlib

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.stats import kstest, norm

from picket_dask.localize.score import score_instances
from picket_dask.localize.significance import ball, bh_keep, block_null_means, radii_for_sizes, significance

SHAPE = (64, 64, 64)


def correlated_noise(rng, shape=SHAPE, sigma=1.5):
    """White noise blurred (positively correlated over ~sigma voxels), unit SD."""
    v = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    return (v - v.mean()) / v.std()


def balls_at(centres, radius, shape=SHAPE) -> np.ndarray:
    """uint32 labels 1..N: balls of ``radius`` at ``centres`` (z, y, x voxels)."""
    lab = np.zeros(shape, np.uint32)
    b = np.argwhere(ball(radius)) - int(radius)
    for i, c in enumerate(centres, 1):
        idx = b + np.asarray(c)
        lab[tuple(idx.T)] = i
    return lab


def grid_centres(n_side, lo=8, hi=56):
    g = np.linspace(lo, hi, n_side).round().astype(int)
    return [(z, y, x) for z in g for y in g for x in g]


def scored(vol, labels, bg):
    counts = np.bincount(labels.ravel(), minlength=labels.max() + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=vol.ravel(), minlength=labels.max() + 1)[1:]
    mu, sd = float(vol[bg].mean()), float(vol[bg].std())
    return score_instances(sums / counts, counts, mu, sd), counts


def test_block_null_means_are_ball_means():
    """FFT ball sums equal direct means: on a volume equal to its z index, a ball's mean is its centre's z."""
    z = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 40, 40)).copy()
    interior = (slice(8, 32),) * 3
    means, counts = block_null_means(z, np.ones_like(z, bool), interior, np.array([2.0, 5.0]), 300, 1)
    for m in means:
        assert len(m) == 300
        assert np.allclose(m, np.round(m), atol=1e-3) and m.min() > 7.99 and m.max() < 31.01
    assert counts[0] == 24 ** 3  # every interior centre holds a whole ball (halo 8 > 5 + 1)
    # the volume's faces count as outside the background: no ball crosses them
    _, c = block_null_means(z, np.ones_like(z, bool), (slice(0, 40),) * 3, np.array([3.0]), 10, 1)
    assert c[0] == 34 ** 3


def test_fft_and_gathered_ball_sums_agree(rng, monkeypatch):
    sig = importlib.import_module("picket_dask.localize.significance")

    img = rng.normal(size=(30, 34, 38)).astype(np.float32)
    bg = rng.random(img.shape) > 0.002
    interior = (slice(6, 24), slice(6, 28), slice(6, 32))
    radii = np.array([1.5, 3.0, 4.5])
    gathered, c1 = sig.block_null_means(img, bg, interior, radii, 200, 5)
    monkeypatch.setattr(sig, "GATHER_VOXELS", 0)
    fft, c2 = sig.block_null_means(img, bg, interior, radii, 200, 5)
    assert np.array_equal(c1, c2)
    for a, b in zip(gathered, fft):
        assert len(a) == 200 and np.allclose(a, b, atol=1e-5)


def test_null_pvalues_uniform_where_z_test_is_not(rng):
    """Noise-only instances in correlated noise: the empirical p-values are uniform-ish; the white-noise
    z-test on the same scores calls far too many of them significant (why an empirical null)."""
    vol = correlated_noise(rng)
    labels = balls_at(grid_centres(4), 3.0)
    bg = ~ndi.binary_dilation(labels > 0, iterations=2)
    sc, counts = scored(vol, labels, bg)
    sig = significance(da.from_array(vol, chunks=32), da.from_array(bg, chunks=32), sc.score, counts,
                       sc.background_mean, sc.background_sd, +1, fdr=0.05, n_null=2000, seed=3)
    assert kstest(sig.p, "uniform").pvalue > 0.01
    assert (sig.p < 0.05).mean() < 0.15
    assert (norm.sf(sc.score) < 0.05).mean() > 0.25
    assert sig.keep.sum() <= 2
    assert sig.report["null_score_sd_range"][0] > 1.5  # correlated noise: far wider than N(0, 1)


def test_cut_keeps_blobs_drops_noise_instances(rng):
    vol = correlated_noise(rng)
    real = [(16, 16, 16), (16, 48, 40), (44, 20, 44), (46, 46, 16)]
    noise = [(30, 32, 30), (10, 34, 52), (52, 10, 30), (30, 54, 54), (54, 54, 54), (30, 8, 8), (8, 52, 8), (40, 30, 10)]
    labels = balls_at(real + noise, 3.0)
    blobs = balls_at(real, 3.0) > 0
    vol = vol + 1.5 * ndi.gaussian_filter(blobs.astype(float), 1.0)
    bg = ~ndi.binary_dilation(labels > 0, iterations=2)
    sc, counts = scored(vol, labels, bg)
    assert sc.polarity == 1
    sig = significance(da.from_array(vol, chunks=32), da.from_array(bg, chunks=32), sc.score, counts,
                       sc.background_mean, sc.background_sd, sc.polarity, fdr=0.05, n_null=2000, seed=0)
    assert sig.keep[:4].all()
    assert sig.keep[4:].sum() <= 1
    assert sig.report["kept"] == sig.keep.sum() and sig.report["dropped"] == len(real + noise) - sig.keep.sum()
    assert sig.report["fdr"] == 0.05 and sig.report["null_per_size"] == 2000
    # seeded: the same draw again
    again = significance(da.from_array(vol, chunks=32), da.from_array(bg, chunks=32), sc.score, counts,
                         sc.background_mean, sc.background_sd, sc.polarity, fdr=0.05, n_null=2000, seed=0)
    assert np.array_equal(again.p, sig.p)


def test_empty_picks_and_helpers():
    img = da.zeros(SHAPE, chunks=32)
    sig = significance(img, img == 0, np.empty(0), np.empty(0), 0.0, 1.0, 1, fdr=0.05)
    assert sig.p.shape == (0,) and sig.keep.shape == (0,)
    assert sig.report["picks"] == 0 and sig.report["kept"] == 0 and sig.report["dropped"] == 0
    assert bh_keep(np.empty(0), 0.05).shape == (0,)
    # BH by hand: sorted p 0.001, 0.02, 0.03, 0.5 with q=0.05 -> thresholds 0.0125, 0.025, 0.0375, 0.05
    assert bh_keep(np.array([0.5, 0.03, 0.001, 0.02]), 0.05).tolist() == [False, True, True, True]
    # radius whose ball's voxel count is nearest in log
    r = radii_for_sizes(np.array([1, 7, 123, 4000]))
    assert [int(ball(x).sum()) for x in r[:3]] == [1, 7, 123]
    assert abs(np.log(ball(r[3]).sum() / 4000)) < 0.15


def test_no_background_means_no_significance():
    """A background with no room for any ball: nothing is called significant (p = 1), said in the report."""
    img = da.from_array(np.random.default_rng(0).normal(size=(32, 32, 32)), chunks=16)
    sig = significance(img, da.zeros((32, 32, 32), dtype=bool, chunks=16), np.array([50.0, 3.0]), np.array([100, 100]),
                       0.0, 1.0, 1, fdr=0.05, n_null=500)
    assert (sig.p == 1).all() and not sig.keep.any() and sig.report["picks_without_null"] == 2


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.slow
def test_fdr_end_to_end(tmp_path):
    """--fdr in a run: the cut is recorded in the picks' metadata and the kept picks are the ones written."""
    import pandas as pd
    import yaml

    from picket_dask.simulate import simulate
    from picket_dask.workflows import run

    files = simulate(tmp_path / "sim", "tiny", seed=5)
    res = run(files["tomogram"], tmp_path / "out", ["gabor-gmm-ws"], chunks=32, max_fit_voxels=20_000, fdr=0.05)[0]
    meta = yaml.safe_load(open(res.picks["gabor-gmm-ws"]["yaml"]))
    text = yaml.safe_dump(meta)
    assert "significance" in text
    rep = _find(meta, "significance")
    df = pd.read_csv(res.picks["gabor-gmm-ws"]["csv"], comment="#")
    assert rep["fdr"] == 0.05 and rep["kept"] == len(df) and rep["kept"] + rep["dropped"] == rep["picks"] > 0
    assert len(rep["null_sizes"]) == len(rep["ball_radii_vox"]) and min(rep["null_sizes"]) > 0


def _find(d, key):
    """The first value under ``key`` in nested dicts."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None
