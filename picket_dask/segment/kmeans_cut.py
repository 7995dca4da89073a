"""Where along a 2-means axis to cut: the k-means boundary moved towards the smaller cluster.

2-means assumes two equal, equally spread clusters; on a sparse sample it halves the ice's own noise
cloud. These rules place the boundary on the sample's projections onto the k-means axis instead (the
decision values, > 0: cluster 1), and return an offset along that axis (clustering.fit applies it):

- ``mixture_cut``: where a 1-D two-Gaussian mixture of the projections favours the smaller side;
- ``mirror_cut``: where the particle side holds twice the noise mirrored about the mode (used by
  mixture_cut when its particle component is the noise cloud's shoulders).

Why by hand: scikit-learn has the mixture (fitted here by gmm_em's one-feature EM, to rounding) but no
rule for where to cut a projection; the mirror rule is a few lines of numpy on a histogram.
"""

from __future__ import annotations

import numpy as np

MIN_SEPARATION = 1.0  # mixture_cut: particle mean at least this many noise SDs from the noise mean, else mirror_cut
MIRROR_BINS = 400  # histogram bins over the central 99.9 % of the projections
MIRROR_SMOOTH_BINS = 2.0  # Gaussian smoothing of the histogram, bins


def towards_smaller(proj: np.ndarray) -> tuple[int, np.ndarray]:
    """(the smaller k-means cluster's id, the decision values ``proj`` (> 0: cluster 1) signed so that > 0 is
    that cluster): the side both cuts move the boundary towards."""
    small = int(np.mean(proj > 0) < 0.5)
    return small, (proj if small == 1 else -proj)


def mixture_cut(proj: np.ndarray, seed: int = 42, threads: int = 1) -> tuple[float, dict]:
    """Where along a 2-means axis to cut: where a 1-D two-Gaussian mixture favours the smaller side.

    ``proj`` (n,): the sample's k-means decision values (> 0: cluster 1). 2-means assumes equal,
    equally spread clusters: on a unimodal noise cloud with a thin tail of particles (a sparse
    sample) it cuts the cloud near its middle, and on a crowded one it still gives the particles
    the noise beside them. A two-Gaussian mixture of the projections (1-D, scikit-learn's
    GaussianMixture, fitted by gmm_em) lets the two sides differ in size and spread: the boundary
    moves to where the mixture's posterior favours the particle side, when that point lies inside
    the smaller k-means cluster; else (the mixture gives the particle side more than k-means did)
    the k-means boundary stands. The cut moves continuously with the data (an earlier rule moved it
    only when the mixture kept less than half of the cluster: on crowded samples that switch sat
    near its edge). When the mixture's particle component lies less than MIN_SEPARATION of the noise
    component's SDs from it, the mixture has fitted the noise cloud's wide shoulders as a second
    component (at the dev set's SNR on sparse held-out scenes: 0.46-0.51 SD, 30-44 % of the sample,
    F1 0.06-0.14 from 15-38x too many picks; where it works, 1.26-2.21 SD), and ``mirror_cut`` places
    the cut instead. Returns the offset t (decision units, >= 0, towards the smaller cluster: the
    new boundary is at proj = t if cluster 1 is smaller, else -t) and a report. ``threads``: the 1-D
    fit's passes split over that many threads (gmm_em).
    """
    from .gmm_em import fit_gaussian_mixture, posterior

    p = np.asarray(proj, np.float64)
    small, s = towards_smaller(p)
    # on every row: fitted on the coarse rows instead, the particle tail (3-4 % of a sparse sample)
    # moved the cut enough for 6-9 % more particle voxels and 12-21 % more picks (dev set, rows v7)
    # GaussianMixture(2, random_state=seed).fit(s[:, None]) to rounding (gmm_em's one-feature EM);
    # on a copy: the k-means initialisation centres its input in place and restores it
    g = fit_gaussian_mixture(s[:, None].copy(), 2, seed, threads=threads)
    means = g["means"].ravel()
    part = int(np.argmax(means))
    sds = 1.0 / np.asarray(g["precisions_cholesky"], np.float64).ravel()
    separation = float((means[part] - means[1 - part]) / sds[1 - part])
    if separation < MIN_SEPARATION:  # the second component is the cloud's shoulders, not a particle tail
        t, report = mirror_cut(p)
        return t, {**report, "mixture_separation": round(separation, 3),
                   "cut": f"mirror boundary (the mixture's particle component lies {separation:.2f} noise SD from the "
                          f"noise, under {MIN_SEPARATION:g}: it models the noise's shoulders)"}
    grid = np.linspace(float(means[1 - part]), float(s.max()), 4001)
    hit = np.flatnonzero(posterior(g, grid[:, None])[:, part] >= 0.5)
    t = float(grid[hit[0]]) if len(hit) else 0.0
    kept = float(np.mean(s > t) / max(np.mean(s > 0), 1e-12))
    report = {"small_cluster": small, "kmeans_fraction": round(float(np.mean(s > 0)), 4),
              "mixture_fraction": round(float(np.mean(s > t)), 4), "mixture_share_of_cluster": round(kept, 4),
              "mixture_separation": round(separation, 3)}
    if t <= 0:
        return 0.0, {**report, "cut": "k-means boundary (the mixture calls the whole smaller cluster particles)"}
    return t, {**report, "cut": "mixture boundary (the mixture calls part of the smaller cluster noise)"}


def mirror_cut(proj: np.ndarray) -> tuple[float, dict]:
    """Where along a 2-means axis to cut: where the particle side holds twice what the noise would put there.

    ``proj`` (n,): the sample's k-means decision values (> 0: cluster 1). The ice's projections are a
    noise cloud, symmetric about its mode (a sum of many voxels' noise); particles add a tail on one
    side only. The noise's density on the particle side is therefore the mirror image, about the mode,
    of the density on the other side, and the particles' share at a point is the observed density's
    excess over that mirror: the cut is the first point past the mode where the excess is at least
    the mirror (a particle voxel at least as likely as a noise voxel: posterior 0.5, as mixture_cut's).
    No shape is assumed for the noise or the particles, and a unimodal cloud with no tail keeps
    (almost) nothing, where a two-Gaussian mixture fits its wide shoulders as a second component (at
    the dev set's SNR it called 12-18 % of a sparse sample particles; README). The cut stays inside the
    smaller k-means cluster (else the k-means boundary stands). Density: a histogram of MIRROR_BINS bins
    over the central 99.9 %, smoothed over MIRROR_SMOOTH_BINS bins. Returns (offset t >= 0 towards the
    smaller cluster, as mixture_cut's, and a report).
    """
    from scipy.ndimage import gaussian_filter1d

    p = np.asarray(proj, np.float64)
    small, s = towards_smaller(p)
    lo, hi = np.percentile(s, [0.05, 99.95])
    counts, edges = np.histogram(s, bins=MIRROR_BINS, range=(float(lo), float(hi)))
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = gaussian_filter1d(counts.astype(np.float64), MIRROR_SMOOTH_BINS)
    mode = float(centres[np.argmax(dens)])
    right = centres[centres > mode]
    observed = np.interp(right, centres, dens, left=0.0, right=0.0)
    mirror = np.interp(2 * mode - right, centres, dens, left=0.0, right=0.0)
    hit = np.flatnonzero((observed > 0) & (observed >= 2 * mirror))
    t = float(right[hit[0]]) if len(hit) else float(hi)
    report = {"small_cluster": small, "kmeans_fraction": round(float(np.mean(s > 0)), 4), "mode": round(mode, 6),
              "mirror_fraction": round(float(np.mean(s > max(t, 0.0))), 4)}
    if t <= 0:
        return 0.0, {**report, "cut": "k-means boundary (the excess over the mirrored noise starts inside the larger cluster)"}
    return t, {**report, "cut": "mirror boundary (past it the particle side holds twice the mirrored noise)"}
