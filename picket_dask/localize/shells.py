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
2. The shell test on the tomogram's density about each cavity (localize/shell_test.py): the wall,
   three 1-voxel rings just outside the cavity, more particle-like than the ball inside it and
   the rings outside it, each contrast the median over 16 patches of the band the missing wedge
   leaves, against its null: the same statistic at ``N_NULL`` random positions inside the sample,
   per cavity radius, in robust z units (median, 1.4826 x MAD; the null is measured, not assumed:
   tomographic noise is correlated, its level differs per tomogram). A cavity reaching
   ``SCREEN_Z`` on both has its centre refined and is a shell when both reach ``SHELL_Z``
   corrected for the positions the refinement looked at, and its wall lies inside the largest
   particle.
3. Merge (``merge_shells``, called by localize/extract.py): the picks whose centre lies within the wall's radius plus the
   smallest particle's radius of a shell's centre become one instance at the shell's centre;
   cavities are taken largest first, and one inside an accepted shell is not another shell.

Chunked: a first pass over the blocks of the binned mask and tomogram measures the null at
random positions inside the sample and finds the cavities each block owns (halo: the largest
cavity); the driver keeps one cavity per plateau of maxima and those with picks on their rim; a
second pass tests them, block by block with a halo of the largest box (or box by box when few).
Tasks return a few numbers per cavity. A second workflow on the same segmentation reuses the
null, the cavities and the tests (``cache_key``). Axis order (z, y, x); what goes in and comes
out is in voxels of the working grid.

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

from ..chunking import haloed_blocks
from ..progress import compute
from .centroids import merge_rows
from .morphology import distance_sq
from .shell_test import (BIN, N_SECTORS, REFINE_STEPS, SCREEN_Z, SHELL_Z_REFINED, WALL_HALF, WALL_SEARCH, margin,
                         null_levels, profiles_at, refine_centres, ring_geometry, shell_z, weaker)

FEW = 64  # up to this many cavities to test are read box by box, more block by block
N_NULL = 300  # random positions inside the sample for the null
MIN_WALL_PICKS = 3  # a shell broken into fewer picks is not told from particles beside a gap


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
    from ..io.omezarr import even_chunks

    mask = even_chunks(mask)
    chunks = tuple(tuple(c // BIN for c in cs) for cs in mask.chunks)  # an odd last voxel: a block of 0
    return mask.map_blocks(_any_binned, chunks=chunks, dtype=bool)


def to_binned(zyx: np.ndarray) -> np.ndarray:
    """Working-grid voxel coordinates -> binned ones (binned voxel j spans voxels BIN j .. BIN j + BIN - 1)."""
    return (np.asarray(zyx, float) - (BIN - 1) / 2) / BIN


def from_binned(zyx: np.ndarray) -> np.ndarray:
    return np.asarray(zyx, float) * BIN + (BIN - 1) / 2


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
    """Profiles (rings, balls: shell_test.profiles_at) at ``points`` (global) of one haloed block of the
    binned tomogram whose first voxel is ``origin``."""
    points = np.asarray(points, np.int64).reshape(-1, 3)
    return profiles_at(image, points - origin, half, ring_geometry(half))


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
    screened = np.flatnonzero(weaker(z) >= SCREEN_Z)
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
    for hb in haloed_blocks(arr.chunks, halo):
        yield hb.slices, hb.lo, (hb.origin, hb.end)


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
    reused = sum(k in tested for k in keys)
    tasks, which = [], []
    if len(new) <= FEW:  # a few (the second workflow's own): each cavity's box alone, not haloed blocks
        for i in new:
            lo = np.maximum(centres[i] - halo, 0)
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, np.minimum(centres[i] + halo + 1, image_binned.shape)))
            tasks.append(dask.delayed(_block_tests)(image_binned[sl], lo, centres[i:i + 1], radii[i:i + 1], e_max,
                                                    polarity, levels))
            which.append(np.array([i]))
    else:
        owner = np.zeros(len(new), int)  # the block that owns each new cavity
        for j, (_, _, own) in enumerate(blocks):
            owner[np.all((centres[new] >= own[0]) & (centres[new] < own[1]), axis=1)] = j
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
    report.update(cavities=int(len(centres)), tested=int(len(new)), reused=int(reused))
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
        merge_rows(table, keep, score, contrast, merged_into, r, r[np.argmax(table.counts[r])], centre)
    return merged_into
