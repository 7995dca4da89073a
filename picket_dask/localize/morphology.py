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
