"""CUDA kernels for the label pass (cupy only; imported when a chunk is a cupy array).

Why by hand: the linear decision u . neighborhood + c over a block is a 5x5x5 correlation, which
cupyx.scipy.ndimage.correlate computes in one kernel too, but in its own order of float64 sums.
This kernel adds the 125 products in the CPU path's order (apply._linear_scores: z, then y, then
x offset; each product rounded, then added, no fused multiply-add), so GPU labels equal the CPU's
bit for bit, in one launch per block and decision instead of ~250 per two planes.

The compiled module is cached by cupy (in memory per process, and on disk in
~/.cupy/kernel_cache), so only a process's first block pays the compile.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_LINEAR_SRC = r"""
extern "C" __global__ void linear_labels(const float* sub, const double* u, const double c,
                                         unsigned char* out, const long long Z, const long long Y,
                                         const long long X, const int size) {
    const long long n = Z * Y * X;
    const long long PY = Y + size - 1, PX = X + size - 1;
    for (long long i = blockDim.x * (long long)blockIdx.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long x = i % X, r = i / X, y = r % Y, z = r / Y;
        double acc = 0.0;
        int t = 0;
        for (int dz = 0; dz < size; ++dz)
            for (int dy = 0; dy < size; ++dy) {
                const float* row = sub + ((z + dz) * PY + (y + dy)) * PX + x;
                for (int dx = 0; dx < size; ++dx, ++t)
                    acc = __dadd_rn(acc, __dmul_rn((double)row[dx], u[t]));
            }
        out[i] = __dadd_rn(acc, c) > 0.0 ? 1 : 0;
    }
}
"""

THREADS = 256


@lru_cache(maxsize=1)
def _linear_kernel():
    import cupy

    return cupy.RawKernel(_LINEAR_SRC, "linear_labels", options=("--fmad=false",))


def linear_labels(sub, u: np.ndarray, c: float, size: int):
    """Cluster ids (Z, Y, X) uint8 of [u . neighborhood + c > 0] for every voxel of a tile padded by
    size//2 per face (``sub``: cupy (Z+size-1, Y+size-1, X+size-1), any float dtype; ``u``: (size^3,)
    weights in (z, y, x) offset order). The same float64 sums, in the same order, as the CPU path."""
    import cupy

    sub = cupy.ascontiguousarray(sub, dtype=cupy.float32)
    Z, Y, X = (int(n) - size + 1 for n in sub.shape)
    out = cupy.empty((Z, Y, X), dtype=cupy.uint8)
    n = Z * Y * X
    if n == 0:
        return out
    blocks = min(-(-n // THREADS), 65535 * 8)
    _linear_kernel()((blocks,), (THREADS,), (sub, cupy.asarray(u, dtype=cupy.float64), np.float64(c), out,
                                             np.int64(Z), np.int64(Y), np.int64(X), np.int32(size)))
    return out
