"""Class averages after rotational alignment to each particle's principal axes.

Each box's mass (low-passed, background-subtracted, particles positive) inside the particle
sphere gives a centre of mass and an inertia tensor (``descriptors.principal_frame``, computed in
the descriptor pass and handed to ``class_sums``); the box is shifted to that centre and
rotated so that its principal axes (largest spread first) lie along z, y, x of the average. The
sign of each axis is fixed by the third moment along it (the heavier side first), the last one
by handedness, so a lopsided particle lands the same way up. Sums and counts are reduced per
class on the workers; an average is sum / count. Sign-ambiguity is left for the round ones
(their axes are arbitrary anyway, and so is their orientation in the average).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .descriptors import principal_frame, radius_grid  # noqa: F401  (principal_frame: used with align)


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
