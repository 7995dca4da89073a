"""Compute dask collections with a progress bar on whatever scheduler is active.

With a ``distributed.Client`` the work is submitted to it (progress shows on the dashboard and
as a text bar); without one, dask's local threaded scheduler runs it under ``ProgressBar``.
Set ``PICKET_DASK_QUIET=1`` (or ``quiet(True)``, the CLI's ``-q/--quiet``) to silence the bars and the
informational lines (``note``); warnings (``warn``) still print.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dask
from dask.diagnostics import ProgressBar

_QUIET = [os.environ.get("PICKET_DASK_QUIET", "") not in ("", "0")]


def quiet(value: bool = True) -> None:
    """Turn progress bars off (True) or on (False) for this process."""
    _QUIET[0] = value


def is_quiet() -> bool:
    """Whether bars and informational lines are off in this process."""
    return _QUIET[0]


def active_client():
    """The current distributed Client, or None when running on the local scheduler."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def note(message: str) -> None:
    """One informational line on stderr (``[picket-dask] message``), unless quiet."""
    if not _QUIET[0]:
        warn(message)


def warn(message: str) -> None:
    """One line on stderr (``[picket-dask] message``) that ``quiet`` keeps: what a user must see (a voxel
    size that looks unset, an empty particle mask, a tomogram of a batch to look at)."""
    if sys.stderr is not None:
        print(f"[picket-dask] {message}", file=sys.stderr, flush=True)


def by_reference(obj: Any) -> Any:
    """``obj`` for many tasks to share without a copy in each task or in the graph: with a
    distributed Client it is scattered to the cluster once and the tasks get a reference (a
    graph holding a large array makes distributed warn "Sending large graph"); on the local
    scheduler the object itself, which tasks share in memory."""
    client = active_client()
    return obj if client is None else client.scatter(obj, hash=False)


def compute(*collections: Any, label: str = "") -> tuple:
    """``dask.compute`` with a progress bar labelled ``label``; returns the results as a tuple."""
    client = active_client()
    show = not _QUIET[0] and sys.stderr is not None
    if show and label:
        print(f"[picket-dask] {label}", file=sys.stderr, flush=True)
    if client is not None:
        futures = client.compute(list(collections))
        if show and sys.stderr.isatty():
            from distributed.diagnostics.progressbar import progress

            progress(futures, notebook=False)
            print(file=sys.stderr)
        return tuple(client.gather(futures))
    if show and sys.stderr.isatty():
        with ProgressBar(minimum=1.0, out=sys.stderr):
            return dask.compute(*collections)
    return dask.compute(*collections)


def compute_each(tasks: list, consume, label: str = "", batch: int = 16) -> None:
    """Compute delayed ``tasks`` and call ``consume(i, result)`` for each as it is ready.

    Results are handed over and dropped one by one (with a distributed Client, as they
    complete; on the local scheduler, ``batch`` tasks at a time), so the caller can fill a
    preallocated array without every part being held at once.
    """
    client = active_client()
    if not _QUIET[0] and sys.stderr is not None and label:
        print(f"[picket-dask] {label}", file=sys.stderr, flush=True)
    if client is not None:
        from distributed import as_completed

        futures = client.compute(list(tasks))
        index = {f.key: i for i, f in enumerate(futures)}
        for fut, result in as_completed(futures, with_results=True):
            consume(index[fut.key], result)
            fut.release()
        return
    for start in range(0, len(tasks), batch):
        for i, result in enumerate(dask.compute(*tasks[start:start + batch]), start):
            consume(i, result)
