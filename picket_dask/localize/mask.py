"""The particle mask from a semantic label array: label == particle id, within optional z bounds."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import PicketError


def particle_mask(semantic: da.Array, particle_id: int = 1, z_bounds: tuple[int | None, int | None] | None = None,
                  source: object = "segmentation") -> da.Array:
    """Lazy boolean (z, y, x) mask; voxels outside z slices [lower, upper] are background (as the reference)."""
    if semantic.ndim != 3:
        raise PicketError(source, f"label array has {semantic.ndim} dimensions", "give a 3-D (z, y, x) semantic segmentation")
    if not 0 <= int(particle_id) < 255:
        raise PicketError(source, f"particle id {particle_id} is not a cluster id", "use 1 (picket-dask labels) or the reference's cluster id 0/1")
    mask = semantic == np.uint8(particle_id)
    if z_bounds is not None:
        lo, hi = z_bounds
        nz = semantic.shape[0]
        lo = 0 if lo is None else int(lo)
        hi = nz - 1 if hi is None else int(hi)
        if not (0 <= lo <= hi < nz):
            raise PicketError(source, f"z bounds [{lo}, {hi}] are outside the volume's 0..{nz - 1} slices",
                              f"choose bounds within 0..{nz - 1}")
        z = da.arange(nz, chunks=semantic.chunks[0])[:, None, None]
        mask = mask & (z >= lo) & (z <= hi)
    return mask
