"""The wall test of a cavity, on the tomogram binned 2x (localize/shells.py finds the cavities).

Mean densities on spherical rings one working-grid voxel wide (half a binned voxel: the binned
tomogram keeps the wall's profile) about a centre, in the band the missing wedge leaves visible
(directions more than ``WEDGE_HALF_ANGLE_DEG`` from z: a +-60 degree tilt series does not show a
shell's top and bottom), in 16 patches (8 azimuthal sectors, above and below the equator). The
wall is the three rings, mid ring between e and e + ``WALL_SEARCH`` voxels (e: the cavity's
radius), most like particles (darker for dark protein); its contrast against the ball inside it
and against the rings ``OUTER`` voxels outside it is each the median over the patches (a wall
dark all around counts, a void that a few particles touch does not). ``null_levels`` turns both
into robust z units against the same statistic at random positions; ``refine_centres`` moves a
centre to where the weaker one is strongest, and ``SHELL_Z_REFINED`` corrects the threshold for
the positions that search looks at.

Pure functions on numpy arrays (z, y, x); centres are voxel indices of the binned array, radii and
rings in working-grid voxels. Why by hand: no library has a ring statistic per patch; the sums
are numpy's bincount.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import norm

from .membranes import robust_z_levels

BIN = 2  # the test runs on the tomogram binned this much
SHELL_Z = 3.0  # robust z of both wall contrasts against the null (one-sided p ~ 0.001 each under normality)
SCREEN_Z = 1.0  # a cavity whose weaker contrast reaches this at its first centre has its centre refined
REFINE_STEPS = 2  # at most this many one-voxel moves (binned) of a cavity's centre
# the refined centre is the best of up to 1 + 6 x REFINE_STEPS positions: its z is held to SHELL_Z's one-sided
# level divided by their number (Bonferroni: 3.68 for 13), so that the search does not make shells of noise
SHELL_Z_REFINED = float(norm.isf(norm.sf(SHELL_Z) / (1 + 6 * REFINE_STEPS)))
WEDGE_HALF_ANGLE_DEG = 30.0  # +-60 degree tilt series: surfaces whose normal is within 30 degrees of z are not seen
N_AZIMUTH = 8  # the band is cut into 8 azimuthal sectors, above and below the equator: 16 patches,
N_SECTORS = 2 * N_AZIMUTH  # and the wall's contrast is their median (dark all around, not where a few particles touch)
WALL_SEARCH = 5  # the wall's mid ring lies between e and e + 5 voxels (e: the cavity's radius)
WALL_HALF = 1  # the wall: rings kw - 1 .. kw + 1
OUTER = (3, 5)  # the outside: rings kw + 3 .. kw + 5


def margin(e: float) -> int:
    """Box half-size (binned voxels) that holds the rings the test reads for a cavity of radius
    ``e`` (working-grid voxels)."""
    return int(np.ceil((np.rint(e) + WALL_SEARCH + OUTER[1] + 1) / BIN))


@dataclass(frozen=True)
class RingGeometry:
    """Index tables of a (2 half + 1)^3 box (z, y, x) of binned voxels, C order: each voxel's ring
    (its distance to the centre in working-grid voxels, rounded), whether it lies in the band the
    missing wedge leaves visible, and its patch (azimuthal sector, above or below the equator)."""

    half: int
    ring: np.ndarray
    band: np.ndarray
    patch: np.ndarray


def ring_geometry(half: int) -> RingGeometry:
    g = np.arange(-half, half + 1, dtype=np.float32)
    dz, dy, dx = np.meshgrid(g, g, g, indexing="ij")
    r = np.sqrt(dz * dz + dy * dy + dx * dx)
    band = np.abs(dz) < np.cos(np.deg2rad(WEDGE_HALF_ANGLE_DEG)) * np.maximum(r, 1e-6)
    azimuth = np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_AZIMUTH).astype(np.int64) % N_AZIMUTH
    patch = azimuth + N_AZIMUTH * (dz > 0)  # above and below the equator apart
    return RingGeometry(half, np.rint(r * BIN).astype(np.int64), band, patch)


def ball_rings(half: int) -> int:
    """How many rings the balls that the test reads span in a box of ``half`` (margin): the inside
    of a wall at most WALL_SEARCH past the largest cavity the box is for."""
    return BIN * half + 1 - OUTER[1] - 2 - WALL_HALF


@lru_cache(maxsize=32)
def _tables(geometry_half: int, half: int):
    """For a box of ``half`` (<= the geometry's) wholly inside the image: flat indices and ring /
    ring-and-patch keys of its voxels in the band and of all its voxels within the last ring."""
    geometry = ring_geometry(geometry_half)
    off = geometry_half - half
    sl = (slice(off, off + 2 * half + 1),) * 3
    ring, band, patch = geometry.ring[sl].ravel(), geometry.band[sl].ravel(), geometry.patch[sl].ravel()
    n = BIN * half + 1
    band_idx = np.flatnonzero((ring < n) & band)
    all_idx = np.flatnonzero(ring < ball_rings(half))  # the balls the test reads, no further
    return band_idx, ring[band_idx] * N_SECTORS + patch[band_idx], all_idx, ring[all_idx]


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where all are), without numpy's warning (tasks run in threads)."""
    a = np.sort(a, axis=-1)  # NaN last
    n = np.isfinite(a).sum(axis=-1)
    lo = np.take_along_axis(a, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(a, np.maximum(n // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def _window_means(rings: np.ndarray, lo: int, hi: int, first: int, last: int) -> np.ndarray:
    """For k = lo .. hi: the mean over rings k + first .. k + last of ``rings`` (..., rings, sectors),
    NaN ignored; shape (..., hi - lo + 1, sectors)."""
    ok = np.isfinite(rings)
    c = np.cumsum(np.where(ok, rings, 0.0), axis=-2)
    n = np.cumsum(ok, axis=-2)
    pad = [(0, 0)] * (rings.ndim - 2) + [(1, 0), (0, 0)]
    c, n = np.pad(c, pad), np.pad(n, pad)
    ks = np.arange(lo, hi + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c[..., ks + last + 1, :] - c[..., ks + first, :]) / (n[..., ks + last + 1, :] - n[..., ks + first, :])


def shell_contrast(rings: np.ndarray, balls: np.ndarray, e: float, polarity: int):
    """The wall's contrast against the ball inside it and against the rings outside it (density
    units, particle polarity positive, medians over the patches) and the wall's mid ring (voxels),
    for a cavity of radius ``e`` voxels; ``rings`` (..., rings, patches) and ``balls`` (..., rings)
    from profiles_at, stacked along leading axes for many positions at once."""
    rings, balls = np.asarray(rings, float), np.asarray(balls, float)
    lo = max(1 + WALL_HALF, int(np.rint(e)))
    hi = min(int(np.rint(e)) + WALL_SEARCH, rings.shape[-2] - 1 - OUTER[1])
    lead = rings.shape[:-2]
    if hi < lo:
        nan = np.full(lead, np.nan)
        return nan, nan, np.full(lead, -1)
    walls = _window_means(rings, lo, hi, -WALL_HALF, WALL_HALF)
    outers = _window_means(rings, lo, hi, OUTER[0], OUTER[1])
    with np.errstate(invalid="ignore"):
        mean_wall = np.where(np.isfinite(walls), walls, 0).sum(-1) / np.maximum(np.isfinite(walls).sum(-1), 1)
        mean_wall = np.where(np.isfinite(walls).any(-1), mean_wall, np.nan)
    pick = np.argmax(np.nan_to_num(polarity * mean_wall, nan=-np.inf), axis=-1)
    wall = np.take_along_axis(walls, pick[..., None, None], axis=-2)[..., 0, :]
    outer = np.take_along_axis(outers, pick[..., None, None], axis=-2)[..., 0, :]
    kw = lo + pick
    inner = np.take_along_axis(balls, np.maximum(kw - WALL_HALF, 1)[..., None], axis=-1)
    return _nanmedian(polarity * (wall - inner)), _nanmedian(polarity * (wall - outer)), kw


def null_levels(rings: np.ndarray, balls: np.ndarray, radii, polarity: int) -> dict[int, tuple]:
    """Per integer cavity radius in ``radii``: median and robust SD (1.4826 MAD) of both wall
    contrasts at the null positions (stacked profiles); a radius with fewer than 20 usable ones gets none."""
    out = {}
    for e in np.unique(np.rint(np.asarray(radii, float)).astype(int)):
        d_in, d_out, _ = shell_contrast(rings, balls, float(e), polarity)
        vals = np.column_stack([d_in, d_out])
        vals = vals[np.all(np.isfinite(vals), axis=1)]
        if len(vals) < 20:
            continue
        med, sd = np.array([robust_z_levels(v) for v in vals.T]).T
        out[int(e)] = (med, np.maximum(sd, 1e-12))
    return out


def _profiles_inside(image: np.ndarray, lo: np.ndarray, half: int, geometry: RingGeometry) -> tuple[np.ndarray, np.ndarray]:
    """profiles_at for boxes of ``half`` starting at ``lo`` ((m, 3), wholly inside a C-ordered ``image``,
    NaN voxels left out), many at once: one gather and one bincount per batch of boxes."""
    band_idx, band_key, all_idx, all_ring = _tables(geometry.half, half)
    n, side = BIN * half + 1, 2 * half + 1
    zz, yy, xx = np.unravel_index(np.arange(side ** 3), (side,) * 3)
    flat_off = (zz * image.shape[1] + yy) * image.shape[2] + xx  # box voxel -> offset in the flat image
    flat = image.reshape(-1)
    start = np.ravel_multi_index(tuple(np.asarray(lo).T), image.shape)
    rings, balls = np.empty((len(lo), n, N_SECTORS)), np.empty((len(lo), n))
    step = max(1, (1 << 22) // side ** 3)  # ~4M voxels per gather
    for i in range(0, len(lo), step):
        s = start[i:i + step]
        m = len(s)
        sums, cnts = [], []
        for idx, key, size in ((band_idx, band_key, n * N_SECTORS), (all_idx, all_ring, n)):
            vals = flat[s[:, None] + flat_off[idx][None, :]]
            keys = (key[None, :] + (np.arange(m) * size)[:, None]).ravel()
            bad = np.isnan(vals)
            if bad.any():  # NaN outside the tomogram (profiles_at pads with it): count what is there
                cnts.append(np.bincount(keys, weights=(~bad).ravel(), minlength=m * size).reshape(m, -1))
                vals = np.where(bad, 0.0, vals)
            else:
                cnts.append(np.broadcast_to(np.bincount(key, minlength=size), (m, size)))
            sums.append(np.bincount(keys, weights=vals.ravel(), minlength=m * size).reshape(m, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rings[i:i + m] = (sums[0] / cnts[0]).reshape(m, n, N_SECTORS)
            balls[i:i + m, 0] = np.nan
            balls[i:i + m, 1:] = (np.cumsum(sums[1], axis=1) / np.cumsum(cnts[1], axis=1))[:, :-1]
            balls[i:i + m, ball_rings(half) + 1:] = np.nan  # past the rings gathered
    return rings, balls


def profiles_at(image: np.ndarray, centres: np.ndarray, halves, geometry: RingGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Ring means of ``image`` about each of ``centres`` (voxel indices, (m, 3)) in the visible band per
    patch, (m, rings, N_SECTORS), and ball means (all directions; ball k: the rings below k, as far as
    ``ball_rings``), (m, rings), in boxes of ``halves`` (per centre, or one for all; ``margin`` of a
    cavity's radius), rings 0 .. BIN x half; stacked, rings past a box's own NaN. Parts of a box
    outside ``image`` are left out (the image is padded with NaN; NaN where nothing is left)."""
    centres = np.asarray(centres, np.int64).reshape(-1, 3)
    given = np.asarray(halves, int)
    n = BIN * int(given.max(initial=0)) + 1  # one half for all: that box's rings even with no centre
    halves = np.broadcast_to(given, (len(centres),))
    rings, balls = np.full((len(centres), n, N_SECTORS), np.nan), np.full((len(centres), n), np.nan)
    if not len(centres):
        return rings, balls
    pad = int(max(0, (halves[:, None] - centres).max(), (centres + halves[:, None] + 1 - np.asarray(image.shape)).max()))
    image = np.pad(np.asarray(image, np.float32), pad, constant_values=np.nan) if pad else np.ascontiguousarray(image)
    for h in np.unique(halves):
        sel = np.flatnonzero(halves == h)
        r, b = _profiles_inside(image, centres[sel] + pad - h, int(h), geometry)
        rings[sel, :r.shape[1]], balls[sel, :b.shape[1]] = r, b
    return rings, balls


def shell_z(image: np.ndarray, centres: np.ndarray, radii: np.ndarray, polarity: int, geometry, levels: dict):
    """Both wall contrasts of the cavities at ``centres`` (voxel indices, (m, 3)) with ``radii`` in
    null z units (NaN where the null has no level for the radius), and their wall rings."""
    centres, radii = np.asarray(centres, np.int64).reshape(-1, 3), np.asarray(radii, float)
    z = np.full((len(radii), 2), np.nan)
    kw = np.full(len(radii), -1)
    if not len(radii):
        return z, kw
    rings, balls = profiles_at(image, centres, [margin(e) for e in radii], geometry)
    e_int = np.rint(radii).astype(int)
    for e in np.unique(e_int):
        lev = levels.get(int(e))
        sel = np.flatnonzero(e_int == e)
        if lev is None:
            continue
        d_in, d_out, k = shell_contrast(rings[sel], balls[sel], float(e), polarity)
        z[sel] = (np.column_stack([d_in, d_out]) - lev[0]) / lev[1]
        kw[sel] = k
    return z, kw


def weaker(z: np.ndarray) -> np.ndarray:
    """The weaker of the two wall contrasts (z's last axis), -inf where not measured."""
    return np.nan_to_num(np.min(z, axis=-1), nan=-np.inf)


def refine_centres(image: np.ndarray, centres: np.ndarray, radii: np.ndarray, polarity: int, geometry, levels: dict):
    """Hill-climb of each centre, one voxel along z, y or x per step (at most REFINE_STEPS), to where
    the weaker wall contrast is strongest: a cavity's centre comes from a mask the noise shaped, the
    test is sharp to a voxel. All cavities step together (one batch of profiles per step).
    Returns centres, z (m, 2: inner, outer) and wall rings."""
    c = np.asarray(centres, np.int64).reshape(-1, 3).copy()
    radii = np.asarray(radii, float)
    z, kw = shell_z(image, c, radii, polarity, geometry, levels)
    moves = np.vstack([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])
    active = np.arange(len(c))
    shape = np.asarray(image.shape)
    for _ in range(REFINE_STEPS):
        if not len(active):
            break
        trial = (c[active, None, :] + moves[None]).reshape(-1, 3)
        ok = np.all((trial >= 0) & (trial < shape), axis=1)
        tz, tk = np.full((len(trial), 2), np.nan), np.full(len(trial), -1)
        tz[ok], tk[ok] = shell_z(image, trial[ok], np.repeat(radii[active], len(moves))[ok], polarity, geometry, levels)
        best = weaker(tz).reshape(len(active), len(moves))
        j = np.argmax(best, axis=1)
        better = best[np.arange(len(active)), j] > weaker(z[active])
        up, pick = active[better], np.arange(len(active))[better] * len(moves) + j[better]
        c[up], z[up], kw[up] = trial[pick], tz[pick], tk[pick]
        active = up
    return c, z, kw
