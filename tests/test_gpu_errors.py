"""--gpu problems are one line with the real cause: cupy or dask-cuda missing vs installed but broken,
no CUDA device, and out of GPU memory on a chunk (naming the chunk size to lower)."""

import sys

import pytest

from picket_dask.backend import dask_cuda_problem, gpu_memory_error, gpu_problem
from picket_dask.errors import PicketError


def _broken_package(tmp_path, monkeypatch, name: str, error: str) -> None:
    """An installed-but-broken package: importing it raises ``error`` (as a CUDA library miss does)."""
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"raise ImportError({error!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_broken_dask_cuda_reports_its_import_error(tmp_path, monkeypatch):
    _broken_package(tmp_path, monkeypatch, "dask_cuda", "libcudart.so.12: cannot open shared object file")
    problem = dask_cuda_problem()
    assert problem.startswith("dask-cuda fails to import") and "libcudart.so.12" in problem


def test_broken_cupy_reports_its_import_error_and_gpu_run_refuses(tmp_path, monkeypatch):
    _broken_package(tmp_path, monkeypatch, "cupy", "CUDA driver version is insufficient")
    assert "CUDA driver version is insufficient" in gpu_problem()
    from picket_dask.cluster import get_client

    with pytest.raises(PicketError, match="cupy fails to import.*insufficient") as err:
        with get_client(gpu=True, quiet=True):
            pass
    assert "\n" not in str(err.value)


def test_missing_cupy_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # what an absent package looks like to import
    assert gpu_problem() == "cupy is not installed"


def test_out_of_gpu_memory_names_the_chunk_size():
    OutOfMemoryError = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    err = gpu_memory_error(OutOfMemoryError("Out of memory allocating 4,294,967,296 bytes"), (128, 128, 128))
    assert isinstance(err, PicketError) and "--chunks 64" in str(err) and "\n" not in str(err)
    assert gpu_memory_error(ValueError("other"), (128, 128, 128)) is None
