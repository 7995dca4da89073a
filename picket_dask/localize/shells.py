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


def bin_mean(block: np.ndarray) -> np.ndarray:
    """Mean over BIN^3 voxels (float32); a last odd slice is dropped."""
    s = [n // BIN * BIN for n in block.shape]
    b = np.asarray(block[:s[0], :s[1], :s[2]], np.float32)
    return b.reshape(s[0] // BIN, BIN, s[1] // BIN, BIN, s[2] // BIN, BIN).mean(axis=(1, 3, 5))


def bin_any(block: np.ndarray) -> np.ndarray:
    """True where any of BIN^3 voxels is; a last odd slice is dropped."""
    s = [n // BIN * BIN for n in block.shape]
    b = np.asarray(block[:s[0], :s[1], :s[2]], bool)
    return b.reshape(s[0] // BIN, BIN, s[1] // BIN, BIN, s[2] // BIN, BIN).any(axis=(1, 3, 5))


def to_binned(zyx: np.ndarray) -> np.ndarray:
    """Working-grid voxel coordinates -> binned ones (binned voxel j spans voxels BIN j .. BIN j + BIN - 1)."""
    return (np.asarray(zyx, float) - (BIN - 1) / 2) / BIN


def from_binned(zyx: np.ndarray) -> np.ndarray:
    return np.asarray(zyx, float) * BIN + (BIN - 1) / 2


def margin(e: float) -> int:
    """Box half-size (binned voxels) that holds the rings the test reads for a cavity of radius
    ``e`` (working-grid voxels)."""
    return int(np.ceil((np.rint(e) + WALL_SEARCH + OUTER[1] + 1) / BIN))


def ring_geometry(half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a (2 half + 1)^3 box (z, y, x) of binned voxels: each voxel's ring (its distance to the
    centre in working-grid voxels, rounded), whether it lies in the band the missing wedge leaves
    visible, and its azimuthal sector."""
    g = np.arange(-half, half + 1, dtype=np.float32)
    dz, dy, dx = np.meshgrid(g, g, g, indexing="ij")
    r = np.sqrt(dz * dz + dy * dy + dx * dx)
    band = np.abs(dz) < np.cos(np.deg2rad(WEDGE_HALF_ANGLE_DEG)) * np.maximum(r, 1e-6)
    azimuth = np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_AZIMUTH).astype(np.int64) % N_AZIMUTH
    sector = azimuth + N_AZIMUTH * (dz > 0)  # above and below the equator apart
    return np.rint(r * BIN).astype(np.int64), band, sector


def radial_profiles(image: np.ndarray, centre, half: int, geometry) -> tuple[np.ndarray, np.ndarray]:
    """Ring means of ``image`` about ``centre`` (voxel index) in the visible band per azimuthal
    sector, (n, N_SECTORS), and ball means (all directions; ball k: the rings below k), (n,), for
    rings 0 .. n - 1 = BIN x half (ring_geometry). Parts of the box outside ``image`` are left out
    (NaN where nothing is left)."""
    ridx, band, sector = geometry
    full, n = ridx.shape[0] // 2, BIN * half + 1
    lo = np.asarray(centre, np.int64) - half
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + 2 * half + 1, image.shape)
    if np.any(src_hi <= src_lo):
        return np.full((n, N_SECTORS), np.nan), np.full(n, np.nan)
    box = np.asarray(image[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))], np.float64).ravel()
    g = tuple(slice(full - half + (a - s), full - half + (b - s)) for a, b, s in zip(src_lo, src_hi, lo))
    r, b, sec = ridx[g].ravel(), band[g].ravel(), sector[g].ravel()
    inside = r < n
    r, b, sec, box = r[inside], b[inside], sec[inside], box[inside]
    key = r[b] * N_SECTORS + sec[b]
    ring_sum = np.bincount(key, weights=box[b], minlength=n * N_SECTORS).reshape(n, N_SECTORS)
    ring_cnt = np.bincount(key, minlength=n * N_SECTORS).reshape(n, N_SECTORS)
    all_sum, all_cnt = np.bincount(r, weights=box, minlength=n), np.bincount(r, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ball = np.concatenate([[np.nan], np.cumsum(all_sum)[:-1] / np.cumsum(all_cnt)[:-1]])
        return ring_sum / ring_cnt, ball


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN (NaN where all are), without numpy's warning (tasks run in threads)."""
    ok = np.isfinite(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, a, 0.0).sum(axis=axis) / ok.sum(axis=axis)


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where all are), without numpy's warning."""
    a = np.sort(a, axis=-1)  # NaN last
    n = np.isfinite(a).sum(axis=-1)
    lo = np.take_along_axis(a, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(a, np.maximum(n // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def shell_contrast(rings: np.ndarray, balls: np.ndarray, e: float, polarity: int):
    """The wall's contrast against the ball inside it and against the rings outside it (density
    units, particle polarity positive, medians over the sectors) and the wall's mid ring, for a
    cavity of radius ``e``; ``rings`` (..., rings, sectors) and ``balls`` (..., rings) from
    radial_profiles, stacked along leading axes for many positions at once."""
    rings, balls = np.asarray(rings, float), np.asarray(balls, float)
    lo = max(1 + WALL_HALF, int(np.rint(e)))
    hi = min(int(np.rint(e)) + WALL_SEARCH, rings.shape[-2] - 1 - OUTER[1])
    lead = rings.shape[:-2]
    if hi < lo:
        nan = np.full(lead, np.nan)
        return nan, nan, np.full(lead, -1)
    ks = np.arange(lo, hi + 1)
    walls = np.stack([_nanmean(rings[..., k - WALL_HALF:k + WALL_HALF + 1, :], axis=-2) for k in ks], axis=-2)
    pick = np.argmax(np.nan_to_num(polarity * _nanmean(walls, axis=-1), nan=-np.inf), axis=-1)
    wall = np.take_along_axis(walls, pick[..., None, None], axis=-2)[..., 0, :]
    kw = ks[pick]
    inner = np.take_along_axis(balls, np.maximum(kw - WALL_HALF, 1)[..., None], axis=-1)
    outer = np.stack([_nanmean(rings[..., k + OUTER[0]:k + OUTER[1] + 1, :], axis=-2) for k in ks], axis=-2)
    outer = np.take_along_axis(outer, pick[..., None, None], axis=-2)[..., 0, :]
    d_in = _nanmedian(polarity * (wall - inner))
    d_out = _nanmedian(polarity * (wall - outer))
    return d_in, d_out, kw


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


def shell_z(image: np.ndarray, centre, e: float, polarity: int, geometry, levels: dict) -> tuple[float, float, int]:
    """Both wall contrasts of the cavity at ``centre`` in null z units, and the wall's mid ring."""
    lev = levels.get(int(np.rint(e)))
    if lev is None:
        return np.nan, np.nan, -1
    rings, balls = radial_profiles(image, centre, margin(e), geometry)
    d_in, d_out, kw = shell_contrast(rings, balls, e, polarity)
    z = (np.array([d_in, d_out], float) - lev[0]) / lev[1]
    return float(z[0]), float(z[1]), int(kw)


def _weaker(z) -> float:
    return float(np.nan_to_num(min(z[0], z[1]), nan=-np.inf))


def refine_centre(image: np.ndarray, centre, e: float, polarity: int, geometry, levels: dict):
    """Hill-climb of the centre, one voxel along z, y or x per step (at most REFINE_STEPS), to where
    the weaker wall contrast is strongest: the cavity's centre comes from a mask the noise shaped,
    the test is sharp to a voxel. Returns (centre, z_inner, z_outer, wall ring)."""
    c = np.asarray(centre, np.int64)
    best = shell_z(image, c, e, polarity, geometry, levels)
    moves = np.vstack([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])
    for _ in range(REFINE_STEPS):
        trials = [(shell_z(image, c + m, e, polarity, geometry, levels), c + m) for m in moves
                  if np.all(c + m >= 0) and np.all(c + m < image.shape)]
        top = max(trials, key=lambda t: _weaker(t[0]), default=None)
        if top is None or not _weaker(top[0]) > _weaker(best):
            break
        best, c = top
    return c, best[0], best[1], best[2]


def cavity_maxima(particle: np.ndarray, r_min: float, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (voxel indices) and radii (voxels) of the particle-free balls of a boolean mask
    whose radius is a local maximum (3^3) between ``r_min`` and ``r_max``."""
    p = np.asarray(particle, bool)
    if not p.any():
        return np.zeros((0, 3), np.int64), np.zeros(0)
    d = np.sqrt(distance_sq(~p))
    peak = (d == ndi.maximum_filter(d, size=3)) & (d >= r_min) & (d <= r_max)
    return np.argwhere(peak).astype(np.int64), d[peak].astype(float)


def _block_null(image: np.ndarray, lo: np.ndarray, points: np.ndarray, half: int):
    """Profiles at ``points`` (binned, global) of one haloed image block starting at ``lo`` (voxels)."""
    img = bin_mean(image)
    geometry = ring_geometry(half)
    origin = lo // BIN
    prof = [radial_profiles(img, p - origin, half, geometry) for p in points]
    n = BIN * half + 1
    return np.array([p[0] for p in prof]).reshape(-1, n, N_SECTORS), np.array([p[1] for p in prof]).reshape(-1, n)


def _block_shells(mask: np.ndarray, image: np.ndarray, lo: np.ndarray, interior: tuple[np.ndarray, np.ndarray],
                  picks: np.ndarray, r_min: float, r_max: float, reach: float, polarity: int, levels: dict):
    """One haloed block (``lo``: its first voxel; ``interior``: [first, last) binned voxels it owns):
    its cavities with at least MIN_WALL_PICKS of ``picks`` (binned, global) on their rim, tested;
    those reaching SCREEN_Z refined. Returns the refined ones as (centre binned global, radius,
    wall ring, z_inner, z_outer) and how many cavities were tested."""
    origin = lo // BIN
    img = bin_mean(image)
    centres, radii = cavity_maxima(bin_any(mask), r_min / BIN, r_max / BIN)
    centres, radii = centres + origin, radii * BIN
    own = np.all((centres >= interior[0]) & (centres < interior[1]), axis=1)
    centres, radii = centres[own], radii[own]
    if not (len(picks) and len(centres)):
        return [], 0
    geometry = ring_geometry(margin(r_max) + REFINE_STEPS)
    tree = cKDTree(picks)
    rows, tested = [], 0
    for c, e in zip(centres, radii):
        near = np.asarray(tree.query_ball_point(c, (e + WALL_SEARCH + reach) / BIN), int)
        if np.sum(np.linalg.norm(picks[near] - c, axis=1) >= e / BIN - 1) < MIN_WALL_PICKS:
            continue
        tested += 1
        if _weaker(shell_z(img, c - origin, e, polarity, geometry, levels)) < SCREEN_Z:
            continue
        cl, z_in, z_out, kw = refine_centre(img, c - origin, e, polarity, geometry, levels)
        rows.append((cl + origin, float(e), int(kw), z_in, z_out))
    return rows, tested


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


def _blocks(mask: da.Array, halo: int):
    """(slices of the haloed block, its first voxel, its own region [first, last) in binned voxels) per block."""
    for _, origin, shape in block_boxes(mask.chunks):
        lo, hi = haloed_box(mask.shape, origin, shape, halo)
        lo = lo - lo % BIN  # haloed blocks start on the binned grid
        own_lo = -(-np.asarray(origin) // BIN)
        own_hi = -(-(np.asarray(origin) + np.asarray(shape)) // BIN)
        yield tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo, (own_lo, own_hi)


def find_shells(mask: da.Array, image: da.Array, picks_zyx: np.ndarray, diameter_vox: tuple[float, float],
                polarity: int, lamella=None, seed: int = 0) -> Shells:
    """Shells among the cavities of the particle ``mask`` (lazy bool, z, y, x) with ``picks_zyx``
    ((n, 3) voxels) on their walls; ``image``: the tomogram on the same grid; ``diameter_vox``: the
    size prior in voxels (smallest, largest); ``polarity``: +1 when particles are brighter than the
    ice (localize/score.py); ``lamella``: where the sample is (segment/lamella.py). Steps and
    rules: module docstring."""
    picks = np.asarray(picks_zyx, float).reshape(-1, 3)
    r_min, r_max = float(diameter_vox[0]), float(diameter_vox[1]) / 2
    e_max = r_max - WALL_HALF - 1  # the wall (kw + WALL_HALF, kw >= e + 1 in practice) inside the largest particle
    reach = float(diameter_vox[0]) / 2
    report = {"cavity_radius_vox": [round(r_min, 1), round(e_max, 1)], "tested": 0, "shells": 0,
              "picks_merged": 0}
    none = Shells(np.zeros((0, 3)), np.zeros(0), np.zeros(0, int), np.zeros(0), np.zeros(0), [], report)
    if e_max < r_min or len(picks) < MIN_WALL_PICKS:
        report["note"] = ("the size prior leaves no cavity radius (smallest diameter above the largest radius)"
                          if e_max < r_min else "fewer picks than a shell merges")
        return none
    image = image.rechunk(mask.chunks)
    half = margin(e_max)
    halo = BIN * (half + REFINE_STEPS + 1)
    shape_b = np.asarray(mask.shape) // BIN
    points = null_points(lamella, shape_b, N_NULL, half, seed)
    blocks = list(_blocks(mask, halo))
    tasks = [dask.delayed(_block_null)(image[sl], lo, points[np.all((points >= own[0]) & (points < own[1]), axis=1)], half)
             for sl, lo, own in blocks]
    parts = compute(*tasks, label="shells: null")
    levels = null_levels(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         np.arange(np.floor(r_min), np.ceil(e_max) + 1), polarity)
    report["null_positions"] = int(sum(len(p[1]) for p in parts))
    pb = to_binned(picks)
    tasks = []
    for sl, lo, own in blocks:
        near = np.all((pb >= lo // BIN - 1) & (pb < np.array([s.stop for s in sl]) // BIN + 1), axis=1)
        tasks.append(dask.delayed(_block_shells)(mask[sl], image[sl], lo, own, pb[near], r_min, e_max, reach,
                                                 polarity, levels))
    parts = compute(*tasks, label="shells: cavities")
    report["tested"] = int(sum(p[1] for p in parts))
    rows = [r for p in parts for r in p[0] if min(r[3], r[4]) >= SHELL_Z_REFINED and r[2] + WALL_HALF <= r_max]
    if lamella is not None and rows:  # cavities outside the sample (vacuum beside the slab) are not shells
        inside = lamella.inside_points(from_binned(np.array([r[0] for r in rows])), extract=True)
        rows = [r for r, k in zip(rows, inside) if k]
    rows.sort(key=lambda r: -r[1])  # largest cavities first
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
                       f"{N_SECTORS} sectors) by >= {SHELL_Z_REFINED:.2f} robust SDs of a null at random positions")
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
