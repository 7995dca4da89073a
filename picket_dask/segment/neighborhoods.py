"""5x5x5 neighborhoods: the fitting sample (random voxels of a z-slab) and per-block sliding windows.

A voxel is *interior* when it is at least ``half`` voxels from every face; only interior voxels
get a neighborhood (and a label other than 255).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from ..backend import get_xp, to_host
from ..errors import PicketError
from ..progress import by_reference, compute_each
from .preprocess import read_scaled_block

HALF = 2  # neighborhood_size 5


def interior_range(nz: int, z_bounds: tuple[int | None, int | None] | None, half: int = HALF) -> tuple[int, int]:
    """Centre-voxel z range [lo, hi) of slices ``z_bounds`` clipped to the interior of ``nz`` slices (a full
    neighbourhood each side); empty (hi <= lo) when they leave none."""
    lo, hi = (None, None) if z_bounds is None else z_bounds
    lo = half if lo is None else max(int(lo), half)
    hi = nz - half if hi is None else min(int(hi), nz - half)
    return lo, hi


def slab_bounds(shape: tuple[int, int, int], z_bounds: tuple[int | None, int | None] | None, half: int = HALF) -> tuple[int, int]:
    """Centre-voxel z range [lo, hi) of the fitting slab, clipped to interior voxels."""
    lo, hi = interior_range(shape[0], z_bounds, half)
    if hi <= lo:
        raise PicketError(f"z bounds {z_bounds}", f"leave no interior slice of a volume with {shape[0]} slices",
                          f"choose bounds within [{half}, {shape[0] - half})")
    return lo, hi


def sample_voxels(shape: tuple[int, int, int], z_bounds, max_voxels: int | None, seed: int, half: int = HALF) -> np.ndarray:
    """Sorted (n, 3) int64 (z, y, x) coordinates of a seeded uniform sample of interior slab voxels."""
    zlo, zhi = slab_bounds(shape, z_bounds, half)
    ny, nx = shape[1] - 2 * half, shape[2] - 2 * half
    total = (zhi - zlo) * ny * nx
    if max_voxels is None or max_voxels >= total:
        flat = np.arange(total, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        flat = np.sort(rng.choice(total, size=int(max_voxels), replace=False))
    z, rem = np.divmod(flat, ny * nx)
    y, x = np.divmod(rem, nx)
    return np.stack([z + zlo, y + half, x + half], axis=1)


def _extract(block: np.ndarray, local: np.ndarray, half: int) -> np.ndarray:
    """Neighborhoods (n, (2h+1)^3) float32 around ``local`` coordinates of an overlapped block."""
    xp = get_xp(block)
    size = 2 * half + 1
    # one index per neighborhood into the view of all windows: 8x faster than indexing the block with
    # three broadcast (n, 5, 5, 5) coordinate arrays (0.05 vs 0.40 s for 125k neighborhoods), same values
    win = xp.lib.stride_tricks.sliding_window_view(block, (size, size, size))
    idx = xp.asarray(local)
    picked = win[idx[:, 0], idx[:, 1], idx[:, 2]]
    return to_host(picked).astype(np.float32, copy=False).reshape(len(local), size**3)


def _extract_rows(block: np.ndarray, coords: np.ndarray, rows: tuple[int, int], origin, half: int) -> np.ndarray:
    """Neighborhoods of ``coords[rows[0]:rows[1]]`` (volume coordinates inside the block at ``origin``)."""
    return _extract(block, coords[rows[0]:rows[1]] - np.asarray(origin), half)


def _extract_stored(stored: tuple[str, float, float], origin, shape, coords: np.ndarray, rows: tuple[int, int],
                    half: int) -> np.ndarray:
    return _extract_rows(read_scaled_block(*stored, origin, shape, half), coords, rows, origin, half)


def gather_neighborhoods(volume: da.Array, coords: np.ndarray, half: int = HALF,
                         stored: tuple[str, float, float] | None = None) -> np.ndarray:
    """Flattened (z, y, x)-ordered neighborhoods (n, 125) float32 of ``coords``, in the order given.

    Only the blocks holding sampled voxels are computed, each with a halo of ``half`` voxels;
    the features of the slab are never materialised. ``stored`` = (blurred store, min, max): each
    task reads its chunk + halo from the store (no neighbouring chunks held in memory).
    """
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in volume.chunks]
    bidx = np.stack([np.searchsorted(s, coords[:, a], side="right") - 1 for a, s in enumerate(starts)], axis=1)
    nb = [len(c) for c in volume.chunks]
    key = np.ravel_multi_index(bidx.T, nb)
    order = np.argsort(key, kind="stable")
    keys, first = np.unique(key[order], return_index=True)
    bounds = np.append(first, len(order))
    if stored is None:
        ov = da.overlap.overlap(volume, depth={0: half, 1: half, 2: half}, boundary={0: 0, 1: 0, 2: 0})
        blocks = ov.to_delayed()
    # the coordinates grouped by block go to the cluster once (24 MB at 1M voxels); each task gets a
    # reference and its row range, not its own copy inside the task graph
    grouped = by_reference(coords[order])
    tasks = []
    for k, a, b in zip(keys, bounds[:-1], bounds[1:]):
        bi = np.unravel_index(k, nb)
        origin = tuple(int(starts[ax][bi[ax]]) for ax in range(3))  # halo shifts by +half, window starts at -half
        rows = (int(a), int(b))
        if stored is None:
            tasks.append(dask.delayed(_extract_rows)(blocks[bi], grouped, rows, origin, half))
        else:
            shape = tuple(int(volume.chunks[ax][bi[ax]]) for ax in range(3))
            tasks.append(dask.delayed(_extract_stored)(stored, origin, shape, grouped, rows, half))
    out = np.empty((len(coords), (2 * half + 1) ** 3), np.float32)

    def put(i: int, part: np.ndarray) -> None:
        out[order[bounds[i]:bounds[i + 1]]] = part

    # a quarter of the blocks per local batch: parts held at once stay ~1/4 of the sample, and
    # neighbouring blocks' halos are recomputed at most at the 3 batch seams
    compute_each(tasks, put, label=f"fit sample: gathering {len(coords):,} neighborhoods", batch=max(16, -(-len(tasks) // 4)))
    return out


def sliding_windows(padded, xp, half: int = HALF):
    """View (z, y, x, 2h+1, 2h+1, 2h+1) of all neighborhoods of a block padded by ``half`` per face."""
    size = 2 * half + 1
    return xp.lib.stride_tricks.sliding_window_view(padded, (size, size, size))


def neighborhood_matrix(padded, xp=np, half: int = HALF):
    """(n, (2h+1)^3) flattened (z, y, x) neighborhoods of every voxel of a block padded by ``half`` per
    face, rows in C order of the voxels: ``sliding_windows(...).reshape(n, -1)``'s values, as the
    transpose (a Fortran-ordered view) of a C-ordered ((2h+1)^3, n) array.

    Built in one copy of the window view with the offsets moved first: numpy then walks contiguous
    rows of the block, where a copy of the window view itself walks innermost runs of 5 values; BLAS
    takes the transposed layout at the same speed. One call, not one per offset: under dask's threaded
    scheduler each numpy call hands the GIL over twice, and 125 small copies per tile made the label
    pass as slow on 2 threads as on 1 (benchmarks/README.md, 2026-11-28). Gathering single voxels'
    rows from it is slow (their values lie n apart): take those from the window view instead.
    """
    size = 2 * half + 1
    Z, Y, X = (s - 2 * half for s in padded.shape)
    out = xp.empty((size, size, size, Z, Y, X), dtype=padded.dtype)
    out[...] = sliding_windows(padded, xp, half).transpose(3, 4, 5, 0, 1, 2)
    return out.reshape(size**3, -1).T
