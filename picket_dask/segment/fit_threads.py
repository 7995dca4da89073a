"""How many BLAS/OpenMP threads the in-process fit and label pass may use, and contexts that enforce it.

The fit runs in the client process with multithreaded BLAS (and scikit-learn's OpenMP k-means).
When other work holds some of the cores (Dask workers of another tomogram, another user's job),
a thread count equal to the core count oversubscribes them: each BLAS call's threads wait for
one that is descheduled (a gabor-gmm fit measured 122 s instead of 18 s with one of two cores
busy). The fit therefore uses the cores that are idle just before it starts.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ..cluster import usable_cores

ENV = "PICKET_DASK_FIT_THREADS"  # an explicit thread count for the fit overrides the measurement


def free_cores(window_s: float = 0.25) -> int:
    """Cores idle over the next ``window_s`` seconds (system-wide CPU use), at least 1."""
    import psutil

    cores = usable_cores()
    busy = psutil.cpu_percent(interval=window_s) / 100 * (os.cpu_count() or cores)
    return max(1, min(cores, int(cores - busy + 0.5)))


def fit_thread_count() -> int:
    """Threads for the fit: ``$PICKET_DASK_FIT_THREADS`` if set, else the idle cores."""
    value = os.environ.get(ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            from ..errors import PicketError

            raise PicketError(f"${ENV}={value!r}", "is not a whole number", f"set {ENV} to a thread count, e.g. 2") from None
    return free_cores()


@contextlib.contextmanager
def limited_threads(n: int | None = None) -> Iterator[int]:
    """Limit BLAS and OpenMP pools to ``n`` threads (default: fit_thread_count()) inside the block."""
    from threadpoolctl import threadpool_limits

    n = fit_thread_count() if n is None else n
    with threadpool_limits(limits=n):
        yield n


@contextlib.contextmanager
def one_blas_thread_per_task() -> Iterator[None]:
    """BLAS/OpenMP pools limited to 1 thread while dask's threaded scheduler runs chunk tasks in this
    process: the tasks are the parallelism, and each task's small products (a few thousand rows)
    lose more to BLAS threads waking and waiting than they gain (the crowded dev tomogram's label
    pass, three segmentations, 2 cores: 62-75 s -> 27-43 s). Distributed workers are other
    processes, started with one BLAS thread by dask already: nothing to do then."""
    from ..progress import active_client

    if active_client() is not None:
        yield
        return
    with limited_threads(1):
        yield


class RowRanges:
    """``n`` rows split into contiguous ranges of whole ``rows``-row slices, one per thread, and a pool
    that maps a function over them: ``with RowRanges(n, rows, threads) as rr: rr.map(fn)``.

    Why: the fit's passes over the sample (EM, features, cluster counts) are half elementwise numpy,
    which one thread leaves on one core however many BLAS threads its products get. One range per
    thread, each with one BLAS thread, keeps every core busy through a pass (numpy releases the GIL
    on slices of thousands of rows). ``map`` returns the results in range order, so sums combined
    in that order do not depend on the threads' timing. With one range nothing is threaded and the
    BLAS threads are left as they are.
    """

    def __init__(self, n: int, rows: int, threads: int):
        slices = -(-n // rows)
        per = max(1, -(-slices // max(1, threads))) * rows  # whole slices per range
        self.rows = rows
        self.ranges = [(lo, min(n, lo + per)) for lo in range(0, n, per)] or [(0, 0)]
        self._pool = self._limit = None

    def slices(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ``rows``-row slices (first row, end) of the range [lo, hi)."""
        return [(a, min(a + self.rows, hi)) for a in range(lo, hi, self.rows)]

    def __enter__(self) -> "RowRanges":
        if len(self.ranges) > 1:
            from concurrent.futures import ThreadPoolExecutor

            from threadpoolctl import threadpool_limits

            self._limit = threadpool_limits(limits=1)
            self._pool = ThreadPoolExecutor(len(self.ranges), thread_name_prefix="picket-fit")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._limit.restore_original_limits()
            self._pool = self._limit = None

    def map(self, fn) -> list:
        """[fn(lo, hi) for each range], in range order (threaded inside the ``with`` block)."""
        if self._pool is None:
            return [fn(lo, hi) for lo, hi in self.ranges]
        return list(self._pool.map(fn, *zip(*self.ranges)))
