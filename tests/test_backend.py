"""The chunk kernels run on numpy or cupy: they take their array module from the data and never hand
a (possibly device) array to numpy. CI has no GPU, so this is checked on the source: inside the
kernels, numpy may only build small host constants (which are then moved with xp.asarray)."""

import ast
import inspect

import numpy as np
import pytest

from picket_dask.backend import get_xp, to_host
from picket_dask.segment import apply, clustering, features, neighborhoods

KERNELS = [apply.label_block, features.fft_features_sliding, features.fft_features_from_neighborhoods,
           features._dft_matrix, clustering.scores_to_labels, clustering.predict, neighborhoods._extract]
HOST_CONSTANTS = {"arange", "outer", "exp", "empty", "zeros"}  # used on Python ints / host constants only


@pytest.mark.parametrize("fn", KERNELS, ids=lambda f: f.__name__)
def test_kernels_only_build_host_constants_with_numpy(fn):
    tree = ast.parse(inspect.getsource(fn).lstrip())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id == "np" and node.func.attr not in HOST_CONSTANTS:
                bad.append(f"np.{node.func.attr} (line {node.lineno})")
    assert not bad, f"{fn.__name__} calls numpy on arrays: {bad}; use xp (get_xp) or to_host"


def test_kernels_take_the_module_from_the_data():
    for fn in (apply.label_block, neighborhoods._extract):
        assert "get_xp(" in inspect.getsource(fn)
    for fn in (features.fft_features_sliding, clustering.scores_to_labels, clustering.predict):
        assert "xp" in inspect.signature(fn).parameters


def test_backend_helpers_on_numpy():
    a = np.arange(6).reshape(2, 3)
    assert get_xp(a) is np
    assert to_host(a) is not None and np.array_equal(to_host(a), a)


def test_gpu_device_without_cupy_is_a_clear_error():
    import dask.array as da

    from picket_dask.backend import cupy_available
    from picket_dask.errors import PicketError
    from picket_dask.segment.semantic import on_device

    if cupy_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(PicketError, match="cupy"):
        on_device(da.zeros((8, 8, 8), chunks=4), "gpu")
