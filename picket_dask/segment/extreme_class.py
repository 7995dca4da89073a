"""When a clusterer spends its particle class on extreme density (gold), fit it again without it.

Gold fiducials are an order of magnitude denser than protein. At a realistic dose (the dev set's
SNR, 0.05-0.1) the particles' features barely leave the noise cloud while a few beads stand far
out of it, and a two-cluster fit may make the beads (and their back-projection streaks) one cluster
and everything else the other: the "particles" are then the beads, which the context stage masks,
and a run gives a handful of picks (held-out scenes at 7 A voxels and dose 10: gabor-gmm 7 picks of
268 particles, gabor-kmeans 0 of 52; benchmarks/heldout_scenes.py --dose 10, rows held601-d10).

The check, per fitted model, on the fit sample itself: the rows whose 5^3 neighbourhood reaches
extreme density by the context stage's own rule (|density - median| > EXTREME_FACTOR x the 99th
percentile of |centre density - median|) and the rows within the context stage's margin of them
(config.EXTREME_MARGIN_A: the bead's blurred rim and its back-projection streaks, which the context
mask removes anyway) are the gold rows; when at least MOSTLY of the smaller cluster's rows (the cluster
the orientation rule calls particles) are gold rows, the model is fitted again without them, and
the labels' metadata say so (``extreme_class``). Only the gold rows are predicted: the smaller
cluster's size is k-means' hard count on the sample or the mixture's weight times the rows. A
model whose smaller cluster is not mostly gold is kept as it was: an earlier trial that always
dropped the extreme rows moved k-means cuts on ordinary samples (README, rows ``v10-extremes``).

Why by hand: no library has this rule; the fits are the clustering module's.
"""

from __future__ import annotations

import numpy as np

from ..config import EXTREME_FACTOR

MOSTLY = 0.5  # share of the smaller cluster's sample rows that are gold rows for a refit
ROWS = 65_536  # rows per pass (bounded temporaries)


def extreme_rows(neighborhoods: np.ndarray) -> np.ndarray:
    """(n,) bool: rows of a (n, k^3) sample of blurred neighbourhoods (centre in the middle column) that
    reach extreme density anywhere in their neighbourhood (the context rule, from the sample's centres)."""
    nb = np.asarray(neighborhoods)
    n = len(nb)
    if n == 0:
        return np.zeros(0, bool)
    centre = nb[:, nb.shape[1] // 2].astype(np.float64)
    med = float(np.median(centre))
    limit = EXTREME_FACTOR * float(np.percentile(np.abs(centre - med), 99))
    out = np.empty(n, bool)
    for i in range(0, n, ROWS):
        part = nb[i:i + ROWS]
        out[i:i + ROWS] = (part.max(axis=1) - med > limit) | (med - part.min(axis=1) > limit)
    return out


def gold_rows(neighborhoods: np.ndarray, coords: np.ndarray | None = None, reach_vox: float = 0.0) -> np.ndarray:
    """(n,) bool: extreme_rows, and the rows whose voxel (``coords``, (n, 3) z y x) lies within ``reach_vox``
    of one of them (0 or no coords: the extreme rows alone)."""
    extreme = extreme_rows(neighborhoods)
    if reach_vox <= 0 or coords is None or not extreme.any():
        return extreme
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.asarray(coords, float)[extreme]).query(np.asarray(coords, float), distance_upper_bound=reach_vox + 1e-9)
    return np.isfinite(d)


def smaller_cluster(model, n_rows: int) -> tuple[int, float]:
    """(id, size in rows) of the smaller cluster of a model fitted on ``n_rows``: k-means' hard counts on the
    sample, a mixture's weights x the rows (its soft counts: no extra pass over the sample)."""
    if model.sample_counts:
        counts = np.asarray(model.sample_counts, float)
    else:
        counts = np.asarray(model.params["weights"], float) * n_rows
    small = int(counts[1] < counts[0])
    return small, float(counts[small])


def needs_refit(gold_labels: np.ndarray, small: int, small_rows: float) -> tuple[bool, dict]:
    """Whether a model's smaller cluster (id ``small``, ``small_rows`` sample rows) is mostly gold rows, from the
    cluster ids ``gold_labels`` of the gold rows alone; and the record for the labels' metadata."""
    gold_labels = np.asarray(gold_labels)
    share = float(np.sum(gold_labels == small) / max(small_rows, 1.0))
    report = {"gold_rows": int(len(gold_labels)), "smaller_cluster_rows": int(round(small_rows)),
              "smaller_cluster_gold_share": round(min(share, 1.0), 4)}
    return share >= MOSTLY, report
