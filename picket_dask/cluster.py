"""One place that gives a Dask client: embedded LocalCluster, a running scheduler, dask-jobqueue
(SLURM, PBS, LSF from the user's jobqueue config), dask-cuda for GPUs, or no cluster at all
(dask's threaded scheduler, for small jobs)."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from .errors import PicketError

CLUSTER_KINDS = ("local", "threads", "slurm", "pbs", "lsf")


@contextlib.contextmanager
def get_client(cluster: str = "local", scheduler: str | None = None, workers: int | None = None,
               threads: int | None = None, memory_limit: str | None = "auto", gpu: bool = False,
               jobs: int = 1, quiet: bool = False) -> Iterator[object | None]:
    """Yield a ``distributed.Client`` (or None for ``cluster='threads'``) and close what it started.

    ``scheduler``: address of a running scheduler (tcp://host:8786) - nothing is started.
    ``cluster``: local (LocalCluster sized by workers/threads/memory_limit), threads (no
    distributed), slurm/pbs/lsf (dask-jobqueue; reads ~/.config/dask/jobqueue.yaml; ``jobs`` jobs).
    ``gpu``: a dask-cuda LocalCUDACluster, one worker per GPU (needs the ``gpu`` extra).
    """
    if scheduler:
        from distributed import Client

        client = Client(scheduler)
        _say(f"connected to {scheduler}; dashboard: {client.dashboard_link}", quiet)
        try:
            yield client
        finally:
            client.close()
        return
    if cluster == "threads" and not gpu:
        yield None
        return
    from distributed import Client

    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise PicketError("--gpu", "dask-cuda is not installed", "pip install 'picket-dask[gpu]' on a machine with CUDA") from None
        cl = LocalCUDACluster(threads_per_worker=threads or 1, memory_limit=memory_limit)
    elif cluster == "local":
        from distributed import LocalCluster

        cl = LocalCluster(n_workers=workers, threads_per_worker=threads, memory_limit=memory_limit,
                          dashboard_address=":0" if quiet else ":8787")
    elif cluster in ("slurm", "pbs", "lsf"):
        try:
            import dask_jobqueue
        except ImportError:
            raise PicketError(f"--cluster {cluster}", "dask-jobqueue is not installed", "pip install 'picket-dask[hpc]'") from None
        cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster, "lsf": dask_jobqueue.LSFCluster}[cluster]
        cl = cls()
        cl.scale(jobs=jobs)
    else:
        raise PicketError(f"--cluster {cluster}", "unknown cluster kind", f"use one of {', '.join(CLUSTER_KINDS)}")
    client = Client(cl)
    _say(f"dask dashboard: {client.dashboard_link}", quiet)
    try:
        yield client
    finally:
        client.close()
        cl.close()


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[picket-dask] {msg}", file=sys.stderr, flush=True)
