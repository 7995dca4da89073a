"""The fit's BLAS/OpenMP thread limit: the idle cores, or the user's explicit count."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from picket_dask.errors import PicketError
from picket_dask.segment.fit_threads import ENV, RowRanges, fit_thread_count, free_cores, limited_threads, usable_cores


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_limit_applies_inside_and_is_restored():
    before = _blas_threads()
    with limited_threads(1) as n:
        assert n == 1 and _blas_threads() == {1}
        np.ones((64, 64)) @ np.ones((64, 64))
    assert _blas_threads() == before


def test_free_cores_within_the_usable_ones():
    assert 1 <= free_cores(0.05) <= usable_cores()


def test_environment_override_and_bad_value(monkeypatch):
    monkeypatch.setenv(ENV, "3")
    assert fit_thread_count() == 3
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(PicketError, match=ENV):
        fit_thread_count()


def test_label_pass_runs_one_blas_thread_per_task_on_the_threaded_scheduler():
    from picket_dask.segment.fit_threads import one_blas_thread_per_task

    before = _blas_threads()
    with one_blas_thread_per_task():
        assert _blas_threads() == {1}
    assert _blas_threads() == before


@pytest.mark.parametrize("n,rows,threads", [(0, 8, 2), (5, 8, 2), (17, 4, 2), (64, 8, 3), (64, 8, 100)])
def test_row_ranges_cover_the_rows_in_whole_slices_and_restore_blas(n, rows, threads):
    """Ranges are contiguous, start on slice boundaries and cover 0..n once; map keeps range order
    however the threads finish; inside, each range runs with one BLAS thread; the old limit returns after."""
    import time

    before = _blas_threads()
    rr = RowRanges(n, rows, threads)
    assert rr.ranges[0][0] == 0 and rr.ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rr.ranges, rr.ranges[1:]))
    assert all(lo % rows == 0 for lo, _ in rr.ranges) and len(rr.ranges) <= max(1, threads)
    assert [s for lo, hi in rr.ranges for s in rr.slices(lo, hi)] == [(a, min(a + rows, n)) for a in range(0, n, rows)]

    def work(lo, hi):
        time.sleep(0.01 * (len(rr.ranges) - rr.ranges.index((lo, hi))))  # the first range finishes last
        return lo, hi, _blas_threads()
    with rr:
        done = rr.map(work)
    assert [(lo, hi) for lo, hi, _ in done] == rr.ranges
    if len(rr.ranges) > 1:
        assert all(inside == {1} for _, _, inside in done)
    assert _blas_threads() == before
