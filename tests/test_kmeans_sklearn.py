"""kmeans_sklearn: the streamed column variances are np.var's bit for bit, and the k-means fitted
with them is scikit-learn's KMeans exactly."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from picket_dask.segment.kmeans_sklearn import StreamedTolKMeans, column_variances


@pytest.mark.parametrize("n,d,rows", [(1, 3, 4), (1000, 7, 64), (1001, 7, 64), (5000, 125, 333), (64, 5, 64)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_variances_equal_np_var_bitwise(n, d, rows, dtype):
    rng = np.random.default_rng(n + d)
    # unequal scales and offsets: rounding differs between summation orders on such data
    x = (rng.standard_normal((n, d)) * rng.uniform(0.01, 100, d) + rng.uniform(-1e3, 1e3, d)).astype(dtype)
    got = column_variances(x, rows=rows)
    np.testing.assert_array_equal(got, np.var(x, axis=0))
    assert got.dtype == np.var(x, axis=0).dtype


def test_column_variances_other_layouts_fall_back_to_np_var():
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((300, 4)))
    np.testing.assert_array_equal(column_variances(x, rows=7), np.var(x, axis=0))
    ints = np.arange(40).reshape(10, 4)
    np.testing.assert_array_equal(column_variances(ints, rows=3), np.var(ints, axis=0))


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_streamed_kmeans_is_sklearn_kmeans(seed):
    rng = np.random.default_rng(seed)
    # a noise cloud with a small offset cluster (a sparse sample's shape): Lloyd runs several
    # iterations and stops on the tolerance, so a different tolerance would show
    x = np.concatenate([rng.standard_normal((6000, 12)), rng.standard_normal((300, 12)) * 0.7 + 1.5])
    rng.shuffle(x)
    ref = KMeans(n_clusters=2, random_state=seed).fit(x.copy())
    mine_input = x.copy()
    mine = StreamedTolKMeans(n_clusters=2, random_state=seed, copy_x=False).fit(mine_input)
    assert mine._tol == ref._tol
    assert mine.n_iter_ == ref.n_iter_ and ref.n_iter_ > 2
    np.testing.assert_array_equal(mine.labels_, ref.labels_)
    np.testing.assert_array_equal(mine.cluster_centers_, ref.cluster_centers_)
    assert mine.inertia_ == ref.inertia_
    np.testing.assert_allclose(mine_input, x, atol=1e-12)  # copy_x=False centres in place and restores (to rounding)
    assert mine.get_params() == ref.get_params() | {"copy_x": False}


def test_streamed_kmeans_without_tolerance():
    x = np.random.default_rng(3).standard_normal((500, 3))
    a = StreamedTolKMeans(n_clusters=2, random_state=0, tol=0).fit(x)
    b = KMeans(n_clusters=2, random_state=0, tol=0).fit(x)
    assert a._tol == 0 and a.tol == 0
    np.testing.assert_array_equal(a.labels_, b.labels_)
