"""Shared by the benchmarks: run a case in a fresh process, report wall/CPU seconds and peak RSS,
append a row (with machine and versions) to a results CSV."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _child(q, func, args, kwargs):
    os.environ["PICKET_DASK_QUIET"] = "1"
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        extra = func(*args, **kwargs) or {}
        err = None
    except Exception as exc:  # reported, not hidden
        extra, err = {}, f"{type(exc).__name__}: {exc}"
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    q.put({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_MiB": round(rss, 1), "error": err, **extra})


def measure(func, *args, **kwargs) -> dict:
    """Run func(*args, **kwargs) in a fresh (spawned) process; its return dict is merged into the result."""
    ctx = mp.get_context("spawn")  # fork after dask threads have started can deadlock
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, func, args, kwargs))
    p.start()
    out = q.get()
    p.join()
    return out


def record(bench: str, row: dict) -> None:
    """Append a row to benchmarks/results/<bench>.csv with the machine and versions."""
    from picket_dask.provenance import versions

    RESULTS.mkdir(exist_ok=True)
    v = versions()
    row = {"bench": bench, "date": time.strftime("%Y-%m-%d %H:%M"), "host_cpus": os.cpu_count(),
           "machine": platform.machine(), "picket_dask": v.get("picket-dask"), "numpy": v.get("numpy"),
           "dask": v.get("dask"), **row}
    path = RESULTS / f"{bench}.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))  # rows of one bench may differ in columns
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    print(json.dumps(row), flush=True)
