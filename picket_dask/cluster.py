"""One place that gives a Dask client: embedded LocalCluster, a running scheduler, dask-jobqueue
(SLURM, PBS, LSF from the user's jobqueue config), dask-cuda for GPUs, or no cluster at all
(dask's threaded scheduler, for small jobs)."""

from __future__ import annotations

import contextlib
import os
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
    if cluster == "threads" and not gpu and not scheduler:
        yield None
        return
    from distributed import Client

    cl = None if scheduler else _start_cluster(cluster, workers, threads, memory_limit, gpu, jobs, quiet)
    client = Client(scheduler or cl)
    from .worker_setup import MallocThresholds

    client.register_plugin(MallocThresholds(), name="picket-dask-malloc")  # every worker, now and later
    where = f"connected to {scheduler}; " if scheduler else ""
    _say(f"{where}dask dashboard: {client.dashboard_link}", quiet)
    try:
        yield client
    finally:
        client.close()
        if cl is not None:  # only what we started
            _close_quietly(cl)


def _close_quietly(cluster) -> None:
    """Close a cluster this process started. Its workers are idle by then; on a busy machine one may
    take longer than the nanny's 4 s to exit and is killed with a WARNING log line that tells the user
    nothing (no work is lost), printed after the results: keep that line off the terminal."""
    import logging

    log = logging.getLogger("distributed.nanny")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        log.setLevel(level)


def _start_cluster(cluster: str, workers, threads, memory_limit, gpu: bool, jobs: int, quiet: bool):
    """Start the cluster ``get_client`` was asked for (LocalCUDACluster, LocalCluster or dask-jobqueue)."""
    if gpu:
        from .backend import dask_cuda_problem, gpu_problem

        problem = gpu_problem() or dask_cuda_problem()  # the actual import error, not "not installed"
        if problem:
            raise PicketError("--gpu", problem, "pip install 'picket-dask[gpu]' matching the machine's CUDA (see deploy/), or run without --gpu")
        from dask_cuda import LocalCUDACluster

        # one worker per GPU; its threads run the GPU tasks and all host work (fit sample, watershed,
        # components), so by default it gets the machine's cores shared among the GPUs, not dask-cuda's 1
        return LocalCUDACluster(threads_per_worker=threads or _cores_per_gpu(), memory_limit=memory_limit)
    if cluster == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=workers, threads_per_worker=threads, memory_limit=memory_limit,
                            dashboard_address=_dashboard_address(quiet))
    if cluster in ("slurm", "pbs", "lsf"):
        try:
            import dask_jobqueue
        except ImportError:
            raise PicketError(f"--cluster {cluster}", "dask-jobqueue is not installed", "pip install 'picket-dask[hpc]'") from None
        cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster, "lsf": dask_jobqueue.LSFCluster}[cluster]
        try:
            cl = cls()  # job size, queue and account from dask's jobqueue configuration
        except ValueError as exc:  # no cores / memory configured for this kind of job
            raise PicketError(f"--cluster {cluster}", f"dask-jobqueue has no job size ({str(exc).splitlines()[0].rstrip(':,')})",
                              f"set cores and memory under jobqueue.{cluster} in ~/.config/dask/jobqueue.yaml "
                              "(deploy/jobqueue.yaml is a template; deploy/README.md)") from None
        cl.scale(jobs=jobs)
        return cl
    raise PicketError(f"--cluster {cluster}", "unknown cluster kind", f"use one of {', '.join(CLUSTER_KINDS)}")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cores_per_gpu() -> int:
    """CPU cores available to this process divided among the visible CUDA devices (at least 1)."""
    import cupy

    return max(1, usable_cores() // max(1, cupy.cuda.runtime.getDeviceCount()))


def _dashboard_address(quiet: bool) -> str:
    """dask's usual dashboard port 8787 when it is free, else any free port (the link printed says
    which), instead of distributed's "Port 8787 is already in use" warning amid the progress lines."""
    if quiet:
        return ":0"
    import socket

    with socket.socket() as s:
        try:
            s.bind(("", 8787))
        except OSError:
            return ":0"
    return ":8787"


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[picket-dask] {msg}", file=sys.stderr, flush=True)
