"""Apply fitted models chunk by chunk: features and prediction inside one task, uint8 labels out.

Each task gets its chunk with a halo of 2 voxels (constant 0 beyond the volume; those voxels
only ever reach border voxels, which are labelled 255), builds the neighborhoods of a few
z-planes at a time, multiplies them by every model's decision matrix at once, and returns one
uint8 label volume per model (linear decisions alone: a sum of shifted views instead of the
matrix). Features exist only inside the task, a few planes at a time.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..backend import get_xp
from ..chunking import at_least, block_boxes, from_block_tasks
from .clustering import Decision, scores_to_labels, stacked_matrix
from .decision_precision import MixedDecisions, Recompute, certified_labels
from .features import fft_features_sliding
from .neighborhoods import HALF, neighborhood_matrix, sliding_windows
from .preprocess import read_scaled_block

BORDER = 255
# (planes, rows) per tile, measured on 128x256x256 in 128^3 chunks with 2 threads: quadratic
# decisions (gmm) like small tiles: (1, 32) 3.6 s vs (2, 128) 4.5 s; DFT: (8, 8) 7.1 s vs (2, 32) 9.5 s.
# Linear decisions (kmeans) skip the neighborhood matrix (a GEMV on it is memory-bound: 0.37 s per
# 128^3 block) and sum 125 shifted views of 2 planes held in cache (0.10 s per block, same labels).
TILES = {"linear": (2, None), "neighborhood": (1, 32), "fft": (8, 8)}
# On a GPU the opposite holds: every kernel launch costs ~10 us whatever its size, so tiles are as
# large as device memory allows. Voxels per tile: the neighborhood matrix is 1 KiB per voxel
# (512 MiB per tile), the DFT intermediates ~5 KiB (1.3 GiB); linear decisions take the whole block
# in one fused kernel (gpu_kernels.linear_labels). Several worker threads may share one GPU.
GPU_TILE_VOXELS = {"neighborhood": 1 << 19, "fft": 1 << 18}
# (space, on a GPU) -> quadratic decisions in float32 with a certified bound, float64 where it could
# differ (decision_precision.py; same labels). Not for DFT features: their sliding DFT costs more
# than the product, and 6-9 % of the voxels went back to float64 (no measurable gain); not on GPUs
# (untested there: a GPU's float64 is fast enough for the product).
MIXED_PRECISION = {("neighborhood", False): True, ("fft", False): False, ("neighborhood", True): False, ("fft", True): False}
# The float32 pass takes every tile's neighborhood matrix as built by neighborhood_matrix (offsets first,
# a Fortran-ordered view) whatever its width: with the projections formed as rows (decision_precision),
# intensities-gmm's 126 columns label faster on that layout too (one 128^3 block with intensities-gmm,
# gabor-gmm and a k-means, 1 thread: 3.4-3.5 -> 2.3-2.8 s; the C-ordered copy of the window view was
# kept for passes wider than 64 columns until 2026-11-28).
RANK_SAMPLE_STEP = 8  # every 8th voxel per axis: 4,096 of a 128^3 block's 2 M voxels choose its rank truncation
GPU_TILING = True  # False: cupy chunks take the CPU's tiles and no fused kernel (the path before; benchmarks/gpu.py)


def _tiles(space: str, Z: int, Y: int, X: int, size: int, linear: bool = False, gpu: bool = False):
    """(z, y) ranges of the tiles a block is processed in. CPU: small enough that the neighborhood
    matrix (or the DFT intermediates) stays in cache, large enough for one efficient BLAS call.
    GPU: whole planes, as many as GPU_TILE_VOXELS allows (the whole block for linear decisions)."""
    kind = "linear" if linear and space == "neighborhood" else space
    if gpu:
        planes = Z if kind == "linear" else max(1, GPU_TILE_VOXELS[kind] // max(1, Y * X))
        rows = Y if kind == "linear" or planes > 1 else max(1, min(Y, GPU_TILE_VOXELS[kind] // max(1, X)))
    else:
        planes, rows = TILES[kind]
    rows = rows or Y
    for z0 in range(0, Z, planes):
        for y0 in range(0, Y, rows):
            yield (z0, min(Z, z0 + planes)), (y0, min(Y, y0 + rows))


def _linear_scores(sub, weights: list[np.ndarray], size: int, xp) -> list:
    """u . neighborhood for every voxel of a padded tile (z, y, x) and each weight vector u (size^3,):
    the sum over the 125 offsets of u[offset] x the shifted tile, in float64, in a fixed order (so
    every chunking gives the same bits). Equal to the product with the neighborhood matrix up to
    rounding, without forming it."""
    sub = xp.asarray(sub, dtype=xp.float64)
    Z, Y, X = (n - size + 1 for n in sub.shape)
    acc = [xp.zeros((Z, Y, X)) for _ in weights]
    tmp = xp.empty((Z, Y, X))
    t = 0
    for dz in range(size):
        for dy in range(size):
            for dx in range(size):
                view = sub[dz:dz + Z, dy:dy + Y, dx:dx + X]
                for a, u in zip(acc, weights):
                    xp.multiply(view, float(u[t]), out=tmp)
                    a += tmp
                t += 1
    return acc


def _rank_sample(padded, size: int, step: int | None = None):
    """Flattened neighborhoods (n, size^3) float32 of every ``step``-th voxel per axis of a padded block:
    the sample each block's float32 pass chooses its rank truncation on (decision_precision.truncation_rank)."""
    step = RANK_SAMPLE_STEP if step is None else step
    win = sliding_windows(np.asarray(padded), np, size // 2)[::step, ::step, ::step]
    return win.reshape(-1, size**3).astype(np.float32)


def _window_rows(win, rows, xp):
    """Float64 flattened neighborhoods (len(rows), size^3), C order, of the voxels ``rows`` (flat
    indices into the window view's first three axes): the float64 path's inputs for those rows."""
    size3 = int(np.prod(win.shape[3:]))
    return win[xp.unravel_index(rows, win.shape[:3])].reshape(-1, size3).astype(xp.float64)


def label_block(padded, decisions: list[Decision], volume_shape: tuple[int, int, int], block_info=None, half: int = HALF):
    """Labels (k, z, y, x) uint8 of one chunk given the chunk padded by ``half`` voxels per face.

    ``block_info`` (from dask) locates the chunk; voxels within ``half`` of the volume's faces get 255.
    Works on numpy or cupy chunks alike.
    """
    xp = get_xp(padded)
    size = 2 * half + 1
    Z, Y, X = (s - 2 * half for s in padded.shape)
    out = xp.empty((len(decisions), Z, Y, X), dtype=xp.uint8)
    groups = {}
    for i, d in enumerate(decisions):
        groups.setdefault(d.space, []).append(i)
    mats = {space: xp.asarray(stacked_matrix([decisions[i] for i in idx])) for space, idx in groups.items()}
    gpu = xp is not np and GPU_TILING
    for space, idx in groups.items():
        decs = [decisions[i] for i in idx]
        linear = all(d.V.shape[1] == 0 for d in decs)
        use_mixed = MIXED_PRECISION[(space, xp is not np)] and not linear
        sample = _rank_sample(padded, size) if use_mixed and space == "neighborhood" else None  # DFT inputs are not neighborhoods
        mixed = MixedDecisions(decs, mats[space], xp, sample) if use_mixed else None
        # the unsure voxels of all tiles go to the float64 path together; tiles' labels are written after it
        recompute, deferred = (Recompute(mixed), []) if mixed is not None else (None, None)
        for (z0, z1), (y0, y1) in _tiles(space, Z, Y, X, size, linear, gpu):
            sub = padded[z0:z1 + 2 * half, y0:y1 + 2 * half]
            if space == "neighborhood" and linear and gpu and padded.dtype == xp.float32:
                from .gpu_kernels import linear_labels  # one fused kernel per decision, the CPU's sums

                for i, d in zip(idx, decs):
                    out[i, z0:z1, y0:y1] = linear_labels(sub, d.u, d.c, size)
                continue
            if space == "neighborhood" and linear:
                scores = _linear_scores(sub, [d.u for d in decs], size, xp)
                for i, sc, d in zip(idx, scores, decs):
                    out[i, z0:z1, y0:y1] = (sc + d.c) > 0
                continue
            if space == "neighborhood":
                win = sliding_windows(sub, xp, half)
                if mixed is not None and sub.dtype == xp.float32:  # float32 data: x32 holds the inputs exactly
                    x32 = neighborhood_matrix(sub, xp, half)  # float32 (n, 125)
                    labels = certified_labels(mixed, x32, lambda rows, win=win: _window_rows(win, rows, xp), recompute)
                else:
                    labels = scores_to_labels(win.reshape(-1, size**3).astype(xp.float64) @ mats[space], decs, xp)
            else:
                x = fft_features_sliding(sub, xp, size).reshape((z1 - z0) * (y1 - y0) * X, -1)
                if mixed is not None:
                    labels = certified_labels(mixed, x.astype(xp.float32), lambda rows, x=x: x[rows], recompute)
                else:
                    labels = scores_to_labels(x @ mats[space], decs, xp)
            if recompute is not None and recompute.parts:  # this tile waits for its unsure voxels
                deferred.append(((z0, z1), (y0, y1), labels))
                continue
            for i, lab in zip(idx, labels):
                out[i, z0:z1, y0:y1] = lab.reshape(z1 - z0, y1 - y0, X)
        if recompute is not None:
            recompute.flush()
            for (z0, z1), (y0, y1), labels in deferred:
                for i, lab in zip(idx, labels):
                    out[i, z0:z1, y0:y1] = lab.reshape(z1 - z0, y1 - y0, X)
    if block_info is not None:
        loc = block_info[None]["array-location"][1:]
        for axis, (lo, hi) in enumerate(loc):
            n = volume_shape[axis]
            g = xp.arange(lo, hi)
            edge = (g < half) | (g >= n - half)
            if bool(edge.any()):
                sl = [slice(None)] * 4
                sl[axis + 1] = edge
                out[tuple(sl)] = BORDER
    return out


def semantic_labels(scaled: da.Array, decisions: list[Decision], half: int = HALF) -> da.Array:
    """Lazy raw cluster ids (k, z, y, x) uint8 for ``k`` decisions; 255 on the border.

    Chunks thinner than the halo are merged with a neighbour first (dask's overlap needs it)."""
    scaled = at_least(scaled, half)
    ov = da.overlap.overlap(scaled, depth={0: half, 1: half, 2: half}, boundary={0: 0, 1: 0, 2: 0})
    meta = np.empty((0, 0, 0, 0), np.uint8) if get_xp(scaled._meta) is np else get_xp(scaled._meta).empty((0, 0, 0, 0), np.uint8)
    return ov.map_blocks(label_block, decisions, tuple(scaled.shape), half=half, new_axis=0,
                         chunks=((len(decisions),),) + scaled.chunks, dtype=np.uint8, meta=meta)


def _label_stored_block(store: str, lo: float, hi: float, decisions: list[Decision], origin, shape, volume_shape,
                        half: int = HALF):
    """Labels (k, z, y, x) of one chunk, reading the chunk plus its halo straight from the stored
    blurred volume (0 beyond the faces, as the overlap path pads) and scaling it here."""
    padded = read_scaled_block(store, lo, hi, origin, shape, half)
    info = {None: {"array-location": [(0, len(decisions))] + [(o, o + s) for o, s in zip(origin, shape)]}}
    return label_block(padded, decisions, volume_shape, block_info=info, half=half)


def semantic_labels_from_store(store: str, lo: float, hi: float, chunks, decisions: list[Decision],
                               half: int = HALF) -> da.Array:
    """Like ``semantic_labels`` on the scaled volume, for a blurred volume stored at ``store``: every
    task reads its own chunk + halo from disk, so no task waits on another and a worker holds only
    the chunks it is working on (the overlap graph keeps neighbours' halo pieces alive)."""
    import dask

    volume_shape = tuple(int(sum(c)) for c in chunks)
    dec = dask.delayed(decisions, traverse=False)
    tasks = {b: dask.delayed(_label_stored_block)(store, lo, hi, dec, origin, shape, volume_shape, half)
             for b, origin, shape in block_boxes(chunks)}
    return from_block_tasks(tasks, chunks, np.uint8, leading=(len(decisions),))


def orient(raw: da.Array, flip: bool) -> da.Array:
    """Swap cluster ids 0 and 1 where ``flip`` (border 255 untouched)."""
    if not flip:
        return raw
    return da.where(raw == BORDER, raw, 1 - raw).astype(np.uint8)
