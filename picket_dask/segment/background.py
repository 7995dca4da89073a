"""Background: the tomogram minus its local mean on scales larger than any particle.

Real tomograms carry density that varies slowly across the field: a lamella thicker at one end, a
carbon support film or a crystalline ice layer over part of the view, uneven illumination. PickET
clusters voxel features of the whole volume, so such a gradient becomes what the clusters split: on
the dev set a linear ramp of 0.5 noise standard deviations across x took gabor-gmm-ws from F1 0.605
to 0.507 (crowded) and 0.441 to 0.324 (sparse), and a carbon-like band 0.6 SDs denser over a fifth
of the field to 0.12 (crowded) (benchmarks/HISTORY.md, sixteenth session). Particles are small
against such variations, so the local mean over a Gaussian of sigma = the largest particle diameter
of the size prior (400 A by default) is background; subtracting it leaves particles, membranes and
noise as they were (a 300 A ribosome keeps ~99 % of its contrast: its volume is ~1 % of the
Gaussian's).

The local mean is the best-fitting plane (a linear trend in z, y, x; least squares) plus the
Gaussian local mean of what the plane leaves, both over the voxels that hold data (a constant fill,
segment/nodata.py, weighs nothing: a zero-filled margin of a tomogram whose mean is far from 0 would
otherwise tilt the plane and pull the mean at its edge): a reflecting blur alone would bend a gradient within ~2
sigma of every face (the mirror image of a ramp is a V), and with the plane first a ramp is removed
up to the faces.

How, chunked: the local mean is computed on the tomogram binned by f (block means, f a power of two
that keeps >= 2.5 binned voxels per sigma and at most 4), blurred there (scipy's Gaussian, mode reflect
as preprocess.blur), held in memory (1/f^3 of the tomogram: 0.8 M voxels for 52 M at
f = 4), and interpolated back per chunk (trilinear, binned voxel j centred at j f + (f - 1) / 2;
beyond the last centres the edge value). numpy or cupy chunks alike (the array module of the chunk).

Why by hand: dask-image and scipy give the blur; the per-chunk trilinear upsampling of a small
in-memory array onto a chunk's own voxel range is three 1-D interpolations (no library does it on
dask chunks without a full-resolution coordinate array, which map_coordinates would need).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from ..backend import get_xp, to_host
from ..progress import by_reference, compute

MIN_BINNED_SIGMA_VOX = 2.5  # the binned blur stays well sampled
MAX_BIN = 4
TRUNCATE = 4.0  # scipy's default kernel reach, as preprocess.blur


def background_sigma_vox(particle_diameter_A: tuple[float, float] | None, voxel_A: float) -> float:
    """Sigma (voxels) of the local mean: the size prior's largest diameter over the voxel size
    (400 A at 10 A voxels: 40 voxels); ``particle_diameter_A`` None: the default prior's."""
    from ..config import DEFAULT_DIAMETER_A

    d_max = float((particle_diameter_A or DEFAULT_DIAMETER_A)[1])
    return round(d_max / float(voxel_A), 4)


def bin_factor(sigma_vox: float, shape: tuple[int, ...]) -> int:
    """The largest power of two <= MAX_BIN leaving >= MIN_BINNED_SIGMA_VOX binned voxels per sigma and at
    least 2 binned voxels along every axis."""
    f = 1
    while (2 * f <= MAX_BIN and sigma_vox / (2 * f) >= MIN_BINNED_SIGMA_VOX
           and all(n // (2 * f) >= 2 for n in shape)):
        f *= 2
    return f


def local_mean_binned(data: da.Array, sigma_vox: float, exclude: da.Array | None = None) -> tuple[np.ndarray, int]:
    """The local mean (module docstring) of ``data`` (host chunks) on the grid binned by f, as a numpy array
    (z, y, x), and f. ``exclude``: voxels that are not data (segment/nodata.py's constant fill) and weigh
    nothing: the plane is fitted and the Gaussian taken over the data alone (a normalized convolution)."""
    f = bin_factor(sigma_vox, data.shape)
    x = data.astype(np.float32)
    w = da.ones(x.shape, dtype=np.float32, chunks=x.chunks) if exclude is None else (~exclude).astype(np.float32).rechunk(x.chunks)
    x = x * w
    pad = [(0, (-n) % f) for n in x.shape]
    if any(p for _, p in pad):  # a partial last cube along an axis: its missing voxels weigh 0
        x, w = da.pad(x, pad, mode="constant"), da.pad(w, pad, mode="constant")
    sums = da.coarsen(np.sum, x, {0: f, 1: f, 2: f}) if f > 1 else x
    counts = da.coarsen(np.sum, w, {0: f, 1: f, 2: f}) if f > 1 else w
    sums, counts = compute(sums, counts, label="background: the tomogram binned for its local mean")
    sums, counts = to_host(sums).astype(np.float32), to_host(counts).astype(np.float32)  # float32: 1/64 of the tomogram
    if not counts.any():
        return np.zeros(counts.shape, np.float32), f
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    # the best-fitting plane first (weighted least squares in z, y, x), then the Gaussian of what is left: a
    # reflecting blur alone bends a gradient within ~2 sigma of every face (the mirror image of a ramp is a V)
    plane = fitted_plane(mean, counts)
    # in memory (1/f^3 of the tomogram): scipy's blur, whose kernel (4 sigma) may reach past the binned volume
    g = sigma_vox / f
    num = ndi.gaussian_filter((mean - plane) * counts, g, mode="reflect", truncate=TRUNCATE)
    den = ndi.gaussian_filter(counts, g, mode="reflect", truncate=TRUNCATE)
    rest = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-6 * counts.max())
    return (plane + rest).astype(np.float32), f


def fitted_plane(a: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The (weighted) least-squares fit of c0 + cz z + cy y + cx x to ``a`` (z, y, x), evaluated on its grid.
    The normal equations' sums are einsums over the axes' coordinate vectors: no full-size temporary but ``w a``."""
    a = np.asarray(a)
    z, y, x = (np.arange(n, dtype=np.float64) - (n - 1) / 2 for n in a.shape)
    w = np.ones(a.shape, a.dtype) if weights is None else np.asarray(weights)
    one = [np.ones(n) for n in a.shape]
    # each basis function as its three axis factors: 1, z, y, x
    basis = [(one[0], one[1], one[2]), (z, one[1], one[2]), (one[0], y, one[2]), (one[0], one[1], x)]

    def weighted_sum(arr, fi, fj=None):
        u = fi if fj is None else tuple(p * q for p, q in zip(fi, fj))
        return float(np.einsum("zyx,z,y,x->", arr, *u, optimize=True, dtype=np.float64))  # sums in float64

    ata = np.array([[weighted_sum(w, bi, bj) for bj in basis] for bi in basis])
    wa = w * a
    atb = np.array([weighted_sum(wa, bi) for bi in basis])
    c0, cz, cy, cx = np.linalg.lstsq(ata, atb, rcond=None)[0]  # lstsq: a flat axis (one binned voxel) leaves ata singular
    return (c0 + cz * z[:, None, None] + cy * y[None, :, None] + cx * x[None, None, :]).astype(a.dtype)


def upsampled_block(mean: np.ndarray, f: int, block, block_info=None):
    """The local mean on one chunk's voxels (trilinear from the binned ``mean``), in the chunk's array module."""
    xp = get_xp(block)
    (z0, z1), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    lo = [max(int(a // f) - 1, 0) for a in (z0, y0, x0)]
    hi = [min(int((b - 1) // f) + 2, n) for b, n in zip((z1, y1, x1), mean.shape)]
    sub = xp.asarray(mean[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    out = sub
    for axis, (a, b) in enumerate(((z0, z1), (y0, y1), (x0, x1))):  # the window's voxel k is binned voxel lo + k
        out = _lerp_axis(out, axis, a, b, f, lo[axis], mean.shape[axis], xp)
    return out.astype(xp.float32)


def _lerp_axis(a, axis: int, start: int, stop: int, f: int, offset: int, n_full: int, xp):
    """Linear interpolation along ``axis`` of a window ``a`` of the binned array (its first voxel: binned voxel
    ``offset`` of ``n_full``) at the fine voxels start..stop-1: binned voxel j is centred at j f + (f - 1) / 2;
    beyond the first and last centres, the edge value."""
    c = (xp.arange(start, stop, dtype=xp.float32) - (f - 1) / 2) / f
    c = xp.clip(c, 0, n_full - 1) - offset
    n = a.shape[axis]
    c = xp.clip(c, 0, n - 1)
    i0 = xp.minimum(xp.floor(c).astype(xp.int64), max(n - 2, 0))
    i1 = xp.minimum(i0 + 1, n - 1)
    w = (c - i0).astype(xp.float32)
    shape = [1] * a.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return xp.take(a, i0, axis=axis) * (1 - w) + xp.take(a, i1, axis=axis) * w


def _minus_local_mean(block, mean: np.ndarray, f: int, block_info=None):
    """One chunk minus the local mean on its voxels (``upsampled_block``)."""
    return block - upsampled_block(mean, f, block, block_info)


def _zero_where(block, mask):
    """``block`` with 0 where ``mask`` (host booleans) is True, in the block's array module."""
    xp = get_xp(block)
    return xp.where(xp.asarray(mask), xp.float32(0), block)


def remove_background(data: da.Array, sigma_vox: float, exclude: da.Array | None = None,
                      host: da.Array | None = None) -> tuple[da.Array, dict]:
    """``data`` minus its local mean (module docstring), lazy float32 (z, y, x), and a report. The mean is
    estimated from ``host`` (the same tomogram in host memory, when ``data``'s chunks are on a GPU) without the
    ``exclude`` voxels (no data); it is subtracted everywhere."""
    mean, f = local_mean_binned(data if host is None else host, sigma_vox, exclude)
    # the binned mean reaches the tasks by reference (scattered once on a cluster): inside each task of the graph it
    # was 64 MB per task on a 4 GiB tomogram, and a 1 GiB worker holding a few of them was restarted
    out = data.astype(np.float32).map_blocks(_minus_local_mean, by_reference(mean), f, dtype=np.float32)
    if exclude is not None:  # the fill at the data's level (0 once the mean is off): no step for the blur, no extreme
        out = da.map_blocks(_zero_where, out, exclude.rechunk(out.chunks), dtype=np.float32)
    spread = float(np.percentile(mean, 99) - np.percentile(mean, 1)) if mean.size else 0.0
    return out, {"sigma_vox": round(float(sigma_vox), 3), "binned_by": f,
                 "local_mean_range_1_99": round(spread, 6),
                 "rule": "tomogram minus its Gaussian local mean at sigma = the size prior's largest diameter"}
