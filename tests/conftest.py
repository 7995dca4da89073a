import os

import numpy as np
import pytest

os.environ.setdefault("PICKET_DASK_QUIET", "1")


@pytest.fixture(scope="session")
def sim_tiny(tmp_path_factory):
    """A tiny simulated tomogram (48 x 96 x 96, 10 A voxels) with its truth files.

    The simple scene (clean, high-contrast particles, no vacuum): these tests check the engine's
    mechanics and F1 on an easy case; tests/test_simulate.py covers the realistic scene.
    """
    from picket_dask.simulate import simulate

    return simulate(tmp_path_factory.mktemp("sim"), "tiny", seed=3, scene="simple")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def blobs(shape, n, rmin, rmax, seed=0):
    """Boolean volume with n random balls."""
    r = np.random.default_rng(seed)
    out = np.zeros(shape, bool)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        c = [r.uniform(0, s) for s in shape]
        rad = r.uniform(rmin, rmax)
        out |= sum((g - ci) ** 2 for g, ci in zip(grids, c)) <= rad**2
    return out


SIX_PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]


def noisy_phantom(shape=(24, 30, 34), seed=0):
    """A small phantom (particles, no membrane or gold) with Gaussian noise, float32 (z, y, x)."""
    from picket_dask.simulate import phantom

    dens, _ = phantom(shape, 6, seed, membrane=False, gold=False)
    return (dens + 0.3 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def fit_six(vol=None):
    """(volume, scaled volume, fitting sample, the six segmentations fitted on it) of ``noisy_phantom``."""
    import dask.array as da

    from picket_dask.config import SegmentParams
    from picket_dask.segment.neighborhoods import gather_neighborhoods, sample_voxels
    from picket_dask.segment.preprocess import preprocess
    from picket_dask.segment.semantic import FitSample, fit_models

    vol = noisy_phantom() if vol is None else vol
    scaled, _, _ = preprocess(da.from_array(vol, chunks=vol.shape))
    # the reference's k-means boundary and mixture start: these models are compared with scikit-learn's own (the method)
    params = SegmentParams(max_fit_voxels=3000, num_gabor_features=16, kmeans_cut="midpoint", gmm_starts="kmeans")
    coords = sample_voxels(vol.shape, None, params.max_fit_voxels, params.seed)
    sample = FitSample(coords, gather_neighborhoods(scaled, coords))
    return vol, scaled.compute(), sample, fit_models(sample, SIX_PAIRS, params)
