"""Which picks stand out of the ice's own noise: an empirical null of the pick score and a
Benjamini-Hochberg cut at a false-discovery rate.

The score of a pick (localize/score.py) is (instance mean - background mean) / background SD x
sqrt(voxels). If the noise were white, a noise-only region would score ~N(0, 1) and a z-test would
do; a reconstructed tomogram's noise is spatially correlated (weighted back-projection, CTF,
the Gaussian blur of the features), so the SD of that score for a region of n voxels grows with
n and no parametric law fits. The null is therefore measured on the tomogram itself: balls with
about the voxel count of each pick are placed at random background positions (semantic label 0,
inside the sample, the whole ball in the background, so away from every particle voxel), and
scored exactly like a pick. A pick's p-value is the fraction of null scores of its ball size at
or above its score, with the +1 correction ((1 + #null >= s) / (1 + N)); Benjamini-Hochberg then
keeps the picks whose adjusted p-value is at most the FDR ``q``.

Chunked: each block of the volume is read with a halo of the largest ball radius; the ball sums
of small balls are summed at the drawn positions, those of large ones come from one FFT of the
block and one product per radius (the ball is the same at every position, so a convolution is
the sum; scipy.fft does it); the positions
where a whole ball fits in the background from a Euclidean distance transform (the ``edt``
package, as in the watershed). Each block draws up to N random valid positions per radius and
reports how many it had; the blocks' draws are then thinned to N positions drawn uniformly over
the whole background (a multivariate hypergeometric split of N over the blocks), so the null
does not depend on the chunking. Memory: one haloed block and its FFT per task. Seeded.

Axis order (z, y, x); radii and sizes in voxels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from scipy import fft as sfft
from scipy.stats import false_discovery_control

from ..chunking import haloed_blocks
from ..progress import compute
from .morphology import ball, distance_sq

RADIUS_STEP = 0.5  # voxels: the finest radius grid
SIZE_RATIO = 1.2  # consecutive null ball sizes differ by at least this factor in voxels
MIN_NULL = 200  # a ball size with fewer background positions than this borrows the largest one that has them


def radii_for_sizes(counts_vox: np.ndarray, step: float = RADIUS_STEP) -> np.ndarray:
    """For each voxel count, the ball radius (a multiple of ``step``, >= ``step``) whose voxel count is
    nearest on a log scale."""
    counts = np.maximum(np.asarray(counts_vox, float), 1.0)
    r_max = max(step, float(np.ceil((3 * counts.max() / (4 * np.pi)) ** (1 / 3) / step + 2) * step)) if len(counts) else step
    grid = np.arange(step, r_max + step / 2, step)
    sizes = np.array([ball(r).sum() for r in grid], float)
    sizes, first = np.unique(sizes, return_index=True)  # radii with the same voxels: keep the smallest
    grid = grid[first]
    kept = [0]  # sizes at least SIZE_RATIO apart: fewer null balls to measure, each within ~10 % of a pick's size
    for j in range(1, len(sizes)):
        if sizes[j] >= SIZE_RATIO * sizes[kept[-1]]:
            kept.append(j)
    sizes, grid = sizes[kept], grid[kept]
    idx = np.abs(np.log(counts)[:, None] - np.log(sizes)[None, :]).argmin(axis=1)
    return grid[idx]


def _kernel_fft(radius: float, shape: tuple[int, int, int]) -> np.ndarray:
    """rfftn, on a grid of ``shape``, of a ball whose bounding cube sits at the origin's corner (the
    convolution's value at p + floor(radius) is the ball sum around p). The zero-padded transform is
    taken one axis at a time, the small axes first, so only the last pass runs on the full grid."""
    k = ball(radius).astype(np.float32)
    k = sfft.rfft(k, n=shape[2], axis=2, workers=1)
    k = sfft.fft(k, n=shape[1], axis=1, workers=1)
    return sfft.fft(k, n=shape[0], axis=0, workers=1)


# below this many gathered voxels a radius's ball sums are summed directly at the drawn positions,
# above it one inverse FFT of the block gives them everywhere (about 0.15 s for 128 x 142 x 142)
GATHER_VOXELS = 4_000_000


def _ball_sums_at(image: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Sums of ``image`` over balls of ``radius`` around ``centres`` (n, 3), all inside ``image``."""
    off = np.argwhere(ball(radius)) - int(np.floor(radius))
    flat = np.ravel_multi_index(off.T + int(np.floor(radius)), image.shape) - np.ravel_multi_index(
        (int(np.floor(radius)),) * 3, image.shape)
    base = np.ravel_multi_index(centres.T, image.shape)
    return image.ravel()[base[:, None] + flat[None, :]].sum(axis=1, dtype=np.float64)


def block_null_means(image: np.ndarray, background: np.ndarray, interior: tuple[slice, ...], radii: np.ndarray,
                     n_draw: int, seed) -> tuple[list[np.ndarray], np.ndarray]:
    """Means of ``image`` over balls of each radius centred at up to ``n_draw`` random positions of the
    ``interior`` of a haloed block where the whole ball lies in ``background``; and, per radius, how
    many such positions the interior has. ``image`` and ``background`` are the haloed block (z, y, x);
    the halo must be at least the largest radius + 1 where the block is not at the volume's face."""
    rng = np.random.default_rng(seed)
    # distance of each voxel to the nearest non-background voxel (the volume's outside counts as one)
    dist = np.sqrt(distance_sq(background, black_border=True))
    dist = dist[interior]
    if not (dist > radii.min()).any():
        return [np.empty(0) for _ in radii], np.zeros(len(radii), np.int64)
    image = np.ascontiguousarray(image, np.float32)
    spectrum = None
    origin = np.array([sl.start for sl in interior])
    means, counts = [], np.zeros(len(radii), np.int64)
    for i, r in enumerate(radii):
        where = np.flatnonzero(dist > r)
        counts[i] = len(where)
        if not len(where):
            means.append(np.empty(0))
            continue
        pick = where[rng.choice(len(where), size=min(n_draw, len(where)), replace=False)]
        centres = np.column_stack(np.unravel_index(pick, dist.shape)) + origin  # in the haloed block
        n_ball = int(ball(r).sum())
        if n_ball * len(pick) <= GATHER_VOXELS:
            sums = _ball_sums_at(image, centres, r)
        else:
            if spectrum is None:
                spectrum = sfft.rfftn(image, workers=1)
            conv = sfft.irfftn(spectrum * _kernel_fft(r, image.shape), s=image.shape, workers=1)
            sums = conv[tuple((centres + int(np.floor(r))).T)].astype(np.float64)
        means.append(sums / n_ball)
    return means, counts


@dataclass
class Null:
    """Null scores per ball radius (voxels) and how many background positions each radius had."""

    radii: np.ndarray
    scores: list[np.ndarray]
    positions: np.ndarray  # valid background positions per radius (the population the draws came from)
    borrowed: dict = field(default_factory=dict)  # radius -> radius used instead (too few positions)

    def for_radius(self, r: float) -> np.ndarray:
        r = self.borrowed.get(float(r), float(r))
        return self.scores[int(np.flatnonzero(np.isclose(self.radii, r))[0])]


def null_scores(image: da.Array, background: da.Array, radii: np.ndarray, bg_mean: float, bg_sd: float,
                polarity: int, n_null: int = 10000, seed: int = 42, min_null: int = MIN_NULL) -> Null:
    """Empirical null of the pick score for balls of each of ``radii`` (voxels) at ``n_null`` random
    background positions per radius (fewer if the background holds fewer), chunked over ``image``'s
    blocks. Scores as localize/score.py: polarity x (mean - bg_mean) / bg_sd x sqrt(ball voxels)."""
    radii = np.unique(np.asarray(radii, float))
    halo = int(np.floor(radii.max())) + 1
    background = background.rechunk(image.chunks)
    boxes = list(haloed_blocks(image.chunks, halo))
    tasks = [dask.delayed(block_null_means)(image[hb.slices], background[hb.slices], hb.interior, radii, n_null, [seed, hb.index])
             for hb in boxes]
    parts = compute(*tasks, label="significance: null balls")
    rng = np.random.default_rng([seed, len(boxes)])
    scores, positions = [], np.zeros(len(radii), np.int64)
    for j, r in enumerate(radii):
        avail = np.array([p[1][j] for p in parts], np.int64)
        positions[j] = avail.sum()
        take = rng.multivariate_hypergeometric(avail, min(n_null, int(avail.sum()))) if avail.sum() else avail
        m = np.concatenate([p[0][j][:t] for p, t in zip(parts, take)] or [np.empty(0)])
        scores.append(polarity * (m - bg_mean) / bg_sd * np.sqrt(ball(r).sum()))
    null = Null(radii, scores, positions)
    enough = [float(r) for r, s in zip(radii, scores) if len(s) >= min_null]
    for r, s in zip(radii, scores):
        if len(s) < min_null:  # large balls rarely fit in a crowded background: the largest that does stands in
            smaller = [q for q in enough if q < r]
            if smaller:
                null.borrowed[float(r)] = max(smaller)
    return null


def p_values(scores: np.ndarray, radii: np.ndarray, null: Null) -> np.ndarray:
    """(1 + #null scores >= score) / (1 + N) per pick, against the null of its ball radius; 1.0 where
    that null is empty (nothing to compare with: the pick is never called significant)."""
    scores = np.asarray(scores, float)
    p = np.ones(len(scores))
    for r in np.unique(radii):
        sel = radii == r
        ref = np.sort(null.for_radius(r))
        if len(ref):
            above = len(ref) - np.searchsorted(ref, scores[sel], side="left")
            p[sel] = (1.0 + above) / (1.0 + len(ref))
    return p


def bh_keep(p: np.ndarray, fdr: float) -> np.ndarray:
    """Benjamini-Hochberg: True for the p-values whose adjusted value is <= ``fdr``."""
    p = np.asarray(p, float)
    if not len(p):
        return np.zeros(0, bool)
    return false_discovery_control(p, method="bh") <= fdr


@dataclass
class Significance:
    """p-value per pick, which picks the FDR cut keeps, and what to record."""

    p: np.ndarray
    keep: np.ndarray
    report: dict


def significance(image: da.Array, background: da.Array, scores: np.ndarray, counts_vox: np.ndarray,
                 bg_mean: float, bg_sd: float, polarity: int, fdr: float, n_null: int = 10000,
                 seed: int = 42) -> Significance:
    """p-values of picks with ``scores`` and voxel ``counts_vox`` against the empirical null of the
    tomogram's background, and the Benjamini-Hochberg cut at ``fdr``. No picks: empty arrays, no work."""
    scores = np.asarray(scores, float)
    base = {"fdr": fdr, "null": "balls of the pick's voxel count at random background positions (label 0, "
            "inside the sample, whole ball in background)", "null_per_size": n_null, "seed": seed}
    if not len(scores):
        return Significance(np.ones(0), np.zeros(0, bool), {**base, "picks": 0, "kept": 0, "dropped": 0})
    t0 = time.perf_counter()
    radii = radii_for_sizes(counts_vox)
    null = null_scores(image, background, radii, bg_mean, bg_sd, polarity, n_null, seed)
    p = p_values(scores, radii, null)
    keep = bh_keep(p, fdr)
    sizes = [len(s) for s in null.scores]
    # how far the null is from the white-noise law N(0, 1) the score would follow without correlation
    sds = [float(np.std(s)) for s in null.scores if len(s) >= MIN_NULL]
    report = {**base, "picks": int(len(scores)), "kept": int(keep.sum()), "dropped": int((~keep).sum()),
              "ball_radii_vox": [float(r) for r in null.radii], "null_sizes": sizes,
              "null_score_sd_range": [min(sds), max(sds)] if sds else None,
              "borrowed_radii": {str(k): v for k, v in null.borrowed.items()},
              "picks_without_null": int(sum(len(null.for_radius(r)) == 0 for r in radii)),
              "seconds": round(time.perf_counter() - t0, 2)}
    return Significance(p, keep, report)
