"""Class averages after rotational alignment to each particle's principal axes.

Each box's mass (low-passed, background-subtracted, particles positive) inside the particle
sphere gives a centre of mass and an inertia tensor; the box is shifted to that centre and
rotated so that its principal axes (largest spread first) lie along z, y, x of the average. The
sign of each axis is fixed by the third moment along it (the heavier side first), the last one
by handedness, so a lopsided particle lands the same way up. Sums and counts are reduced per
class on the workers; an average is sum / count. Sign-ambiguity is left for the round ones
(their axes are arbitrary anyway, and so is their orientation in the average).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .descriptors import radius_grid


def principal_frame(mass: np.ndarray, radius: float, max_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre of mass (z, y, x) in box voxels, rotation R whose rows are the principal axes)."""
    box = mass.shape[-1]
    c = box // 2
    g = (np.indices(mass.shape, dtype=np.float64) - c).reshape(3, -1)
    inside = (g**2).sum(axis=0) <= radius**2
    g = g[:, inside]
    w = np.clip(mass.reshape(-1)[inside], 0, None)
    tot = w.sum()
    if tot <= 0:
        return np.full(3, float(c)), np.eye(3)
    mu = g @ w / tot
    norm = np.linalg.norm(mu)
    if norm > max_shift:
        mu *= max_shift / norm
    d = g - mu[:, None]
    cov = (d * w) @ d.T / tot
    ev, vec = np.linalg.eigh(cov)
    rot = vec[:, ::-1].T.copy()  # rows: axes, largest eigenvalue first
    proj = rot @ d
    for a in range(2):
        if (w * proj[a] ** 3).sum() < 0:
            rot[a] *= -1
    if np.linalg.det(rot) < 0:
        rot[2] *= -1
    return mu + c, rot


def align(box: np.ndarray, centre: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Resample ``box`` so that voxel p of the result is box[centre + R^T (p - c)]."""
    c = box.shape[-1] // 2
    m = rot.T
    offset = centre - m @ np.full(3, float(c))
    return ndi.affine_transform(box, m, offset=offset, order=1, mode="nearest")


def class_sums(boxes: np.ndarray, rows: np.ndarray, labels: np.ndarray, frames: np.ndarray, k: int,
               polarity: float = -1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class 1..k (index 0 unused): the sum of aligned boxes (density, background-subtracted,
    original sign) and the count; per box, the mean mass (particles positive, noise units) in the
    central sphere of the aligned box, i.e. at the centre the average uses. ``labels`` and
    ``frames`` (centre (3) + rotation (9), from the descriptor pass) hold every pick's class
    (0: not averaged) and principal frame."""
    box = boxes.shape[-1]
    r = radius_grid(box)
    shell, centre = r >= box / 2 - 1.5, r <= max(1.5, box / 8)
    sums = np.zeros((k + 1, box, box, box), np.float32)
    counts = np.zeros(k + 1, np.int64)
    central = np.zeros(len(boxes))
    for i, (b, row) in enumerate(zip(boxes, rows)):
        cls = int(labels[row])
        if cls <= 0:
            continue
        f = frames[row]
        a = align(b - np.median(b[shell]), f[:3], f[3:].reshape(3, 3))
        sums[cls] += a
        counts[cls] += 1
        central[i] = polarity * a[centre].mean() / max(float(b[shell].std()), 1e-6)
    return sums, counts, central
