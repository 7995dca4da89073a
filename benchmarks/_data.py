"""Large synthetic tomograms for the scale benchmarks, written slab by slab (bounded memory).

A tilt-series reconstruction (simulate.py) is too slow at 10^8-10^9 voxels, so these are phantoms:
the simulator's particle shapes pasted into a memory-mapped MRC, blurred (sigma 1) Gaussian noise
added slab by slab. Same particle density as the 'small' preset.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation


def synthetic_mrc(path: Path, shape, seed: int = 0, particles_per_mvox: float = 12.0, noise: float = 0.6) -> Path:
    from picket_dask.simulate import PARTICLE_TYPES, _paste, _shape_mask

    path = Path(path)
    if path.exists():
        with mrcfile.mmap(str(path), "r") as m:
            if tuple(m.data.shape) == tuple(shape):
                return path
    rng = np.random.default_rng(seed)
    with mrcfile.new_mmap(str(path), shape=tuple(shape), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        vol = mrc.data
        slab = 32
        for z in range(0, shape[0], slab):
            noise_slab = rng.normal(0, 1, (min(slab, shape[0] - z) + 4,) + tuple(shape[1:])).astype(np.float32)
            vol[z:z + slab] = noise * ndi.gaussian_filter(noise_slab, 1.0)[2:2 + min(slab, shape[0] - z)]
        n = int(np.prod(shape) / 1e6 * particles_per_mvox)
        weights = np.array([t.abundance for t in PARTICLE_TYPES])
        for k in rng.choice(len(PARTICLE_TYPES), size=n, p=weights / weights.sum()):
            t = PARTICLE_TYPES[k]
            c = np.array([rng.uniform(t.radius_vox, s - t.radius_vox) for s in shape])
            region_lo = np.maximum(np.floor(c - t.radius_vox - 1).astype(int), 0)
            region_hi = np.minimum(np.ceil(c + t.radius_vox + 2).astype(int), shape)
            sl = tuple(slice(a, b) for a, b in zip(region_lo, region_hi))
            block = np.zeros(tuple(region_hi - region_lo), np.float32)
            _paste(block, c - region_lo, t.radius_vox, Rotation.random(random_state=rng), lambda loc, p=t: _shape_mask(p, loc), 1.0)
            vol[sl] -= block  # dense matter dark
        mrc.flush()
    return path
