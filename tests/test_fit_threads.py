"""The fit's BLAS/OpenMP thread limit: the idle cores, or the user's explicit count."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from picket_dask.errors import PicketError
from picket_dask.segment.fit_threads import ENV, fit_thread_count, free_cores, limited_threads, usable_cores


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
