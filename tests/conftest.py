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
