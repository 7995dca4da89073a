"""The GPU label pass: its tiling (checked everywhere) and, on a machine with cupy and a CUDA device,
labels equal to the CPU's (the fused linear kernel bit for bit; quadratic decisions to rounding)
and a whole step 1 on the GPU. CI has no GPU: the device tests run on the GPU machine
(benchmarks/gpu.py runs them first)."""

import dask.array as da
import numpy as np
import pytest

from picket_dask.backend import cupy_available
from picket_dask.config import SegmentParams
from picket_dask.segment.apply import _linear_scores, _tiles, label_block, semantic_labels

from conftest import fit_six

gpu = pytest.mark.skipif(not cupy_available(), reason="needs cupy and a CUDA device")


@pytest.mark.parametrize("shape", [(7, 9, 11), (40, 300, 5), (3, 1200, 1000), (128, 128, 128)])
@pytest.mark.parametrize("space,linear", [("neighborhood", True), ("neighborhood", False), ("fft", False)])
@pytest.mark.parametrize("on_gpu", [False, True])
def test_tiles_cover_every_voxel_once(shape, space, linear, on_gpu):
    Z, Y, X = shape
    hits = np.zeros((Z, Y), np.int32)
    for (z0, z1), (y0, y1) in _tiles(space, Z, Y, X, 5, linear, on_gpu):
        assert z1 > z0 and y1 > y0
        hits[z0:z1, y0:y1] += 1
    assert (hits == 1).all()


@pytest.fixture(scope="module")
def fitted():
    _, scaled, _, segs = fit_six()
    return scaled, segs


@gpu
def test_fused_linear_kernel_equals_the_cpu_sums_bit_for_bit():
    import cupy

    from picket_dask.segment.gpu_kernels import linear_labels

    rng = np.random.default_rng(0)
    sub = rng.random((12, 21, 33), dtype=np.float32)
    u = rng.normal(size=125)
    c = -float(np.median(_linear_scores(sub, [u], 5, np)[0]))  # about half the voxels on each side
    cpu = (_linear_scores(sub, [u], 5, np)[0] + c) > 0
    got = cupy.asnumpy(linear_labels(cupy.asarray(sub), u, c, 5))
    np.testing.assert_array_equal(got, cpu.astype(np.uint8))


@gpu
def test_gpu_label_block_equals_cpu_for_every_pair(fitted):
    import cupy

    scaled, segs = fitted
    decisions = [s.model.decision for s in segs]
    padded = np.pad(scaled, 2)
    cpu = label_block(padded, decisions, scaled.shape)
    got = cupy.asnumpy(label_block(cupy.asarray(padded), decisions, scaled.shape))
    for i, s in enumerate(segs):
        if s.clusterer == "kmeans" and s.features != "ffts":  # the fused kernel: the same sums
            np.testing.assert_array_equal(got[i], cpu[i], err_msg=s.name)
        else:  # cuBLAS sums in its own order: only voxels on the decision boundary may differ
            assert (got[i] != cpu[i]).mean() <= 1e-4, s.name


@gpu
def test_gpu_chunked_labels_equal_cpu(fitted):
    import cupy

    scaled, segs = fitted
    decisions = [s.model.decision for s in segs]
    cpu = semantic_labels(da.from_array(scaled, chunks=(10, 16, 20)), decisions).compute()
    dev = da.from_array(scaled, chunks=(10, 16, 20)).map_blocks(cupy.asarray)
    got = cupy.asnumpy(semantic_labels(dev, decisions).compute())
    assert (got != cpu).mean() <= 1e-4


@gpu
def test_step1_on_the_gpu_matches_the_cpu(tmp_path):
    """Lamella, sample, fit and labels with device gpu on a realistic tiny scene (vacuum, gold)."""
    from picket_dask.io.omezarr import open_labels
    from picket_dask.io.tomogram import convert, open_tomogram
    from picket_dask.segment.semantic import segment_tomogram
    from picket_dask.simulate import simulate

    files = simulate(tmp_path / "sim", "tiny", seed=5)
    out = {}
    for device in ("cpu", "gpu"):
        img = convert(files["tomogram"], tmp_path / f"{device}.zarr", chunks=32)
        t = open_tomogram(img, 32)
        segs, _ = segment_tomogram(img, t.data, t.voxel_size, [("gabor", "gmm"), ("intensities", "kmeans")],
                                   SegmentParams(max_fit_voxels=20000, device=device))
        out[device] = {s.name: (open_labels(img, f"semantic-{s.name}")[0].compute(), (s.lamella.found, s.lamella.z_range()))
                       for s in segs}
    for name, (cpu, lam) in out["cpu"].items():
        got, glam = out["gpu"][name]
        assert glam == lam, name  # the same slab (tile statistics may differ in the last bits)
        assert (got != cpu).mean() <= 1e-3, name
