"""The coarse-to-fine fit schedule: a fit on every 8th row starts the fit on the whole sample."""

import numpy as np
from picket_dask.config import RunConfig
from picket_dask.segment.clustering import COARSE_MIN_ROWS, COARSE_STEP, coarse_rows, fit, predict
from picket_dask.segment.gmm_em import fit_gaussian_mixture


def _two_clusters(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = n // 5  # a smaller, tighter cluster, as particles in ice
    x = np.concatenate([rng.normal(0, 1, (n - k, d)), rng.normal(1.5, 0.6, (k, d))])
    return (x @ rng.normal(size=(d, d)))[rng.permutation(n)]


def test_coarse_rows_only_for_samples_large_enough():
    n = COARSE_STEP * COARSE_MIN_ROWS
    assert coarse_rows(n - 1) is None
    assert coarse_rows(n) == slice(None, None, COARSE_STEP)


def test_em_started_at_its_own_fixed_point_stops_there():
    """A warm start from a converged fit: two iterations (the stop rule compares two), the same
    model up to the stop rule's slack (EM still creeps along a flat likelihood: labels, not digits)."""
    from picket_dask.segment.clustering import gmm_decision

    x = _two_clusters(6000, 4)
    done = fit_gaussian_mixture(x, 2, 42)
    again = fit_gaussian_mixture(x, 2, 42, init_params=done)
    assert again["converged"] and again["n_iter"] == 2
    assert again["lower_bound"] >= done["lower_bound"] - 1e-9  # EM never lowers the likelihood
    a = predict(gmm_decision(done, None, "neighborhood"), x)
    b = predict(gmm_decision(again, None, "neighborhood"), x)
    assert (a == b).mean() >= 0.995  # the bar for "the same labels"


def test_coarse_to_fine_mixture_agrees_with_the_exact_fit():
    x = _two_clusters(COARSE_STEP * COARSE_MIN_ROWS + 8000, 6, seed=1)
    exact = fit("gmm", x.copy(), None, "neighborhood", 42, schedule="exact")
    fast = fit("gmm", x.copy(), None, "neighborhood", 42, schedule="coarse-to-fine")
    a, b = predict(exact.decision, x), predict(fast.decision, x)
    assert max((a == b).mean(), (a != b).mean()) >= 0.999  # cluster ids may be numbered the other way
    assert fast.params["schedule"] == "coarse-to-fine" and exact.params["schedule"] == "exact"
    assert fast.params["coarse"]["rows"] == len(x[::COARSE_STEP])
    assert fast.params["n_iter"] < exact.params["n_iter"]  # the whole sample needs fewer passes


def test_kmeans_is_exact_under_either_schedule():
    x = _two_clusters(COARSE_STEP * COARSE_MIN_ROWS, 3, seed=3)
    a = fit("kmeans", x.copy(), None, "neighborhood", 42, schedule="exact")
    b = fit("kmeans", x.copy(), None, "neighborhood", 42, schedule="coarse-to-fine")
    np.testing.assert_array_equal(a.params["cluster_centers"], b.params["cluster_centers"])


def test_small_samples_fit_exactly_under_either_schedule():
    x = _two_clusters(4000, 3, seed=2)
    exact = fit("gmm", x.copy(), None, "neighborhood", 42, schedule="exact")
    fast = fit("gmm", x.copy(), None, "neighborhood", 42, schedule="coarse-to-fine")
    assert "coarse" not in fast.params
    np.testing.assert_array_equal(exact.params["means"], fast.params["means"])


def test_reference_preset_fits_exactly():
    assert RunConfig().segment.fit_schedule == "coarse-to-fine"
    assert RunConfig(preset="reference").segment.fit_schedule == "exact"
