"""Per-instance voxel counts, centroids and bounding boxes, reduced over chunks.

Each block returns, for the labels it holds, counts, coordinate sums and min/max coordinates
(bincounts over the block's id range: no sort, no per-label Python loop); the driver adds them up
per global id.
Exact against scipy.ndimage.center_of_mass; dask_image's version loops over labels in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pandas as pd

from ..progress import compute
from ..chunking import block_ids, block_starts


def _block_stats(block: np.ndarray, origin: np.ndarray):
    """Ids, voxel counts, coordinate sums (float64, exact integers), and min/max coordinates of the
    labels in a block: bincounts over the block's id range (ids - smallest id), no sort. A block
    whose ids are spread far wider than its voxels are many takes the sorting path instead."""
    flat = np.asarray(block).ravel()
    nz = np.flatnonzero(flat)
    if len(nz) == 0:
        return None
    ids = flat[nz]
    lo = int(ids.min())
    span = int(ids.max()) - lo + 1
    if span > 8 * len(nz) + (1 << 20):
        return _block_stats_sorted(block, origin)
    rel = (ids - lo).astype(np.intp)
    counts = np.bincount(rel, minlength=span)
    present = np.flatnonzero(counts)
    coords = np.unravel_index(nz, np.shape(block))
    origin = np.asarray(origin, np.int64)
    sums = np.stack([np.bincount(rel, weights=c, minlength=span)[present] for c in coords], axis=1) + \
        counts[present, None] * origin
    mins = np.full((span, 3), np.iinfo(np.int64).max)
    maxs = np.full((span, 3), -1, dtype=np.int64)
    for a, c in enumerate(coords):
        np.minimum.at(mins[:, a], rel, c)
        np.maximum.at(maxs[:, a], rel, c)
    return (present + lo).astype(np.int64), counts[present], sums, mins[present] + origin, maxs[present] + origin


def _block_stats_sorted(block: np.ndarray, origin: np.ndarray):
    """_block_stats by sorting the voxels by id (sums as int64)."""
    nz = np.nonzero(block)
    if len(nz[0]) == 0:
        return None
    ids = block[nz]
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    coords = np.stack(nz, axis=1)[order].astype(np.int64) + origin
    uniq, start = np.unique(ids, return_index=True)
    counts = np.diff(np.append(start, len(ids)))
    sums = np.add.reduceat(coords, start, axis=0)
    mins = np.minimum.reduceat(coords, start, axis=0)
    maxs = np.maximum.reduceat(coords, start, axis=0)
    return uniq.astype(np.int64), counts, sums, mins, maxs


@dataclass
class InstanceTable:
    """Instances 1..N: voxel counts, centroids (z, y, x voxels, float) and inclusive bounding boxes."""

    ids: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> "InstanceTable":
        return InstanceTable(self.ids[keep], self.counts[keep], self.centroids[keep], self.bbox_min[keep], self.bbox_max[keep])

    def to_frame(self) -> pd.DataFrame:
        c, lo, hi = self.centroids, self.bbox_min, self.bbox_max
        return pd.DataFrame({"id": self.ids, "z": c[:, 0], "y": c[:, 1], "x": c[:, 2], "size_vox": self.counts,
                             "zmin": lo[:, 0], "ymin": lo[:, 1], "xmin": lo[:, 2],
                             "zmax": hi[:, 0], "ymax": hi[:, 1], "xmax": hi[:, 2]})


def instance_table(labels: da.Array, n_labels: int | None = None) -> InstanceTable:
    """Counts, centroids and bounding boxes of every nonzero label of a chunked label array."""
    starts = block_starts(labels.chunks)
    blocks = labels.to_delayed()
    ids = block_ids(labels.chunks)
    parts = compute(*[dask.delayed(_block_stats)(blocks[b], np.array([starts[a][b[a]] for a in range(3)]))
                      for b in ids], label="centroids: per-block sums")
    parts = [p for p in parts if p is not None]
    if not parts:
        e = np.zeros((0, 3))
        return InstanceTable(np.zeros(0, np.int64), np.zeros(0, np.int64), e, e.astype(np.int64), e.astype(np.int64))
    gid = np.concatenate([p[0] for p in parts])
    size = int(gid.max()) + 1 if n_labels is None else int(n_labels) + 1
    counts = np.bincount(gid, weights=np.concatenate([p[1] for p in parts]), minlength=size)
    sums = np.stack([np.bincount(gid, weights=np.concatenate([p[2][:, a] for p in parts]), minlength=size) for a in range(3)], axis=1)
    mins = np.full((size, 3), np.iinfo(np.int64).max)
    maxs = np.full((size, 3), -1, dtype=np.int64)
    np.minimum.at(mins, gid, np.concatenate([p[3] for p in parts]))
    np.maximum.at(maxs, gid, np.concatenate([p[4] for p in parts]))
    present = np.nonzero(counts > 0)[0]
    present = present[present > 0]
    cnt = counts[present].astype(np.int64)
    return InstanceTable(present, cnt, sums[present] / cnt[:, None], mins[present], maxs[present])


def size_filter(table: InstanceTable, min_size: int = 0, max_size: int | None = None) -> tuple[InstanceTable, np.ndarray | None]:
    """Keep instances with min_size <= voxels <= max_size; also return an id lookup (None if all kept)
    that maps kept ids to consecutive 1..M and dropped ones to 0."""
    return relabel(table, in_size_range(table.counts, min_size, max_size))


def in_size_range(counts: np.ndarray, min_size: int = 0, max_size: int | None = None) -> np.ndarray:
    """Boolean per instance: min_size <= voxels <= max_size (no upper bound when None)."""
    keep = np.asarray(counts) >= min_size
    if max_size is not None:
        keep &= np.asarray(counts) <= max_size
    return keep


def merge_rows(table: InstanceTable, keep: np.ndarray, score: np.ndarray, contrast: np.ndarray,
               merged_into: np.ndarray, rows: np.ndarray, head: int, centre: np.ndarray | None = None) -> None:
    """Merge instances ``rows`` (rows of ``table``, ``head`` among them) into ``head``, in place: the head takes
    their voxels (count, bounding box), their voxel-weighted contrast and its score (contrast x sqrt(voxels),
    localize/score.py), and ``centre`` or, without one, the voxel-weighted mean of their centroids (the
    union's centroid); the others leave ``keep`` and join the head in ``merged_into`` (per row: the row it
    joined, -1: none), as does whatever had joined them. The shells' and the close picks' merges (localize/)."""
    others = rows[rows != head]
    n = table.counts[rows].astype(float)
    table.centroids[head] = (table.centroids[rows] * n[:, None]).sum(axis=0) / n.sum() if centre is None else centre
    contrast[head] = float(np.sum(contrast[rows] * n) / n.sum())
    table.counts[head] = int(n.sum())
    score[head] = contrast[head] * np.sqrt(n.sum())
    table.bbox_min[head] = table.bbox_min[rows].min(axis=0)
    table.bbox_max[head] = table.bbox_max[rows].max(axis=0)
    keep[others] = False
    merged_into[np.isin(merged_into, others)] = head
    merged_into[others] = head


def relabel(table: InstanceTable, keep: np.ndarray, merged_into: np.ndarray | None = None) -> tuple[InstanceTable, np.ndarray | None]:
    """Keep the instances where ``keep`` is True, renumbered 1..M in their order; the id lookup
    (None if all are kept and none merged) maps old ids to the new ones and dropped ids to 0.
    ``merged_into`` (per instance: the row of the kept instance it joins, or -1) maps a dropped
    instance's id to that instance's new id instead (localize/shells.py)."""
    keep = np.asarray(keep, bool)
    merged = np.zeros(len(keep), bool) if merged_into is None else np.asarray(merged_into) >= 0
    if keep.all():
        return table, None
    size = int(table.ids.max()) + 1 if len(table) else 1
    lut = np.zeros(size, np.uint32)
    lut[table.ids[keep]] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
    if merged.any():
        lut[table.ids[merged]] = lut[table.ids[np.asarray(merged_into)[merged]]]
    kept = table.subset(keep)
    kept.ids = np.arange(1, len(kept) + 1)
    return kept, lut
