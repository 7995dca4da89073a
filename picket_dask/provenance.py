"""Provenance recorded with every output: package versions, host, timings."""

from __future__ import annotations

import datetime as _dt
import platform
import time
from contextlib import contextmanager
from importlib import metadata
from typing import Iterator

_PACKAGES = (
    "picket-dask", "numpy", "scipy", "dask", "distributed", "dask-image", "dask-ml",
    "scikit-image", "scikit-learn", "zarr", "ome-zarr", "mrcfile", "starfile", "cupy-cuda12x",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (missing ones omitted)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict:
    """Versions plus the machine and the time, for an output's metadata."""
    return {
        "versions": versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


class Timings(dict):
    """Wall-clock seconds per named stage; ``with timings.stage("fit"): ...``."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - t0, 4)
