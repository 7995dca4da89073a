"""What every Dask worker gets before it runs picket-dask's tasks: glibc malloc thresholds that
keep array temporaries off fresh mmaps (get_client registers the plugin on any cluster: local,
dask-cuda, dask-jobqueue or a running scheduler)."""

from __future__ import annotations

import sys

from distributed.diagnostics.plugin import WorkerPlugin

# glibc's own adaptive end state on 64-bit Linux: arrays under 32 MiB come from the heap, and up to
# 64 MiB freed at its top stay mapped for the next task (DEFAULT_MMAP_THRESHOLD_MAX, 2x for trim)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def set_malloc_thresholds(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc malloc's mmap and trim thresholds in this process (bytes); False where there is no glibc.

    Why: distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory
    back to the OS). Setting any threshold also freezes glibc's adaptive mmap threshold at 128 KiB,
    so every array temporary above that is a fresh mmap, zero-filled page by page when first
    touched and unmapped when freed. The label pass makes a few MiB of temporaries per tile: in
    such a worker it ran 3x slower than in the threaded scheduler (crowded dev tomogram: 23 s vs
    7.6 s; 9.6 s once these thresholds are set). No library exposes mallopt, hence ctypes.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold)) and libc.mallopt(m_trim_threshold, int(trim_threshold)))
    except (OSError, AttributeError):  # a libc without mallopt (musl)
        return False


class MallocThresholds(WorkerPlugin):
    """Worker plugin: set_malloc_thresholds on every worker of the cluster when it starts (or joins)."""

    idempotent = True  # registering it again (a second run on the same cluster) changes nothing

    def setup(self, worker) -> None:
        worker.picket_dask_malloc = set_malloc_thresholds()
