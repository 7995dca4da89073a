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
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
