"""Certified mixed-precision decisions (segment/decision_precision.py): the float32 bound holds against
exact arithmetic, and labels equal the float64 path's, adversarial voxels on the boundary included."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from picket_dask.segment import apply
from picket_dask.segment import decision_precision as dp
from picket_dask.segment.clustering import Decision, scores_to_labels, stacked_matrix


def _decision(rng, p: int, r: int, space: str = "neighborhood", spread: float = 5.0) -> Decision:
    """Random quadratic decision: orthonormal V (p, r), lam of both signs over ``spread`` decades."""
    V = np.linalg.qr(rng.standard_normal((p, p)))[0][:, :r]
    lam = rng.choice([-1.0, 1.0], r) * 10.0 ** rng.uniform(-spread / 2, spread / 2, r)
    return Decision(V, lam, rng.standard_normal(p) * 10.0 ** rng.uniform(0, 3), float(rng.standard_normal()), space)


def _float64_labels(x64, decs):
    return scores_to_labels(x64 @ stacked_matrix(decs), decs)


def _centre(decs, x64, rows) -> None:
    """Move each decision's c so that the float64 scores of ``rows`` are ~0 (adversarial voxels):
    c = -(score without c) of the first row, the others at +-1, 2 ulps of it."""
    proj = x64 @ stacked_matrix(decs)
    col = 0
    for d in decs:
        r = d.V.shape[1]
        s = proj[rows, col + r] + (proj[rows, col:col + r] ** 2) @ d.lam
        d.c = float(-s[0])
        col += r + 1
    for k, i in enumerate(rows[1:]):  # neighbours of the first row, a few ulps apart
        x64[i] = x64[rows[0]]
        j = k % x64.shape[1]
        x64[i, j] = np.nextafter(np.float32(x64[i, j]), np.float32(2 if k % 2 else -1))


def _exact_score(d: Decision, x) -> Fraction:
    """The decision's score of one input vector in rational arithmetic (no rounding at all)."""
    xs = [Fraction(float(v)) for v in x]
    s = Fraction(d.c) + sum(Fraction(float(a)) * b for a, b in zip(d.u, xs))
    for j in range(d.V.shape[1]):
        q = sum(Fraction(float(a)) * b for a, b in zip(d.V[:, j], xs))
        s += Fraction(float(d.lam[j])) * q * q
    return s


@pytest.mark.parametrize("p,r,inputs", [(125, 6, "neighborhood"), (63, 5, "fft"), (27, 0, "neighborhood")])
def test_bound_holds_against_exact_arithmetic(p, r, inputs):
    rng = np.random.default_rng(p + r)
    d = _decision(rng, p, r, "fft" if inputs == "fft" else "neighborhood")
    if inputs == "fft":  # float64 features, rounded to float32 by the mixed path
        x64 = rng.gamma(1.0, 3.0, (40, p))
    else:
        x64 = rng.random((40, p)).astype(np.float32).astype(np.float64)
    m = dp.MixedDecisions([d], stacked_matrix([d]))
    (S, B_cs, _), = m.scores_and_bounds(x64.astype(np.float32), refine=False)  # Cauchy-Schwarz form
    (S2, B_d, _), = m.scores_and_bounds(x64.astype(np.float32), refine="all")  # direct form
    assert np.array_equal(S, S2)
    proj = x64 @ stacked_matrix([d])
    s64 = proj[:, r] + d.c + ((proj[:, :r] ** 2) @ d.lam if r else 0.0)
    for i in range(len(x64)):
        s = _exact_score(d, x64[i])
        for B in (B_cs, B_d):
            assert abs(Fraction(float(S[i])) - s) <= Fraction(float(B[i]))
            assert abs(Fraction(float(s64[i])) - s) <= Fraction(float(B[i]))
    assert np.all(B_d > 0) and np.all(np.isfinite(B_d)) and np.all(B_d <= B_cs)


def test_bound_is_not_vacuous():
    """On data like a tomogram's most voxels are certified (the bound is far below typical |score|)."""
    rng = np.random.default_rng(3)
    d = _decision(rng, 125, 40, spread=2.0)
    x = rng.random((4000, 125)).astype(np.float32)
    (S, B, rows), = dp.MixedDecisions([d], stacked_matrix([d])).scores_and_bounds(x)
    assert np.array_equal(rows, np.flatnonzero(np.abs(S) <= B))
    assert len(rows) < 0.01 * len(x)


@pytest.mark.parametrize("seed", range(6))
def test_labels_equal_float64_path_with_adversarial_voxels(seed):
    rng = np.random.default_rng(seed)
    p = 125 if seed % 2 == 0 else 63
    space = "neighborhood" if p == 125 else "fft"
    decs = [_decision(rng, p, int(rng.integers(1, 40)), space), _decision(rng, p, 0, space),
            _decision(rng, p, int(rng.integers(1, p + 1)), space, spread=8.0)]
    n = 3000
    x64 = (rng.random((n, p)) if space == "neighborhood" else rng.gamma(1.0, 3.0, (n, p)))
    x64 = x64.astype(np.float32).astype(np.float64) if space == "neighborhood" else x64
    adversarial = rng.choice(n, 9, replace=False)
    _centre(decs, x64, adversarial)
    before = dict(dp.STATS)
    with threadpool_limits(limits=1):  # as the label pass runs (fit_threads.one_blas_thread_per_task)
        got = dp.certified_labels(dp.MixedDecisions(decs, stacked_matrix(decs)), x64.astype(np.float32), lambda rows: x64[rows])
        want = _float64_labels(x64, decs)
    for g, w in zip(got, want):
        assert g.dtype == np.uint8 and np.array_equal(g, w)
    assert dp.STATS["recomputed"] - before["recomputed"] >= 1  # the boundary voxels went to float64
    assert dp.STATS["recomputed"] - before["recomputed"] < n // 2


def test_non_finite_float32_scores_are_recomputed():
    """lam beyond float32's range: the float32 score overflows, the float64 path decides."""
    rng = np.random.default_rng(7)
    d = _decision(rng, 125, 3)
    d.lam = np.array([1e39, -1e39, 2.0])
    x64 = rng.random((64, 125)).astype(np.float32).astype(np.float64)
    got = dp.certified_labels(dp.MixedDecisions([d], stacked_matrix([d])), x64.astype(np.float32), lambda rows: x64[rows])
    assert np.array_equal(got[0], _float64_labels(x64, [d])[0])


@pytest.mark.parametrize("space", ["neighborhood", "fft"])
def test_label_block_mixed_equals_float64(space, monkeypatch):
    """label_block with the certified float32 path equals label_block in float64, with c at the
    median score so that many voxels lie near the boundary."""
    rng = np.random.default_rng(11)
    vol = rng.random((10, 21, 19)).astype(np.float32)
    p = 125 if space == "neighborhood" else 63
    decs = [_decision(rng, p, 12, space, spread=3.0), _decision(rng, p, 30, space, spread=6.0)]
    for d in decs:  # c: minus the median score without c over a sample of the volume's neighborhoods
        monkeypatch.setitem(apply.MIXED_PRECISION, (space, False), False)
        d.c = 0.0
        x = np.lib.stride_tricks.sliding_window_view(np.pad(vol, 2), (5, 5, 5)).reshape(-1, 125).astype(np.float64)
        if space == "neighborhood":
            proj = x @ d.matrix
            d.c = -float(np.median(proj[:, -1] + (proj[:, :-1] ** 2) @ d.lam))
    padded = np.pad(vol, 2)
    monkeypatch.setitem(apply.MIXED_PRECISION, (space, False), False)
    want = apply.label_block(padded, decs, vol.shape)
    monkeypatch.setitem(apply.MIXED_PRECISION, (space, False), True)
    got = apply.label_block(padded, decs, vol.shape)
    assert np.array_equal(got, want)
    assert 0 < want.mean() < 1


def _decaying(rng, p: int = 125, r: int = 40) -> Decision:
    """A decision whose eigenvalues fall over six decades (like a fitted mixture's), c at the median score."""
    V = np.linalg.qr(rng.standard_normal((p, p)))[0][:, :r]
    lam = rng.choice([-1.0, 1.0], r) * 10.0 ** -np.linspace(0, 6, r)
    return Decision(V, lam * 50, rng.standard_normal(p), 0.0, "neighborhood")


def test_rank_truncation_keeps_the_bound_and_the_labels():
    """With a sample, the float32 pass keeps fewer eigenvalues; its bound still holds against the full
    decision's exact score and the float64 path's, and the labels equal the float64 path's."""
    rng = np.random.default_rng(21)
    d = _decaying(rng)
    x64 = rng.random((3000, 125)).astype(np.float32).astype(np.float64)
    proj = x64 @ d.matrix
    d.c = -float(np.median(proj[:, -1] + (proj[:, :-1] ** 2) @ d.lam))
    _centre([d], x64, rng.choice(3000, 5, replace=False))
    m = dp.MixedDecisions([d], stacked_matrix([d]), sample=x64[::7].astype(np.float32))
    k, r, _ = m.ranks[0]
    assert 0 < k < r
    (S, B, _), = m.scores_and_bounds(x64.astype(np.float32), refine="all")
    s64 = _float64_labels(x64, [d])[0]
    proj = x64 @ d.matrix
    f64 = proj[:, r] + d.c + (proj[:, :r] ** 2) @ d.lam
    for i in range(0, 3000, 60):
        s = _exact_score(d, x64[i])
        assert abs(Fraction(float(S[i])) - s) <= Fraction(float(B[i]))
        assert abs(Fraction(float(f64[i])) - s) <= Fraction(float(B[i]))
    got = dp.certified_labels(m, x64.astype(np.float32), lambda rows: x64[rows])[0]
    assert np.array_equal(got, s64)
    assert dp.truncation_rank(d, np.zeros((0, 125))) == r


def test_label_block_truncated_equals_float64(monkeypatch):
    """label_block (certified float32 with each block's rank truncation) equals the float64 path."""
    rng = np.random.default_rng(4)
    vol = rng.random((12, 20, 23)).astype(np.float32)
    d = _decaying(rng)
    x = np.lib.stride_tricks.sliding_window_view(np.pad(vol, 2), (5, 5, 5)).reshape(-1, 125).astype(np.float64)
    proj = x @ d.matrix
    d.c = -float(np.median(proj[:, -1] + (proj[:, :-1] ** 2) @ d.lam))
    padded = np.pad(vol, 2)
    monkeypatch.setattr(apply, "RANK_SAMPLE_STEP", 2)
    monkeypatch.setitem(apply.MIXED_PRECISION, ("neighborhood", False), False)
    want = apply.label_block(padded, [d], vol.shape)
    monkeypatch.setitem(apply.MIXED_PRECISION, ("neighborhood", False), True)
    assert dp.MixedDecisions([d], d.matrix, sample=apply._rank_sample(padded, 5, 2)).ranks[0][0] < d.V.shape[1]
    assert np.array_equal(apply.label_block(padded, [d], vol.shape), want)
    assert 0 < want.mean() < 1


def test_neighborhood_matrix_equals_window_view():
    from picket_dask.segment.neighborhoods import neighborhood_matrix

    padded = np.random.default_rng(0).random((7, 9, 11)).astype(np.float32)
    want = np.lib.stride_tricks.sliding_window_view(padded, (5, 5, 5)).reshape(-1, 125)
    assert np.array_equal(neighborhood_matrix(padded), want)


@pytest.mark.parametrize("n, k", [(3000, 1), (3000, 17), (3000, 400), (100, 3), (40, 40)])
def test_recompute_rows_reach_the_main_kernel(n, k):
    """Recomputed rows: the unsure rows first, then repeats of the last, a multiple of ROW_BLOCK and more
    than SMALL_GEMM multiply-adds; the whole tile when that many rows are not fewer than it has."""
    rows = np.sort(np.random.default_rng(k).choice(n, k, replace=False))
    per_row = 125 * 60
    got = dp._recompute_rows(rows, n, per_row)
    if len(got) == n:
        np.testing.assert_array_equal(got, np.arange(n))
        assert -(-(dp.SMALL_GEMM + 1) // per_row) > n - dp.ROW_BLOCK or k > n - dp.ROW_BLOCK
    else:
        np.testing.assert_array_equal(got[:k], rows)
        assert np.all(got[k:] == rows[-1]) and len(got) % dp.ROW_BLOCK == 0
        assert len(got) * per_row > dp.SMALL_GEMM and len(got) - dp.ROW_BLOCK < max(k, -(-(dp.SMALL_GEMM + 1) // per_row))


def test_rows_of_a_product_do_not_depend_on_how_many_are_multiplied():
    """The property the recompute rests on, with one BLAS thread: the rows _recompute_rows picks give
    bit-equal products to the whole tile's (this machine's BLAS)."""
    rng = np.random.default_rng(5)
    for p, cols in ((125, 60), (63, 100), (125, 1)):
        x, m = rng.gamma(1.0, 3.0, (3000, p)), rng.standard_normal((p, cols))
        with threadpool_limits(limits=1):
            full = x @ m
            for k in (1, 5, 16, 100):
                rows = np.sort(rng.choice(len(x), k, replace=False))
                idx = dp._recompute_rows(rows, len(x), p * cols)
                got = x[idx] @ m
                np.testing.assert_array_equal(got[rows] if len(idx) == len(x) else got[:k], full[rows])


def test_recompute_shared_by_tiles_equals_float64_path():
    """Unsure voxels of several tiles queued in one Recompute (flushed mid-way and at the end) get the
    float64 path's labels of their own tile's product."""
    rng = np.random.default_rng(11)
    decs = [_decision(rng, 125, 30), _decision(rng, 125, 0)]
    tiles = [rng.random((700, 125)).astype(np.float32).astype(np.float64) for _ in range(5)]
    for x in tiles:
        _centre(decs, x, rng.choice(len(x), 6, replace=False))  # boundary voxels in every tile
    mixed = dp.MixedDecisions(decs, stacked_matrix(decs))
    with threadpool_limits(limits=1):
        rec = dp.Recompute(mixed, flush_rows=20)  # flushes after a few tiles, and once more at the end
        got = [dp.certified_labels(mixed, x.astype(np.float32), lambda rows, x=x: x[rows], rec) for x in tiles]
        rec.flush()
        want = [_float64_labels(x, decs) for x in tiles]
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)
