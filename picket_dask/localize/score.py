"""A score per pick: how clearly its instance stands out of the ice around it.

The score of an instance is its detection signal-to-noise ratio: the mean tomogram density over
its voxels minus the mean of the background (semantic label 0 inside the sample), in units of
the background's standard deviation, times sqrt(voxels), with the sign that makes particles
positive (the mean of the instances decides whether particles are darker or brighter than the
ice, so it works for either contrast convention). It is the matched-filter statistic of a
uniform blob: specks of a few voxels and faint blobs score low, dense compact particles high.
The per-voxel ``contrast`` (without sqrt(voxels)) is reported beside it.

Sums per instance are reduced over chunks like the centroids (one pass over the labels and the
image); the background moments are two more chunked reductions. Units: tomogram density units
for means, noise SDs for contrast and score.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from ..chunking import block_ids
from ..progress import compute


def _block_sums(labels: np.ndarray, image: np.ndarray):
    nz = labels > 0
    if not nz.any():
        return None
    ids = labels[nz].astype(np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, np.bincount(inv, weights=image[nz].astype(np.float64), minlength=len(uniq))


@dataclass
class Scores:
    """Per-instance score and contrast (arrays aligned with the instance ids given) and the background moments."""

    score: np.ndarray
    contrast: np.ndarray
    background_mean: float
    background_sd: float
    polarity: int  # +1: particles brighter than the ice, -1: darker

    def summary(self) -> dict:
        return {"background_mean": self.background_mean, "background_sd": self.background_sd,
                "particles": "brighter than the ice" if self.polarity > 0 else "darker than the ice",
                "score": "(instance mean - background mean) / background SD x sqrt(voxels), particle polarity positive"}


def instance_means(labels: da.Array, image: da.Array, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over each instance ``ids`` (with voxel ``counts``) of chunked ``labels``."""
    image = image.rechunk(labels.chunks)
    lb, ib = labels.to_delayed(), image.to_delayed()
    parts = compute(*[dask.delayed(_block_sums)(lb[b], ib[b]) for b in block_ids(labels.chunks)],
                    label="scores: per-instance sums")
    size = int(max(ids.max() if len(ids) else 0, max((p[0].max() for p in parts if p is not None), default=0))) + 1
    sums = np.zeros(size)
    for p in parts:
        if p is not None:
            np.add.at(sums, p[0], p[1])
    return sums[ids] / np.maximum(counts, 1)


def background_moments(image: da.Array, background: da.Array) -> tuple[float, float]:
    """Mean and standard deviation of ``image`` where ``background`` is True (chunked sums)."""
    x = image.astype(np.float64)
    w = background.rechunk(image.chunks)
    n, s, s2 = compute(w.sum(), da.where(w, x, 0).sum(), da.where(w, x * x, 0).sum(), label="scores: background moments")
    n = max(int(n), 1)
    mean = float(s) / n
    return mean, float(np.sqrt(max(float(s2) / n - mean * mean, 1e-30)))


def score_instances(means: np.ndarray, counts: np.ndarray, bg_mean: float, bg_sd: float) -> Scores:
    """Scores of instances from their mean densities and voxel counts (see module docstring)."""
    means = np.asarray(means, float)
    polarity = 1 if len(means) == 0 or np.median(means) >= bg_mean else -1
    contrast = polarity * (means - bg_mean) / bg_sd
    return Scores(contrast * np.sqrt(np.asarray(counts, float)), contrast, bg_mean, bg_sd, polarity)
