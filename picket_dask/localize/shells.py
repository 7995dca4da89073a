"""Hollow particles (capsids, virus-like particles, vaults, protein cages): one pick per shell.

The particle class of a hollow particle is its wall, and the noise and the missing wedge break
the wall into several instances, each a pick most of a radius away from the particle's centre:
on the dev set's capsid-like shells (29 nm across) 6-14 picks per shell, none within 100 A of
the centre. This step finds such shells and merges each one's wall picks into one pick at its
centre. It works on the tomogram and the particle mask binned 2x (a shell is large against a
binned voxel, and the test is 8x cheaper); the rings stay one working-grid voxel wide.

1. Cavities: centres of particle-free balls, the local maxima of the distance from each
   non-particle voxel to the nearest particle voxel (a binned voxel is particle if any of its 8
   is), whose radius ``e`` lies between the smallest particle's diameter and the largest
   particle's radius (the size prior). A cavity with fewer than ``MIN_WALL_PICKS`` picks on its
   rim is not looked at.
2. The shell test, on the density around the cavity: mean densities on spherical rings one
   working-grid voxel wide about the centre, in the band the missing wedge leaves visible
   (directions more than ``WEDGE_HALF_ANGLE_DEG`` from z: a +-60 degree tilt series does not show
   a shell's top and bottom), in 16 patches (8 azimuthal sectors, above and below the equator).
   The wall is the three rings, mid ring between e and e + 5 voxels, most like particles (darker
   for dark protein); a shell's wall is more particle-like than the ball inside it and than the
   rings 3-5 voxels outside it, each contrast the median over the patches: a wall dark all
   around counts, a void that a few particles touch does not (its patches without a particle
   show no contrast). Both contrasts are set against their null: the same statistic at
   ``N_NULL`` random positions inside the sample, per cavity radius, in robust z units (median,
   1.4826 x MAD); the null is measured, not assumed (tomographic noise is correlated, its level
   differs per tomogram). A cavity reaching ``SCREEN_Z`` on both has its centre refined
   (one-voxel moves to where the weaker contrast is strongest) and is a shell when both reach
   ``SHELL_Z`` corrected for the positions the search looked at (Bonferroni) and its wall lies
   inside the largest particle.
3. Merge (localize/extract.py): the picks whose centre lies within the wall's radius plus the
   smallest particle's radius of a shell's centre become one instance at the shell's centre;
   cavities are taken largest first, and one inside an accepted shell is not another shell.

Chunked: two passes over the blocks of the mask and image, each block read with a halo of the
largest box; the first measures the null at random positions inside the sample, the second finds,
tests and refines the cavities of its interior; tasks return a few numbers per cavity. Axis order
(z, y, x); what goes in and comes out is in voxels of the working grid.

Why by hand: scikit-image and dask-image find blobs and local maxima, not a shell; the distance
maps and filters used here are theirs (edt, scipy.ndimage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.stats import norm

from ..chunking import block_boxes, haloed_box
from ..progress import compute
from .morphology import distance_sq

BIN = 2  # the test runs on the mask and the tomogram binned this much
SHELL_Z = 3.0  # robust z of both wall contrasts against the null (one-sided p ~ 0.001 each under normality)
SCREEN_Z = 1.0  # a cavity whose weaker contrast reaches this at its first centre has its centre refined
FEW = 64  # up to this many cavities to test are read box by box, more block by block
REFINE_STEPS = 2  # at most this many one-voxel moves (binned) of a cavity's centre
# the refined centre is the best of up to 1 + 6 x REFINE_STEPS positions: its z is held to SHELL_Z's one-sided
# level divided by their number (Bonferroni: 3.68 for 13), so that the search does not make shells of noise
SHELL_Z_REFINED = float(norm.isf(norm.sf(SHELL_Z) / (1 + 6 * REFINE_STEPS)))
WEDGE_HALF_ANGLE_DEG = 30.0  # +-60 degree tilt series: surfaces whose normal is within 30 degrees of z are not seen
N_AZIMUTH = 8  # the band is cut into 8 azimuthal sectors, above and below the equator: 16 patches,
N_SECTORS = 2 * N_AZIMUTH  # and the wall's contrast is their median (dark all around, not where a few particles touch)
N_NULL = 300  # random positions inside the sample for the null
MIN_WALL_PICKS = 3  # a shell broken into fewer picks is not told from particles beside a gap
# rings are one working-grid voxel wide (half a binned voxel: the binned tomogram keeps the wall's profile)
WALL_SEARCH = 5  # the wall's mid ring lies between e and e + 5 voxels (e: the cavity's radius)
WALL_HALF = 1  # the wall: rings kw - 1 .. kw + 1
OUTER = (3, 5)  # the outside: rings kw + 3 .. kw + 5


@dataclass
class Shells:
    """Shells found (working-grid voxels): centres (z, y, x), cavity and wall radii, both wall
    contrasts in null z units, and the rows of the given picks that each one merges."""

    centres: np.ndarray
    cavity: np.ndarray
    wall: np.ndarray
    z_inner: np.ndarray
    z_outer: np.ndarray
    members: list[np.ndarray] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.centres)


def _any_binned(block: np.ndarray) -> np.ndarray:
    """True where any of a block's BIN^3 voxels is (an odd last voxel dropped): the OR of the BIN^3
    strided views, several times faster than np.any over a reshaped 6-D view."""
    block = np.asarray(block, bool)
    s = [n // BIN * BIN for n in block.shape]
    out = np.zeros([n // BIN for n in block.shape], bool)
    for dz in range(BIN):
        for dy in range(BIN):
            for dx in range(BIN):
                out |= block[dz:s[0]:BIN, dy:s[1]:BIN, dx:s[2]:BIN]
    return out


def binned_mask(mask: da.Array) -> da.Array:
    """The particle mask binned BIN x (True where any of the BIN^3 voxels is; an odd last voxel
    dropped), lazy; blocks as the mask's, halved."""
    from ..io.omezarr import _even_chunks

    mask = _even_chunks(mask)
    chunks = tuple(tuple(c // BIN for c in cs) for cs in mask.chunks)  # an odd last voxel: a block of 0
    return mask.map_blocks(_any_binned, chunks=chunks, dtype=bool)


def to_binned(zyx: np.ndarray) -> np.ndarray:
    """Working-grid voxel coordinates -> binned ones (binned voxel j spans voxels BIN j .. BIN j + BIN - 1)."""
    return (np.asarray(zyx, float) - (BIN - 1) / 2) / BIN


def from_binned(zyx: np.ndarray) -> np.ndarray:
    return np.asarray(zyx, float) * BIN + (BIN - 1) / 2


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


def radial_profiles(image: np.ndarray, centre, half: int, geometry: RingGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Ring means of ``image`` about ``centre`` (voxel index) in the visible band per patch,
    (n, N_SECTORS), and ball means (all directions; ball k: the rings below k), (n,), for rings
    0 .. n - 1 = BIN x half. Parts of the box outside ``image`` are left out (NaN where nothing is left)."""
    n = BIN * half + 1
    lo = np.asarray(centre, np.int64) - half
    hi = lo + 2 * half + 1
    if lo.min() >= 0 and (hi <= image.shape).all():  # the usual case: index tables made once per box size
        band_idx, band_key, all_idx, all_ring = _tables(geometry.half, half)
        box = image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].ravel()
        values, all_values = box[band_idx], box[all_idx]
    else:
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, image.shape)
        if np.any(src_hi <= src_lo):
            return np.full((n, N_SECTORS), np.nan), np.full(n, np.nan)
        full = geometry.half
        g = tuple(slice(full - half + (a - s), full - half + (b - s)) for a, b, s in zip(src_lo, src_hi, lo))
        box = np.asarray(image[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]).ravel()
        r, b, sec = geometry.ring[g].ravel(), geometry.band[g].ravel(), geometry.patch[g].ravel()
        inside = r < n
        values, band_key = box[inside & b], r[inside & b] * N_SECTORS + sec[inside & b]
        all_values, all_ring = box[inside], r[inside]
    ring_sum = np.bincount(band_key, weights=values, minlength=n * N_SECTORS).reshape(n, N_SECTORS)
    ring_cnt = np.bincount(band_key, minlength=n * N_SECTORS).reshape(n, N_SECTORS)
    all_sum, all_cnt = np.bincount(all_ring, weights=all_values, minlength=n), np.bincount(all_ring, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ball = np.concatenate([[np.nan], np.cumsum(all_sum)[:-1] / np.cumsum(all_cnt)[:-1]])
        return ring_sum / ring_cnt, ball


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
    from radial_profiles, stacked along leading axes for many positions at once."""
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
        med = np.median(vals, axis=0)
        out[int(e)] = (med, np.maximum(1.4826 * np.median(np.abs(vals - med), axis=0), 1e-12))
    return out


def _profiles_inside(image: np.ndarray, lo: np.ndarray, half: int, geometry: RingGeometry) -> tuple[np.ndarray, np.ndarray]:
    """radial_profiles of boxes of ``half`` starting at ``lo`` ((m, 3), wholly inside a C-ordered
    ``image``), many at once: one gather and one bincount per batch of boxes."""
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


def profiles_at(image: np.ndarray, centres: np.ndarray, radii: np.ndarray, geometry: RingGeometry,
                half: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """radial_profiles at each of ``centres`` (voxel indices, (m, 3)) for cavities of ``radii`` (voxels),
    each box as large as its radius needs (or ``half`` for all); stacked, rings past a box's own NaN:
    (m, rings, patches), (m, rings). Boxes reaching past the image are padded with NaN (left out)."""
    centres = np.asarray(centres, np.int64).reshape(-1, 3)
    halves = np.array([margin(e) if half is None else half for e in radii], int)
    n = BIN * int(halves.max(initial=0) if half is None else half) + 1
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
    rings, balls = profiles_at(image, centres, radii, geometry)
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


def _weaker(z: np.ndarray) -> np.ndarray:
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
        best = _weaker(tz).reshape(len(active), len(moves))
        j = np.argmax(best, axis=1)
        better = best[np.arange(len(active)), j] > _weaker(z[active])
        up, pick = active[better], np.arange(len(active))[better] * len(moves) + j[better]
        c[up], z[up], kw[up] = trial[pick], tz[pick], tk[pick]
        active = up
    return c, z, kw


def cavity_maxima(particle: np.ndarray, r_min: float, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (voxel indices) and radii (voxels) of the particle-free balls of a boolean mask
    whose radius is a local maximum (3^3) between ``r_min`` and ``r_max``."""
    p = np.asarray(particle, bool)
    if not p.any():
        return np.zeros((0, 3), np.int64), np.zeros(0)
    d = np.sqrt(distance_sq(~p))
    peak = (d == ndi.maximum_filter(d, size=3)) & (d >= r_min) & (d <= r_max)
    return np.argwhere(peak).astype(np.int64), d[peak].astype(float)


def _block_null(image: np.ndarray, origin: np.ndarray, points: np.ndarray, half: int):
    """Profiles (rings, balls: radial_profiles) at ``points`` (global) of one haloed block of the
    binned tomogram whose first voxel is ``origin``."""
    points = np.asarray(points, np.int64).reshape(-1, 3)
    return profiles_at(image, points - origin, np.full(len(points), float(half)), ring_geometry(half), half=half)


def rim_picks(tree: cKDTree, centres: np.ndarray, radii: np.ndarray, reach: float) -> np.ndarray:
    """How many picks (``tree``, binned) lie on the rim of each cavity (binned centres, radii in
    voxels): within the wall's reach and not inside the cavity."""
    if not len(centres):
        return np.zeros(0, int)
    outer = tree.query_ball_point(centres, (radii + WALL_SEARCH + reach) / BIN, return_length=True)
    inner = tree.query_ball_point(centres, np.maximum(radii / BIN - 1 - 1e-9, 0), return_length=True)
    return np.asarray(outer) - np.asarray(inner)


def _block_cavities(mask: np.ndarray, origin: np.ndarray, own: tuple[np.ndarray, np.ndarray], r_min: float,
                    r_max: float, lamella=None) -> tuple[np.ndarray, np.ndarray]:
    """The cavities of one haloed block of the binned mask (``origin``: its first voxel; ``own``:
    [first, last) of the voxels it owns; binned, global) that it owns and that lie inside the sample:
    centres (binned, global) and radii (voxels)."""
    centres, radii = cavity_maxima(mask, r_min / BIN, r_max / BIN)
    centres, radii = centres + origin, radii * BIN
    mine = np.all((centres >= own[0]) & (centres < own[1]), axis=1)
    if lamella is not None and mine.any():  # cavities outside the sample (vacuum beside the slab) are not shells
        mine[mine] = lamella.inside_points(from_binned(centres[mine]), extract=True)
    return centres[mine], radii[mine]


def distinct_cavities(centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Indices of the cavities that are not another's: the distance map's maxima come in plateaus
    (neighbouring voxels at the same distance); of a plateau's maxima the first in (z, y, x) order
    stands for it (the refinement moves a centre further than that). ``centres`` binned, ``radii`` in voxels."""
    if not len(centres):
        return np.zeros(0, int)
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0], -radii))
    near = cKDTree(centres).query_ball_point(centres[order], np.sqrt(3) + 1e-6)  # the 26 neighbours
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    gone = np.zeros(len(centres), bool)
    for j, nb in zip(order, near):
        if not gone[j]:
            for k in nb:
                if rank[k] > rank[j]:
                    gone[k] = True
    return np.sort(np.flatnonzero(~gone))


def _block_tests(image: np.ndarray, origin: np.ndarray, centres: np.ndarray, radii: np.ndarray, r_max: float,
                 polarity: int, levels: dict) -> list[tuple]:
    """The shell test of cavities (binned, global ``centres``; ``radii`` in voxels) on one haloed block
    of the binned tomogram starting at ``origin``; those reaching SCREEN_Z refined. Returns, per
    cavity, None or (first centre, centre, radius, wall ring in voxels, z_inner, z_outer)."""
    geometry = ring_geometry(margin(r_max) + REFINE_STEPS)
    z, _ = shell_z(image, centres - origin, radii, polarity, geometry, levels)
    screened = np.flatnonzero(_weaker(z) >= SCREEN_Z)
    c, z, kw = refine_centres(image, centres[screened] - origin, radii[screened], polarity, geometry, levels)
    rows: list = [None] * len(centres)
    for i, ci, k, zi in zip(screened, c, kw, z):
        rows[i] = (centres[i], ci + origin, float(radii[i]), int(k), float(zi[0]), float(zi[1]))
    return rows


def null_points(lamella, shape_binned, n: int, half: int, seed: int) -> np.ndarray:
    """``n`` random binned voxel positions inside the sample (the lamella's core; the whole box if
    none) and at least ``half`` from the y and x faces, drawn by rejection; seeded."""
    rng = np.random.default_rng(seed)
    shape_binned = np.asarray(shape_binned)
    lo = np.array([0, min(half, shape_binned[1] // 4), min(half, shape_binned[2] // 4)])
    span = np.maximum(shape_binned - 2 * lo, 1)
    pts = np.zeros((0, 3), np.int64)
    for _ in range(50):
        p = (rng.random((4 * n, 3)) * span).astype(np.int64) + lo
        if lamella is not None:
            p = p[lamella.inside_points(from_binned(p))]
        pts = np.concatenate([pts, p])[:n]
        if len(pts) >= n:
            break
    return pts


def _blocks(arr: da.Array, halo: int):
    """(slices of the haloed block, its first voxel, [first, last) of the voxels it owns) per block."""
    for _, origin, shape in block_boxes(arr.chunks):
        lo, hi = haloed_box(arr.shape, origin, shape, halo)
        yield (tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo,
               (np.asarray(origin), np.asarray(origin) + np.asarray(shape)))


# Per segmentation (``cache_key``): the null's levels, the cavities and the test of each one tested so far
# (None: not a shell), so that the second workflow on the same semantic labels (cc after ws) finds the
# cavities again at no cost and tests only those the first did not. A few entries; the results are the
# same with or without it.
_TESTED: dict = {}
_TESTED_KEEP = 4

def find_shells(mask: da.Array, image_binned: da.Array, picks_zyx: np.ndarray, diameter_vox: tuple[float, float],
                polarity: int, lamella=None, seed: int = 0, cache_key=None) -> Shells:
    """Shells among the cavities of the particle ``mask`` (lazy bool, z, y, x) with ``picks_zyx``
    ((n, 3) voxels) on their walls. ``image_binned``: the tomogram binned BIN x by the mean, an odd
    last voxel dropped (the OME-Zarr image's pyramid level 1; io/omezarr.downsample2);
    ``diameter_vox``: the size prior in voxels (smallest, largest); ``polarity``: +1 when particles
    are brighter than the ice (localize/score.py); ``lamella``: where the sample is
    (segment/lamella.py); ``cache_key``: what identifies the segmentation, mask and tomogram (None:
    no reuse). Steps and rules: module docstring."""
    picks = np.asarray(picks_zyx, float).reshape(-1, 3)
    r_min, r_max = float(diameter_vox[0]), float(diameter_vox[1]) / 2
    e_max = r_max - WALL_HALF - 1  # the wall (kw + WALL_HALF, kw >= e + 1 in practice) inside the largest particle
    reach = float(diameter_vox[0]) / 2
    report = {"cavity_radius_vox": [round(r_min, 1), round(e_max, 1)], "tested": 0, "shells": 0, "picks_merged": 0}
    none = Shells(np.zeros((0, 3)), np.zeros(0), np.zeros(0, int), np.zeros(0), np.zeros(0), [], report)
    if e_max < r_min or len(picks) < MIN_WALL_PICKS:
        report["note"] = ("the size prior leaves no cavity radius (smallest diameter above the largest radius)"
                          if e_max < r_min else "fewer picks than a shell merges")
        return none
    mask_b = binned_mask(mask)
    if tuple(mask_b.shape) != tuple(image_binned.shape):
        raise ValueError(f"binned tomogram {tuple(image_binned.shape)} does not match the binned mask {tuple(mask_b.shape)}")
    mask_b = mask_b.rechunk(image_binned.chunks)
    half = margin(e_max)
    halo = half + REFINE_STEPS + 1
    blocks = list(_blocks(image_binned, halo))
    key = None if cache_key is None else (cache_key, tuple(diameter_vox), polarity, seed)
    if key in _TESTED:
        levels, n_null, centres, radii, tested = _TESTED[key]
    else:
        points = null_points(lamella, image_binned.shape, N_NULL, half, seed)
        null = [dask.delayed(_block_null)(image_binned[sl], lo, points[np.all((points >= own[0]) & (points < own[1]), axis=1)], half)
                for sl, lo, own in blocks]
        # the distance map needs a halo of the largest cavity (+1 for the maxima filter), not the tests' boxes
        cav = [dask.delayed(_block_cavities)(mask_b[sl], lo, own, r_min, e_max, lamella)
               for sl, lo, own in _blocks(image_binned, int(np.ceil(e_max / BIN)) + 2)]
        parts = compute(*null, *cav, label="shells: null and cavities")
        null, cav = parts[:len(blocks)], parts[len(blocks):]
        levels = null_levels(np.concatenate([p[0] for p in null]), np.concatenate([p[1] for p in null]),
                             np.arange(np.floor(r_min), np.ceil(e_max) + 1), polarity)
        n_null, tested = int(sum(len(p[1]) for p in null)), {}
        centres = np.concatenate([c for c, _ in cav]).reshape(-1, 3)
        radii = np.concatenate([r for _, r in cav])
        distinct = distinct_cavities(centres, radii)
        centres, radii = centres[distinct], radii[distinct]
    report["null_positions"] = n_null
    pb = to_binned(picks)
    on_rim = np.flatnonzero(rim_picks(cKDTree(pb), centres, radii, reach) >= MIN_WALL_PICKS) if len(pb) else []
    keys = [tuple(int(v) for v in centres[i]) for i in on_rim]
    new = np.array([i for i, k in zip(on_rim, keys) if k not in tested], int)
    reused = [tested[k] for k in keys if k in tested]
    owner = np.zeros(len(new), int)  # the block that owns each new cavity
    for j, (_, _, own) in enumerate(blocks):
        owner[np.all((centres[new] >= own[0]) & (centres[new] < own[1]), axis=1)] = j
    tasks, which = [], []
    if len(new) <= FEW:  # a few (the second workflow's own): each cavity's box alone, not haloed blocks
        for i in new:
            lo = np.maximum(centres[i] - halo, 0)
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, np.minimum(centres[i] + halo + 1, image_binned.shape)))
            tasks.append(dask.delayed(_block_tests)(image_binned[sl], lo, centres[i:i + 1], radii[i:i + 1], e_max,
                                                    polarity, levels))
            which.append(np.array([i]))
    else:
        for j in np.unique(owner):
            sl, lo, _ = blocks[j]
            sel = new[owner == j]
            tasks.append(dask.delayed(_block_tests)(image_binned[sl], lo, centres[sel], radii[sel], e_max, polarity, levels))
            which.append(sel)
    for sel, rows in zip(which, compute(*tasks, label="shells: wall tests") if tasks else []):
        tested.update({tuple(int(v) for v in centres[i]): r for i, r in zip(sel, rows)})
    if key is not None:
        _TESTED[key] = (levels, n_null, centres, radii, tested)
        while len(_TESTED) > _TESTED_KEEP:
            _TESTED.pop(next(iter(_TESTED)))
    report.update(cavities=int(len(centres)), tested=int(len(new)), reused=len(reused))
    rows = [tested[k][1:] for k in keys if tested[k] is not None]
    rows = [r for r in rows if min(r[3], r[4]) >= SHELL_Z_REFINED and r[2] + WALL_HALF <= r_max]
    rows.sort(key=lambda r: (-r[1], tuple(r[0])))  # largest cavities first (ties by position: the same order cached or not)
    taken = np.zeros(len(picks), bool)
    kept, members = [], []
    for c, e, kw, z_in, z_out in rows:
        if any(np.linalg.norm(c - k[0]) < k[1] / BIN for k in kept):
            continue
        member = np.flatnonzero((np.linalg.norm(pb - c, axis=1) <= (kw + WALL_HALF + reach) / BIN) & ~taken)
        if len(member) < MIN_WALL_PICKS:
            continue
        taken[member] = True
        kept.append((c, e, kw, z_in, z_out))
        members.append(member)
    report.update(shells=len(kept), picks_merged=int(taken.sum()),
                  test=f"wall {'brighter' if polarity > 0 else 'darker'} than inside and outside (median of "
                       f"{N_SECTORS} patches) by >= {SHELL_Z_REFINED:.2f} robust SDs of a null at random positions")
    if not kept:
        return none
    c, e, kw, z_in, z_out = (np.array(v) for v in zip(*kept))
    return Shells(from_binned(np.stack(c)), e, kw, z_in.astype(float), z_out.astype(float), members, report)


def merge_shells(table, keep: np.ndarray, score: np.ndarray, contrast: np.ndarray, rows: np.ndarray,
                 shells: Shells) -> np.ndarray:
    """Merge each shell's member picks (``shells.members`` index ``rows``, rows of ``table``) into its
    largest one, in place: that instance takes the shell's centre, the members' voxels (count,
    bounding box) and their voxel-weighted contrast (score = contrast x sqrt(voxels),
    localize/score.py); the others leave ``keep``. Returns, per instance, the row it joined (-1: none)."""
    merged_into = np.full(len(keep), -1)
    for centre, member in zip(shells.centres, shells.members):
        r = rows[member]
        head = r[np.argmax(table.counts[r])]
        n = table.counts[r].astype(float)
        contrast[head] = float(np.sum(contrast[r] * n) / n.sum())
        table.counts[head] = int(n.sum())
        score[head] = contrast[head] * np.sqrt(n.sum())
        table.centroids[head] = centre
        table.bbox_min[head] = table.bbox_min[r].min(axis=0)
        table.bbox_max[head] = table.bbox_max[r].max(axis=0)
        others = r[r != head]
        keep[others] = False
        merged_into[others] = head
    return merged_into
