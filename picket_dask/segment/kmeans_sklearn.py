"""scikit-learn's KMeans without the full-size copy its tolerance makes: same model, same numbers.

KMeans scales its stop tolerance by the mean column variance of the data, ``np.var(X, axis=0)``,
which forms ``X - mean`` as a new array the size of the fitting sample (0.5 GB at 500k x 125
float64) to get d numbers. On a fresh allocation that copy costs more than computing it: 0.9-1.7 s
of page faults against 0.1-0.25 s for the arithmetic (crowded dev tomogram, 500k-voxel sample), and
it is the largest array of the k-means fit beside the sample itself.

Here the same variances are accumulated a slice of rows at a time, in numpy's own order: a
reduction over axis 0 of a C-ordered array adds the rows one after another into the running sum,
and prepending the running sum to each slice keeps exactly that order, so the result is bitwise
np.var's (tests/test_kmeans_sklearn.py checks it, and that the fitted model equals KMeans').
Why by hand: scikit-learn has no option for a precomputed tolerance; the subclass replaces only
the step that computes ``_tol``.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

VAR_ROWS = 8192  # rows per slice: (rows, d) float64 temporaries of a few MiB


def column_variances(x: np.ndarray, rows: int = VAR_ROWS) -> np.ndarray:
    """``np.var(x, axis=0)`` of a 2-D array (n, d), bit for bit, with temporaries of ``rows`` rows."""
    x = np.asarray(x)
    if x.ndim != 2 or not x.flags.c_contiguous or x.dtype.kind != "f" or len(x) == 0:
        return np.var(x, axis=0)  # the orders of summation below hold for C-ordered float rows only
    n, d = x.shape
    total = np.zeros((1, d), x.dtype)
    for a in range(0, n, rows):
        total = np.add.reduce(np.concatenate([total, x[a:a + rows]]), axis=0, keepdims=True)
    mean = total / n  # np.var: the keepdims sum divided in place by the count
    total = np.zeros((1, d), x.dtype)
    for a in range(0, n, rows):
        dev = x[a:a + rows] - mean
        np.multiply(dev, dev, out=dev)
        total = np.add.reduce(np.concatenate([total, dev]), axis=0, keepdims=True)
    return (total / n)[0]


class StreamedTolKMeans(KMeans):
    """``sklearn.cluster.KMeans`` whose tolerance comes from ``column_variances`` (same value)."""

    def _check_params_vs_input(self, X, *args, **kwargs):
        if not self.tol or hasattr(X, "tocsr"):  # no tolerance, or sparse input: scikit-learn's own step
            return super()._check_params_vs_input(X, *args, **kwargs)
        tol = self.tol
        self.tol = 0  # scikit-learn's _tolerance returns 0 at once for tol 0: no copy of X
        try:
            super()._check_params_vs_input(X, *args, **kwargs)
        finally:
            self.tol = tol
        self._tol = np.mean(column_variances(X)) * tol  # _tolerance's expression, on the same variances
