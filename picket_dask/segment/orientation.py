"""Which cluster is particles: the reference's size rule, its inverse, or an automatic check.

The reference calls the larger cluster background. That fails when membranes, ice gradients or
gold make the smaller cluster; ``auto`` also looks at the shapes: in a central crop it labels
each cluster's connected components and measures how much of the cluster lies in compact,
particle-sized blobs (not touching the crop's faces, 20 to 50,000 voxels). The cluster with more
of its voxels in such blobs is particles; the confidence is the relative difference.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from .apply import BORDER

CROP = 96
BLOB_MIN, BLOB_MAX = 20, 50_000


def blob_fraction(mask: np.ndarray) -> float:
    """Fraction of ``mask`` voxels in particle-sized components that do not touch the crop faces."""
    lab, n = ndi.label(mask)
    if n == 0:
        return 0.0
    sizes = np.bincount(lab.ravel())
    touching = np.zeros(n + 1, bool)
    for axis in range(3):
        for idx in (0, -1):
            touching[np.unique(np.take(lab, idx, axis=axis))] = True
    ok = (sizes >= BLOB_MIN) & (sizes <= BLOB_MAX) & ~touching
    ok[0] = False
    return float(sizes[ok].sum() / max(1, mask.sum()))


def choose_orientation(raw: da.Array, counts: dict, mode: str = "size") -> dict:
    """Decide whether to swap the raw cluster ids so that 1 means particle; return the decision and why."""
    size_flip = counts["cluster1"] > counts["cluster0"]
    if mode == "size":
        return {"mode": mode, "flip": bool(size_flip), "particle_cluster_raw": int(not size_flip),
                "reason": "the smaller cluster is particles (the reference's rule)"}
    if mode == "invert":
        return {"mode": mode, "flip": bool(not size_flip), "particle_cluster_raw": int(size_flip),
                "reason": "inverted: the larger cluster is particles (user's choice)"}
    crop = tuple(slice(max(0, (s - CROP) // 2), max(0, (s - CROP) // 2) + min(s, CROP)) for s in raw.shape)
    block = np.asarray(raw[crop].compute())
    inner = block != BORDER
    frac = [blob_fraction((block == c) & inner) for c in (0, 1)]
    if max(frac) < 0.05:
        out = choose_orientation(raw, counts, "size")
        out.update(mode="auto", confidence=0.0, blob_fraction=frac,
                   reason="auto: neither cluster forms particle-sized blobs in the central crop; fell back to the size rule")
        return out
    particle = int(np.argmax(frac))
    conf = abs(frac[1] - frac[0]) / max(frac)
    return {"mode": "auto", "flip": particle == 0, "particle_cluster_raw": particle, "confidence": round(conf, 3),
            "blob_fraction": [round(f, 4) for f in frac],
            "agrees_with_size_rule": (particle == 0) == bool(size_flip),
            "reason": f"auto: cluster {particle} holds {frac[particle]:.0%} of its voxels in compact particle-sized blobs vs {frac[1 - particle]:.0%}"}
