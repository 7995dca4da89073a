"""Regions of a tomogram that hold no data: a fill value, not an image.

Reconstructions are often padded or masked with a constant: zeros where a rotated or trimmed
volume had nothing, the mean where NaNs were replaced (picket-dask asks for exactly that when a
tomogram holds NaNs), a fill value outside a lamella mask. Such a region is not vacuum (lamella
detection finds vacuum by its noise) and not ice: on the dev set a zero-filled margin of 32 x 24
voxels (21 % of the box) moved the Gaussian mixture's boundary until the particle class held twice
the voxels in the imaged part (9.5 % -> 18.5 %) and the defaults picked 2.1x as many particles,
and the fill region's edge is a step the blur turns into structure.

Rule: a voxel holds no data when the tomogram is exactly constant over the 5x5x5 cube around it
(125 equal values: measured noise never does that, the method's neighborhood is that cube). Step 1
leaves every voxel whose own neighborhood, after the blur, could reach such a voxel unassigned:
the no-data voxels grown by the neighborhood's half-width plus three blur sigmas (a cube; the
Gaussian's weight beyond 3 sigma is 0.3 %). Unassigned voxels (semantic label 255, as the faces'
border) are not sampled for the fit, not counted by the orientation rule and never extracted.

Chunked with a halo of that reach; memory is one haloed block per task. Axis order (z, y, x).
Why by hand: scipy gives the minimum/maximum filters; the rule is picket-dask's.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

CUBE = 5          # the constant cube's edge (voxels): the method's neighborhood
BLUR_REACH = 3.0  # blur sigmas a fill edge is felt across


def reach_vox(sigma_vox: float, half: int = CUBE // 2) -> int:
    """Voxels beyond a no-data voxel that step 1 leaves unassigned: the neighborhood's half-width
    plus ``BLUR_REACH`` blur sigmas (``sigma_vox``, voxels), rounded up."""
    return int(half + math.ceil(BLUR_REACH * float(sigma_vox)))


def _runs_along_x(x: np.ndarray, length: int) -> np.ndarray:
    """Boolean (z, y, x - length + 1): where ``length`` consecutive values along x are equal."""
    eq = x[..., 1:] == x[..., :-1]
    out = eq[..., :eq.shape[-1] - length + 2]
    for k in range(1, length - 1):
        out = out & eq[..., k:eq.shape[-1] - length + 2 + k]
    return out


def has_runs(block: np.ndarray) -> np.ndarray:
    """(1, 1, 1) bool: does ``block`` hold, from one voxel, three equal values in a row along x, y and z
    (as a constant 3x3x3 cube does)? Cut by chunk faces, a constant CUBE^3
    region leaves one in some chunk (along each axis one side keeps at least 3 of its 5); noise does
    not: float32 practically never, int8 noise spread over s levels with probability ~(1/s)^6 per voxel
    (the gate that skips the haloed filters when no chunk has one)."""
    x = np.asarray(block)
    if min(x.shape) < 3:
        return np.full((1, 1, 1), False)
    r = _runs_along_x(x, 3)[:-2, :-2, :]  # (z - 2, y - 2, x - 2): three equal along x from here
    for axis in (0, 1):
        y = np.moveaxis(x, axis, -1)
        r = r & np.moveaxis(_runs_along_x(y, 3), -1, axis)[:x.shape[0] - 2, :x.shape[1] - 2, :x.shape[2] - 2]
    # a necessary condition only: the full cube is checked, with its halo, where it holds (no_data_block)
    return np.full((1, 1, 1), bool(r.any()))


def no_data_block(block: np.ndarray, reach: int) -> np.ndarray:
    """Boolean (z, y, x), the shape of ``block``: True within ``reach`` voxels (max norm) of a voxel
    whose CUBE^3 neighborhood is constant. Exact inside a halo of ``reach + CUBE // 2`` voxels
    (map_overlap gives it and trims it)."""
    from scipy import ndimage as ndi

    x = np.asarray(block)
    if x.shape[-1] < CUBE or not _runs_along_x(x, CUBE).any():  # no CUBE equal values in a row: no constant cube
        return np.zeros(x.shape, bool)
    core = ndi.maximum_filter(x, size=CUBE, mode="nearest") == ndi.minimum_filter(x, size=CUBE, mode="nearest")
    if reach > 0 and core.any():
        core = ndi.maximum_filter(core, size=2 * reach + 1, mode="constant", cval=False)
    return core


def may_hold_no_data(data: da.Array) -> bool:
    """False when no chunk of the raw tomogram holds three equal values in a row along x (one cheap
    read, no halo): then nothing is a constant fill and ``no_data_mask`` need not run."""
    from ..progress import compute

    nblocks = tuple(len(c) for c in data.chunks)
    flags = data.map_blocks(has_runs, dtype=bool, chunks=tuple((1,) * n for n in nblocks))
    return bool(compute(flags.any(), label="no-data regions: looking for a constant fill")[0])


def no_data_mask(data: da.Array, sigma_vox: float) -> da.Array:
    """Lazy boolean mask (z, y, x) of the voxels step 1 leaves unassigned for want of data (module
    docstring); ``data`` the raw tomogram, ``sigma_vox`` the blur (voxels)."""
    from ..chunking import at_least, map_reflected

    reach = reach_vox(sigma_vox)
    depth = reach + CUBE // 2
    x = at_least(data, depth + 1)
    # the faces mirrored: a constant run that meets a face continues past it, as it would in the data
    return map_reflected(x, no_data_block, (depth,) * 3, reach, trim=True, dtype=bool)


def find_no_data(data: da.Array, sigma_vox: float, scratch: str) -> tuple[da.Array | None, dict]:
    """The no-data mask of the raw tomogram ``data``, stored once at ``scratch`` (the caller removes
    it) and read back lazily, or None when there is none; and the record for the labels' metadata."""
    from ..chunking import stored
    from ..progress import compute, note

    mask, n = None, 0
    if may_hold_no_data(data):
        mask = stored(no_data_mask(data, sigma_vox), scratch, label="no-data regions", fast_codec=True)
        n = int(compute(mask.sum(), label="no-data regions: counting")[0])
    frac = n / float(np.prod(data.shape))
    report = {"mode": "auto", "voxels": n, "fraction": round(frac, 6),
              "rule": f"tomogram constant over the {CUBE}^3 cube, grown by {CUBE // 2} + {BLUR_REACH:g} blur sigmas "
                      f"({reach_vox(sigma_vox)} voxels): unassigned (255)"}
    if n == 0:
        return None, report
    note(f"no data (a constant fill) in {frac:.1%} of the volume: left unassigned")
    return mask, report
