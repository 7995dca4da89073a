"""Small morphology kernels shared by the context masks: a ball and a per-block dilation by it."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def ball(radius: int) -> np.ndarray:
    """Boolean (2r+1)^3 ball of ``radius`` voxels."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius * radius


def grow(block: np.ndarray, radius: int) -> np.ndarray:
    """``block`` dilated by a ball of ``radius`` voxels (use with map_overlap, depth = radius)."""
    if radius <= 0 or not block.any():
        return block
    return ndi.binary_dilation(block, structure=ball(radius))


def points_near(mask, points: np.ndarray, radius: int, batch: int = 1 << 22) -> np.ndarray:
    """(N,) bool: which voxel ``points`` (N, 3) int, inside the volume, have a True voxel of the
    chunked boolean ``mask`` within a ball of ``radius`` voxels; the same as
    ``mask.map_overlap(grow, depth=radius, boundary=False, radius=radius)[points]`` (the
    volume's outside is False), without dilating the volume: only the blocks holding points
    are read, each with a halo of ``radius``, and only the ball around each point is looked at."""
    import dask

    from ..chunking import block_boxes, haloed_box
    from ..progress import compute

    points = np.asarray(points, np.int64).reshape(-1, 3)
    if len(points) == 0:
        return np.zeros(0, bool)
    radius = max(int(radius), 0)
    offsets = np.argwhere(ball(radius)) - radius  # (K, 3)
    tasks, which = [], []
    for _, origin, shape in block_boxes(mask.chunks):
        origin, shape = np.asarray(origin), np.asarray(shape)
        sel = np.nonzero(np.all((points >= origin) & (points < origin + shape), axis=1))[0]
        if len(sel) == 0:
            continue
        lo, hi = haloed_box(mask.shape, origin, shape, radius)
        region = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        tasks.append(dask.delayed(_ball_hits)(region, points[sel] - lo, offsets, batch))
        which.append(sel)
    out = np.zeros(len(points), bool)
    for sel, hit in zip(which, compute(*tasks, label="context: centres near it")):
        out[sel] = hit
    return out


def _ball_hits(region: np.ndarray, local: np.ndarray, offsets: np.ndarray, batch: int) -> np.ndarray:
    """Per point (region coordinates): any True voxel of ``region`` at point + offset (outside: False)."""
    region = np.asarray(region, bool)
    hit = np.zeros(len(local), bool)
    if not region.any():
        return hit
    r = int(np.abs(offsets).max()) if len(offsets) else 0
    padded = np.pad(region, r)  # False around: offsets beyond the region (the volume's outside) never hit
    step = max(1, batch // max(len(offsets), 1))
    for i in range(0, len(local), step):
        c = local[i:i + step, None, :] + offsets[None] + r  # (n, K, 3)
        hit[i:i + step] = padded[c[..., 0], c[..., 1], c[..., 2]].any(axis=1)
    return hit
