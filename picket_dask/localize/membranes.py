"""Membranes and other sheet-like structures: a Hessian plate filter, hysteresis, and extent.

A lipid bilayer is a thin dense sheet (~4 nm) that extends far beyond any particle. Across it the
density is a valley (dense = dark in cryo-ET; the sign is taken from the particles' polarity),
along it flat: the Hessian's largest eigenvalue (signed towards the dense side) is large and the
other two small, while a particle gives three similar eigenvalues and the ice none in
particular. Per voxel, on the tomogram binned to ~20 A voxels (a membrane needs no finer
sampling, and 8x fewer voxels):

    plate = max(0, l1 - |l2| - |l3|)   (l1 >= l2 >= l3, Hessian at sigma = MEMBRANE_SIGMA_A)

Voxels in the top 1 % of the plate response inside the sample seed membranes; they grow through
the top 5 % (hysteresis, as in Canny edge detection); a grown component is a membrane when its
longest extent exceeds the largest particle (the size prior's maximum diameter): a dense blob
can look plate-like locally but it ends within a particle's size. The membranes are grown by
``margin_A`` and returned at full resolution.

Why by hand: scikit-image gives the Hessian (skimage.feature; its eigenvalues in closed form in hessian.py) and hysteresis on
whole arrays; here both run per chunk with a halo, and the hysteresis's connectivity and the
extent test use picket-dask's chunked connected components and instance table.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from .morphology import grow

MEMBRANE_SIGMA_A = 40.0  # Hessian scale: a bilayer's thickness
BIN_TARGET_A = 20.0      # binned voxel size the filter runs at
SEED_PERCENTILE, GROW_PERCENTILE = 99.0, 95.0


def plate_response(block: np.ndarray, sigma_vox: float, polarity: int) -> np.ndarray:
    """Plate measure (z, y, x) of a block: max(0, l1 - |l2| - |l3|) of the Hessian of ``-polarity * block``
    (so that a sheet denser than the ice has l1 > 0 whatever the contrast convention)."""
    from skimage.feature import hessian_matrix

    from .hessian import symmetric_eigvals

    x = (-float(polarity)) * np.asarray(block, np.float32)
    h = hessian_matrix(x, sigma=sigma_vox, order="rc", use_gaussian_derivatives=False)
    l1, l2, l3 = symmetric_eigvals(h)  # closed form: ~6x faster than skimage's per-voxel eigvalsh
    return np.clip(l1 - np.abs(l2) - np.abs(l3), 0, None).astype(np.float32)


def bin_factor(voxel_size_A: float) -> int:
    return max(1, int(round(BIN_TARGET_A / voxel_size_A)))


def _upsample(block: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(np.repeat(block, f, 0), f, 1), f, 2)


def binned(image: da.Array, inside: da.Array, f: int) -> tuple[da.Array, da.Array]:
    """The tomogram averaged over f^3 voxel cubes and the sample mask (all f^3 inside), trimmed to whole cubes."""
    small = image.astype(np.float32)
    if f > 1:
        small = da.coarsen(np.mean, small, {0: f, 1: f, 2: f}, trim_excess=True)
        inside = da.coarsen(np.all, inside, {0: f, 1: f, 2: f}, trim_excess=True)
    small = small.rechunk(tuple(min(s, 64) for s in small.shape))
    return small, inside.rechunk(small.chunks)


def upsample(mask: da.Array, f: int, shape, chunks) -> da.Array:
    """A binned mask back at full resolution (each voxel repeated f times per axis; a trimmed
    remainder at the far faces takes the nearest value), with the given chunks."""
    full = mask
    if f > 1:
        full = mask.map_blocks(_upsample, f, dtype=mask.dtype, chunks=tuple(tuple(c * f for c in cs) for cs in mask.chunks))
    pad = [(0, s - fs) for s, fs in zip(shape, full.shape)]
    if any(p[1] for p in pad):
        full = da.pad(full, pad, mode="edge")
    return full.rechunk(chunks)


def membrane_mask(small: da.Array, voxel_A: float, inside: da.Array, polarity: int,
                  min_extent_A: float, margin_A: float = 40.0, scratch: str | None = None) -> tuple[da.Array, dict]:
    """Lazy boolean mask of membranes on a (binned) volume with voxels of ``voxel_A``, and a report.
    ``scratch``: a folder where the plate response is stored once (the caller removes it after the
    mask is written), instead of being recomputed by each of the ~5 passes that read it."""
    from ..progress import compute
    from .centroids import instance_table
    from .components import connected_components_chunked

    sigma = MEMBRANE_SIGMA_A / voxel_A
    depth = int(np.ceil(4 * sigma)) + 1
    if min(min(c) for c in small.chunks) <= depth:
        small = small.rechunk(tuple(max(depth + 1, min(s, 64)) for s in small.shape))
        inside = inside.rechunk(small.chunks)
    plate = small.map_overlap(plate_response, depth=depth, boundary="reflect", sigma_vox=sigma, polarity=polarity,
                              dtype=np.float32)
    if scratch is not None:
        from ..chunking import stored

        plate = stored(plate, scratch, label="context: membrane filter").rechunk(small.chunks)
    stride = (slice(None, None, 2),) * 3
    pv, keep = compute(plate[stride], inside[stride], label="context: membrane filter levels")
    vals = np.asarray(pv)[np.asarray(keep, bool)]
    if vals.size == 0:
        return da.zeros(small.shape, chunks=small.chunks, dtype=bool), {"membranes": 0, "reason": "no sample voxels"}
    hi, lo = np.percentile(vals, [SEED_PERCENTILE, GROW_PERCENTILE])
    labels, n = connected_components_chunked((plate > lo) & inside)
    report = {"sigma_A": MEMBRANE_SIGMA_A, "voxel_A": voxel_A, "seed_level": float(hi), "grow_level": float(lo),
              "min_extent_A": float(min_extent_A), "candidates": int(n)}
    if n == 0:
        report["membranes"] = 0
        return da.zeros(small.shape, chunks=small.chunks, dtype=bool), report
    table = instance_table(labels, n)
    seeded = instance_table(da.where(plate > hi, labels, 0).astype(np.uint32), n)
    extent_A = (table.bbox_max - table.bbox_min + 1).max(axis=1) * voxel_A
    is_membrane = np.zeros(int(n) + 1, bool)
    is_membrane[table.ids[extent_A >= min_extent_A]] = True
    has_seed = np.zeros(int(n) + 1, bool)
    has_seed[seeded.ids] = True
    is_membrane &= has_seed
    report["membranes"] = int(is_membrane.sum())
    radius = int(np.ceil(margin_A / voxel_A))
    mask = labels.map_blocks(lambda b, lut=is_membrane: lut[b], dtype=bool)
    return mask.map_overlap(grow, depth=radius, boundary=False, radius=radius, dtype=bool), report
