"""A clusterer whose particle class is the gold is fitted again without it (segment/extreme_class.py)."""

import numpy as np
import pytest

from picket_dask.config import REFERENCE_SEGMENT, SegmentParams
from picket_dask.segment.clustering import sample_labels
from picket_dask.segment.extreme_class import extreme_rows, gold_rows, needs_refit, smaller_cluster
from picket_dask.segment.semantic import FitSample, fit_models


def _sample(n_ice=12000, n_particles=600, n_gold=120, seed=0):
    """Flattened 5^3 neighbourhoods on the [0, 1] scale of the blurred tomogram: ice around 0.5, particles a
    little darker in every voxel (faint at this dose), gold ten times darker than that, all in one spot."""
    rng = np.random.default_rng(seed)
    ice = rng.normal(0.5, 0.02, (n_ice, 125))
    particles = rng.normal(0.47, 0.02, (n_particles, 125))
    gold = rng.normal(0.1, 0.02, (n_gold, 125))
    nb = np.concatenate([ice, particles, gold]).astype(np.float32)
    coords = np.concatenate([rng.integers(0, 60, (n_ice + n_particles, 3)),
                             20 + rng.integers(-2, 3, (n_gold, 3))])
    kind = np.r_[np.zeros(n_ice, int), np.ones(n_particles, int), np.full(n_gold, 2)]
    return FitSample(coords, nb), kind


def test_gold_rows_are_the_extreme_ones_and_their_margin():
    sample, kind = _sample()
    extreme = extreme_rows(sample.neighborhoods)
    assert extreme[kind == 2].all() and not extreme[kind < 2].any()
    near = gold_rows(sample.neighborhoods, sample.coords, reach_vox=6.0)
    assert (near | ~extreme).all() and near.sum() > extreme.sum()  # the margin adds rows around the spot
    d = np.abs(sample.coords[near & ~extreme] - 20).max(axis=1)
    assert (d <= 2 + 6).all()
    assert (gold_rows(sample.neighborhoods, sample.coords, 0.0) == extreme).all()


def test_needs_refit_only_when_the_smaller_cluster_is_mostly_gold():
    gold_labels = np.r_[np.ones(50, np.uint8), np.zeros(10, np.uint8)]  # 50 gold rows in cluster 1
    refit, report = needs_refit(gold_labels, small=1, small_rows=100)
    assert refit and report["smaller_cluster_gold_share"] == 0.5 and report["smaller_cluster_rows"] == 100
    assert not needs_refit(gold_labels, small=1, small_rows=101)[0]
    assert not needs_refit(gold_labels, small=0, small_rows=100)[0]


@pytest.mark.parametrize("clusterer", ["kmeans", "gmm"])
def test_a_gold_particle_class_is_fitted_again(clusterer):
    sample, kind = _sample()
    pairs = [("intensities", clusterer)]
    base = dict(kmeans_cut="midpoint", fit_schedule="exact")
    off = fit_models(FitSample(sample.coords, sample.neighborhoods.copy()), pairs, SegmentParams(extreme_refit="off", **base))[0]
    lab = sample_labels(off.model, sample.neighborhoods.astype(np.float64), "neighborhood")
    small = int(np.mean(lab == 1) < 0.5)
    assert np.mean(kind[lab == small] == 2) > 0.9  # without the check the "particles" are the gold
    on = fit_models(FitSample(sample.coords, sample.neighborhoods.copy()), pairs, SegmentParams(**base), voxel_A=10.0)[0]
    small, rows = smaller_cluster(off.model, len(kind))
    assert abs(rows - np.sum(lab == small)) <= 0.02 * len(kind)  # weights x rows ~ hard counts
    report = on.model.params["extreme_class"]
    assert report["refitted_without_gold_rows"] and report["smaller_cluster_gold_share"] > 0.9
    lab = sample_labels(on.model, sample.neighborhoods.astype(np.float64), "neighborhood")
    keep = kind < 2
    small = int(np.mean(lab[keep] == 1) < 0.5)
    assert np.mean(lab[kind == 1] == small) > 0.8 and np.mean(lab[kind == 0] == small) < 0.05


def test_no_gold_no_change_and_the_reference_turns_it_off():
    sample, kind = _sample(n_gold=0)
    pairs = [("intensities", "kmeans")]
    on = fit_models(FitSample(sample.coords, sample.neighborhoods.copy()), pairs, SegmentParams(kmeans_cut="midpoint"), voxel_A=10.0)[0]
    off = fit_models(FitSample(sample.coords, sample.neighborhoods.copy()), pairs,
                     SegmentParams(kmeans_cut="midpoint", extreme_refit="off"))[0]
    assert "extreme_class" not in on.model.params
    assert np.array_equal(on.model.params["cluster_centers"], off.model.params["cluster_centers"])
    assert REFERENCE_SEGMENT["extreme_refit"] == "off"


def test_nothing_but_gold_rows_keeps_the_first_fit():
    """A tiny volume where every sample voxel lies within the margin of a bead: the refit would have no
    rows (it crashed in k-means on an 8^3 crop); the first fit is kept and the report says why."""
    sample, kind = _sample(n_ice=5000, n_particles=0, n_gold=20, seed=1)  # gold under 1 %: the extreme rule sees it
    sample.coords[:] = 20 + np.random.default_rng(2).integers(-3, 4, sample.coords.shape)  # all near the bead
    pairs = [("intensities", "gmm")]
    seg = fit_models(sample, pairs, SegmentParams(kmeans_cut="midpoint", fit_schedule="exact"), voxel_A=10.0)[0]
    report = seg.model.params["extreme_class"]
    assert report["refit_skipped"].startswith("0 rows without gold") and not report.get("refitted_without_gold_rows")
