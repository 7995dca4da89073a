"""Watershed instances over chunks: distance map, peaks, seeded watershed, stitched by global ids.

No dask-native watershed exists, so this one is written here. Every task sees its chunk plus a
halo of ``halo`` voxels on each side (never beyond the volume):

1. peaks: Euclidean distance transform of the mask in the haloed block, then
   skimage.feature.peak_local_max(min_distance) on it (``local_peaks``: the same peaks with the
   min_distance suppression on a grid); peaks inside the chunk proper are kept.
2. markers: all peaks, sorted in (z, y, x) order, get global ids 1..P.
3. watershed: per haloed block, skimage.segmentation.watershed of the negated distance from the
   markers that fall in it, restricted to the mask (``flood``: skimage's flooding routine on
   arrays padded here once); the chunk proper is kept.

Halo rule and limits: with ``halo >= 2 * min_distance + 2`` and objects whose distance-map
basins lie within the halo of the chunk that holds them, the result equals the whole-volume
watershed. Differences arise where (a) a distance value depends on background farther than the
halo (objects wider than ~2 x halo), (b) peak_local_max's greedy min_distance suppression chains
across a chunk face, or (c) a basin reaches farther than the halo from its marker, whose voxels
beyond are then claimed by another marker or left 0 (they are then labelled as their own
connected components so no mask voxel is lost). tests/test_localize.py measures the agreement.

Distance map: the squared Euclidean distances of the ``edt`` library (exact integers, the same
numbers as scipy's distance_transform_edt squared, ~5x faster: scipy forms a full feature
transform first). Peaks and the watershed use the squared map directly: both depend only on
the order of the values, which squaring keeps, so the result equals the distance map's.
Distance cache: with ``scratch`` (a folder), the peaks pass stores each haloed block's squared
distances (one .npy file, in the smallest unsigned type that holds them) and the watershed pass
reads them back instead of computing them twice; it does not read the mask again either (the
region is where the distance is > 0).

exclude_border: skimage drops peaks within min_distance of the volume's faces by default; that
throws away every particle near the top and bottom of a thin tomogram (15 of ~100-200 slices on
each side at min_distance 15), so picket-dask keeps them unless ``exclude_border=True``.
"""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..config import REFERENCE_MIN_DISTANCE_VOX
from ..progress import compute
from ..chunking import RECHUNK, at_least, from_block_tasks, haloed_blocks
from .components import connected_components_chunked
from .morphology import distance_sq


def _compact(sq: np.ndarray) -> np.ndarray:
    """The squared distances in the smallest unsigned integer type that holds them exactly (they
    are integers; float32 if not finite or beyond uint32): 1-4 bytes a voxel to cache instead of 4
    (1 for distances up to 15 voxels) and a faster maximum filter, with the same order of values,
    so the same peaks and basins."""
    top = float(sq.max()) if sq.size else 0.0
    if not np.isfinite(top) or top >= 2**32:
        return sq
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return sq.astype(dtype)
    return sq


def local_peaks(image: np.ndarray, min_distance: int) -> np.ndarray:
    """``skimage.feature.peak_local_max(image, min_distance, exclude_border=False)``, the same
    coordinates in the same order, with the min_distance suppression done on a grid.

    skimage keeps the candidates (voxels equal to the maximum of their (2 min_distance + 1)^3
    cube, above the image's minimum), highest first, greedily: a candidate goes when an earlier
    kept one lies closer than min_distance in the max norm (``ensure_spacing``, a KD-tree query
    and a scipy cdist call per candidate in Python). Here each kept peak blocks its cube of
    half-width min_distance - 1 in a boolean grid and a candidate is one look-up: on a crowded
    segmentation with ~10^5 plateau candidates per block that step took 12 s of 13 s per block."""
    image = np.asarray(image)
    threshold = image.min()
    size = 2 * int(min_distance) + 1
    if size == 1 or image.size == 1:
        out = image > threshold
    else:
        out = image == ndi.maximum_filter(image, size=size, mode="nearest")
        if out.all():  # no peak for a trivial image
            out[:] = False
        out &= image > threshold
    coord = np.nonzero(out)
    values = image[coord]
    if values.dtype.kind == "u":  # negate without wrapping around
        values = values.astype(np.int64)
    coord = np.transpose(coord)[np.argsort(-values, kind="stable")]
    if min_distance <= 1 or len(coord) == 0:
        return coord
    r = int(np.ceil(min_distance)) - 1  # max-norm distance < min_distance on integer coordinates
    blocked = np.zeros(image.shape, bool)
    keep = np.zeros(len(coord), bool)
    for i, (z, y, x) in enumerate(coord.tolist()):
        if blocked[z, y, x]:
            continue
        keep[i] = True
        blocked[max(z - r, 0):z + r + 1, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1] = True
    return coord[keep]


def _store_distance(cache: tuple[str, int] | None, sq: np.ndarray) -> None:
    if cache is not None:
        path, i = cache
        np.save(os.path.join(path, f"{i}.npy"), sq, allow_pickle=False)


def _load_distance(cache: tuple[str, int], shape) -> np.ndarray | None:
    """Squared distances the peaks pass stored for a block (None: it found no mask voxel there)."""
    path, i = cache
    try:
        sq = np.load(os.path.join(path, f"{i}.npy"), allow_pickle=False)
    except FileNotFoundError:
        return None
    assert sq.shape == tuple(shape), (sq.shape, shape)
    return sq


def _block_peaks(region: np.ndarray, lo: np.ndarray, origin: np.ndarray, block_shape: np.ndarray,
                 min_distance: int, cache: tuple[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not region.any():
        return np.zeros((0, 3), np.int64), np.zeros(0)
    sq = _compact(distance_sq(region))
    _store_distance(cache, sq)
    pk = local_peaks(sq, min_distance)  # maxima of sq = of the distance
    g = pk + lo
    inside = np.all((g >= origin) & (g < origin + block_shape), axis=1)
    return g[inside].astype(np.int64), np.sqrt(sq[tuple(pk[inside].T)].astype(np.float64))


def _block_watershed(region: np.ndarray | None, lo: np.ndarray, origin: np.ndarray, block_shape: np.ndarray,
                     peaks: np.ndarray, cache: tuple[str, int] | None = None, shape=None) -> np.ndarray:
    """One block's watershed. With ``cache`` the region is not read: it is where the stored squared
    distances are > 0 (edt is 0 exactly on the region's False voxels)."""
    out_sl = _chunk_in_block(origin, lo, block_shape)
    if cache is not None:
        sq = _load_distance(cache, shape)
        if sq is None:  # no mask voxel in the haloed block
            return np.zeros(tuple(block_shape), np.uint32)
        region = sq > 0
        if not region[out_sl].any():
            return np.zeros(tuple(block_shape), np.uint32)
    else:
        if not region[out_sl].any():
            return np.zeros(tuple(block_shape), np.uint32)
        sq = distance_sq(region)
    region, box = reaching(region, out_sl)
    region, sq = region[box], sq[box]
    lo = lo + np.array([b.start for b in box])
    hi = lo + np.asarray(region.shape)
    sel = np.all((peaks >= lo) & (peaks < hi), axis=1)
    ids = (np.nonzero(sel)[0] + 1).astype(np.uint32)
    ws = flood(sq, region, peaks[sel] - lo, ids)  # flooding order of -sq = of -distance
    return ws[_chunk_in_block(origin, lo, block_shape)]


def _chunk_in_block(origin, lo, block_shape) -> tuple[slice, ...]:
    """The chunk at ``origin`` (``block_shape`` voxels) as slices of a block whose first voxel is ``lo``."""
    return tuple(slice(o - a, o - a + s) for o, a, s in zip(origin, lo, block_shape))


def reaching(region: np.ndarray, inner: tuple[slice, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The connected components (face connectivity, the watershed's) of ``region`` that reach the
    ``inner`` box, and the smallest box that holds them and ``inner``.

    The watershed floods each such component on its own: markers in other components never reach
    it, so dropping those changes nothing inside ``inner``. A haloed block is mostly halo (a 128-voxel
    chunk with a 40-voxel halo: 2.6x its area in y, x), and most components of the halo never reach
    the chunk: they are not flooded, and the arrays the flood allocates shrink to the box."""
    lab, n = ndi.label(region)
    keep = np.zeros(n + 1, bool)
    keep[lab[inner].ravel()] = True  # a scatter, not np.unique's sort of the chunk's millions of ids
    keep[0] = False
    region = keep[lab]
    box = []
    for axis, sl in enumerate(inner):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(region.any(axis=other))
        a = min(sl.start, int(idx[0])) if len(idx) else sl.start
        b = max(sl.stop, int(idx[-1]) + 1) if len(idx) else sl.stop
        box.append(slice(a, b))
    return region, tuple(box)


def flood(sq: np.ndarray, region: np.ndarray, points: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(-sq, markers, mask=region)`` (connectivity 1) with
    ``markers[points] = ids``, as uint32: skimage's own flooding routine, called on arrays padded
    and typed here once (the public function converts and pads the image, mask and markers in
    separate copies, about a third of its time on a 200^3 block). Falls back to the public
    function if skimage's internals move; tests/test_localize.py checks both agree."""
    def public() -> np.ndarray:
        markers = np.zeros(region.shape, np.uint32)
        markers[tuple(np.asarray(points).T)] = ids
        return watershed(-sq.astype(np.float64), markers, mask=region).astype(np.uint32)

    try:
        from skimage.morphology._util import _offsets_to_raveled_neighbors
        from skimage.segmentation._watershed_cy import watershed_raveled
    except ImportError:  # pragma: no cover - a scikit-image without these internals
        return public()
    if len(ids) and int(np.max(ids)) >= 2**31:  # pragma: no cover - the routine's documented labels are int32
        return public()
    padded = tuple(n + 2 for n in region.shape)
    inner = (slice(1, -1),) * 3
    image = np.zeros(padded, np.float64)
    image[inner] = sq
    np.negative(image, out=image)
    mask = np.zeros(padded, np.int8)
    mask[inner] = region
    output = np.zeros(padded, np.int32)
    if len(points):
        output[tuple(np.asarray(points).T + 1)] = ids
    output *= mask.view(bool)  # markers outside the mask do not flood (skimage: markers * mask)
    neighbours = _offsets_to_raveled_neighbors(padded, ndi.generate_binary_structure(3, 1), center=(1, 1, 1))
    strides = np.array(image.strides, dtype=np.intp) // image.itemsize
    try:
        watershed_raveled(image.ravel(), np.flatnonzero(output), neighbours, mask.ravel(), strides, 0.0,
                          output.ravel(), False)
    except (TypeError, ValueError):  # pragma: no cover - the routine's signature moved
        return public()
    return output[inner].view(np.uint32)


def _distance_cache(scratch: str | None) -> str | None:
    """A folder for the squared distances (one .npy file per haloed block), or None."""
    if scratch is None:
        return None
    os.makedirs(scratch, exist_ok=True)
    return str(scratch)


def block_grid(mask: da.Array, halo: int) -> da.Array:
    """The mask in the watershed's blocks: an axis no longer than a haloed chunk is taken whole.

    Along such an axis a haloed chunk would hold as many voxels as the whole extent, so a block
    spanning it costs no more memory, and nothing along it is computed twice: no halo there, and the
    result along it is the whole volume's. (A 200-slice tomogram in 128-voxel chunks with the size
    prior's 40-voxel halo: each column of blocks flooded 168 + 112 slices, now 200.)"""
    chunks = tuple((n,) if n <= max(c) + 2 * halo else c for n, c in zip(mask.shape, mask.chunks))
    return mask if chunks == mask.chunks else mask.rechunk(chunks, method=RECHUNK)


def find_peaks(mask: da.Array, min_distance: int, halo: int, exclude_border: bool = False,
               cache: str | None = None) -> np.ndarray:
    """Global peak coordinates (P, 3) int64 (z, y, x), sorted, of the mask's distance map."""
    tasks = [dask.delayed(_block_peaks)(mask[hb.slices], hb.lo, hb.origin, hb.shape, min_distance,
                                        None if cache is None else (cache, hb.index))
             for hb in haloed_blocks(mask.chunks, halo)]
    parts = compute(*tasks, label="watershed: distance-map peaks")
    peaks = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3), np.int64)
    if exclude_border and len(peaks):
        ok = np.all((peaks >= min_distance) & (peaks < np.array(mask.shape) - min_distance), axis=1)
        peaks = peaks[ok]
    order = np.lexsort(peaks.T[::-1]) if len(peaks) else np.zeros(0, int)
    return peaks[order]


def watershed_chunked(mask: da.Array, min_distance: int = REFERENCE_MIN_DISTANCE_VOX, halo: int | None = None,
                      exclude_border: bool = False, scratch: str | None = None) -> tuple[da.Array, int, dict]:
    """Lazy uint32 watershed instances (marker ids 1..P), P, and a report.

    Mask voxels no marker reaches stay 0 here; ``fill_unreached`` labels them once the
    watershed is stored. ``scratch``: a folder for the distance cache (the caller removes it
    after the instances are stored); None computes each distance map twice instead."""
    halo = int(halo or 2 * min_distance + 2)
    mask = block_grid(at_least(mask, 1), halo)
    cache = _distance_cache(scratch)
    peaks = find_peaks(mask, min_distance, halo, exclude_border, cache)
    peaks_d = dask.delayed(peaks, traverse=False)
    tasks = {}
    for hb in haloed_blocks(mask.chunks, halo):
        if cache is None:
            tasks[hb.block] = dask.delayed(_block_watershed)(mask[hb.slices], hb.lo, hb.origin, hb.shape, peaks_d)
        else:  # the mask is not read again: the cached distances hold it
            box = tuple(s.stop - s.start for s in hb.slices)
            tasks[hb.block] = dask.delayed(_block_watershed)(None, hb.lo, hb.origin, hb.shape, peaks_d, (cache, hb.index), box)
    ws = from_block_tasks(tasks, mask.chunks, np.uint32)
    return ws, len(peaks), {"peaks": len(peaks), "halo_vox": halo, "min_distance_vox": min_distance,
                            "exclude_border": exclude_border}


def fill_unreached(mask: da.Array, ws: da.Array, n_labels: int) -> tuple[da.Array, int]:
    """Give mask voxels that no marker reached (ws == 0) ids of their own connected components,
    numbered after ``n_labels``; ``ws`` should be a stored (cheap to read) array."""
    leftover = mask.rechunk(ws.chunks, method=RECHUNK) & (ws == 0)
    cc, n_cc = connected_components_chunked(leftover)
    if n_cc == 0:
        return ws, 0
    return da.where(cc > 0, cc + np.uint32(n_labels), ws).astype(np.uint32), n_cc
