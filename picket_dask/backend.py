"""Array-module dispatch: kernels take ``xp`` (numpy or cupy) and never call numpy on device arrays."""

from __future__ import annotations

from types import ModuleType

import numpy as np


def get_xp(arr) -> ModuleType:
    """numpy for host arrays, cupy for device arrays (cupy is optional)."""
    if type(arr).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_host(arr) -> np.ndarray:
    """A numpy copy of a numpy or cupy array."""
    return arr.get() if hasattr(arr, "get") and not isinstance(arr, np.ndarray) else np.asarray(arr)


def asarray_like(value, like):
    """``value`` (host array) moved to the module of ``like``."""
    return get_xp(like).asarray(value)


def cupy_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    return gpu_problem() is None


def gpu_problem() -> str | None:
    """Why the GPU path cannot run here, in a few words (None: cupy imports and sees a CUDA device).

    Tells apart cupy not installed, cupy installed but failing to import (its error), and no
    usable CUDA device (the runtime's error, or a device count of 0).
    """
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("cupy", "cupy_backends"):
            return "cupy is not installed"
        return f"cupy fails to import: {exc}"
    except Exception as exc:  # installed but broken (CUDA libraries missing, wrong build)
        return f"cupy fails to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "no CUDA device is visible (device count 0)"


def fits_on_device(nbytes: int, share: float = 0.25) -> bool:
    """True when ``nbytes`` is at most ``share`` of the current CUDA device's free memory (False
    without a usable device): the GPU path then keeps a volume of that size resident."""
    if gpu_problem() is not None:
        return False
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    return nbytes <= share * free


def dask_cuda_problem() -> str | None:
    """Why dask-cuda cannot be used (not installed, or its import error); None when it imports."""
    try:
        import dask_cuda  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "dask_cuda":
            return "dask-cuda is not installed"
        return f"dask-cuda fails to import: {exc}"
    except Exception as exc:
        return f"dask-cuda fails to import: {type(exc).__name__}: {exc}"
    return None


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """True for cupy's out-of-memory errors (checked by name: cupy need not be installed)."""
    t = type(exc)
    return t.__module__.startswith(("cupy", "cupy_backends")) and "OutOfMemory" in t.__name__ or (
        "CUBLAS_STATUS_ALLOC_FAILED" in str(exc) or "CUFFT_ALLOC_FAILED" in str(exc))


def gpu_memory_error(exc: BaseException, chunks: tuple[int, ...]):
    """A one-line PicketError for cupy running out of memory on a chunk of shape ``chunks`` (z, y, x),
    naming a smaller chunk size; None for any other error."""
    if not is_gpu_out_of_memory(exc):
        return None
    from .errors import PicketError

    edge = max(chunks)
    return PicketError(f"chunks {tuple(int(c) for c in chunks)}", "ran out of GPU memory on a chunk",
                       f"lower the chunk size: --chunks {max(16, edge // 2)} (now {edge})")
