"""A tomogram >= 4x the total worker memory limit goes through every stage; same picks as with a
generous limit.

    python benchmarks/larger_than_memory.py [--shape 256 2048 2048] [--limit 1GiB] [--threads 2] [--generous 16GiB]

One worker with the given memory limit and --threads threads (the fit sample and the fit live in the
client). Default: a 4 GiB float32 tomogram, one 1 GiB worker with 2 threads (the issue's example).
A worker's own footprint is ~250-350 MiB (Python, numpy, dask, zarr, scipy, scikit-image); 512 MiB
workers were too tight for two label tasks at a time (2026-11-24: KilledWorker).
Workflows gabor-kmeans-cc and gabor-gmm-cc: conversion, preprocessing, sample, both fits, features
+ labels, connected components, centroids, picks. The worker's RSS is sampled once a second and
worker restarts are counted from the nanny and scheduler logs. The watershed is left out on purpose:
one watershed task holds ~330 MiB at 128^3 chunks and min_distance 15 (distance map and watershed
of the chunk plus its 32-voxel halo), so it needs ~350 MiB per worker thread on top of the worker's
own footprint; see deploy/README.md.
"""

import argparse
import shutil
from pathlib import Path

from _data import synthetic_mrc
from _measure import measure, record

WORKFLOWS = ["gabor-kmeans-cc", "gabor-gmm-cc"]


def _worker_rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def case(mrc, out, limit, threads):
    import threading

    from distributed import Client, LocalCluster

    from picket_dask.workflows import run

    with LocalCluster(n_workers=1, threads_per_worker=threads, memory_limit=limit, dashboard_address=":0") as cl, Client(cl) as c:
        peak, done = [0.0], threading.Event()

        def sample():  # the worker's process RSS once a second (what the nanny compares with the limit)
            while not done.wait(1.0):
                try:
                    peak[0] = max([peak[0], *c.run(_worker_rss).values()])
                except Exception:  # a restarting worker: counted from the logs below
                    pass

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            r = run([mrc], out, WORKFLOWS, max_fit_voxels=250_000, concurrent=1)[0]
        finally:
            done.set()
            t.join()
        logs = [line for lines in c.get_worker_logs(nanny=True).values() for _, line in lines]
        logs += [line for _, line in c.get_scheduler_logs()]
    deaths = sum(any(w in line.lower() for w in ("restart", "killed", "exceeded", "died")) for line in logs)
    return {"picks": ";".join(f"{k}={v}" for k, v in r.counts.items()), "worker_restart_lines": deaths,
            "worker_peak_rss_MiB": round(peak[0]), "stages": ";".join(f"{k}={v}" for k, v in r.timings.items()),
            "picks_csv": ";".join(r.picks[w]["csv"] for w in WORKFLOWS)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[256, 2048, 2048])
    ap.add_argument("--limit", default="1GiB")
    ap.add_argument("--generous", default="16GiB")
    ap.add_argument("--threads", type=int, default=2, help="threads of the one worker")
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    a = ap.parse_args()
    import pandas as pd

    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    shape = "x".join(map(str, a.shape))
    mrc = synthetic_mrc(wd / f"ltm_{shape}.mrc", tuple(a.shape))
    gib = mrc.stat().st_size / 2**30
    res = {}
    for label, limit in (("tight", a.limit), ("generous", a.generous)):
        out = wd / f"ltm_out_{label}"
        shutil.rmtree(out, ignore_errors=True)
        res[label] = measure(case, mrc, out, limit, a.threads)
        record("larger_than_memory", {"shape": shape, "tomogram_GiB": round(gib, 2), "worker_limit": limit, "threads": a.threads,
                                      **{k: v for k, v in res[label].items() if k != "picks_csv"}})
    same = all(pd.read_csv(x, comment="#").equals(pd.read_csv(y, comment="#"))
               for x, y in zip(res["tight"]["picks_csv"].split(";"), res["generous"]["picks_csv"].split(";")))
    record("larger_than_memory", {"shape": shape, "tomogram_GiB": round(gib, 2), "worker_limit": "tight vs generous",
                                  "picks": "identical" if same else "DIFFERENT"})
