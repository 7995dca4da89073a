"""Picks closer than the smallest particle's diameter are one particle: merge them.

Two particles cannot overlap, so their centres are at least the sum of their radii apart, at
least the smallest particle's diameter of the size prior. Picks closer than that are pieces of
one particle: a watershed that cut a large particle into several basins (its peaks are spaced
by that diameter, but a basin's centroid is not its peak), specks of a faint particle's
particle-class voxels broken apart by noise, the unreached components the watershed fills.
Counted one to one (evaluate.py, each particle picked at most once, as it enters an average
once), such duplicates are false picks; the paper's rule does not see them.

Rule: the picks in play, best score first; each takes the picks still free within the distance
of its centre (no chains: a pick joins the first better pick that reaches it, and a taken pick
takes none). The group becomes one instance: its voxels, the voxel-weighted mean of the
members' centres (the union's centroid), bounding box, voxel-weighted contrast and the score
of that (contrast x sqrt(voxels), localize/score.py); the instance label image maps the members' ids
to it (centroids.relabel). Units: voxels of the grid the picks are on; axis order (z, y, x).

Why by hand: the greedy grouping is a few lines over a KD-tree (scipy); no library merges
instance tables.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def close_groups(centres: np.ndarray, score: np.ndarray, distance_vox: float) -> list[np.ndarray]:
    """Groups (row indices, the best-scored first) of picks within ``distance_vox`` of a better pick's
    centre; only groups of two or more. ``centres`` (n, 3) voxels, ``score`` (n,)."""
    centres = np.asarray(centres, float).reshape(-1, 3)
    if len(centres) < 2 or distance_vox <= 0:
        return []
    tree = cKDTree(centres)
    taken = np.zeros(len(centres), bool)
    groups = []
    for i in np.argsort(-np.asarray(score, float), kind="stable"):
        if taken[i]:
            continue
        taken[i] = True
        near = [j for j in tree.query_ball_point(centres[i], distance_vox) if not taken[j]]
        if near:
            taken[near] = True
            groups.append(np.array([i, *sorted(near)]))
    return groups


def merge_duplicates(table, keep: np.ndarray, score: np.ndarray, contrast: np.ndarray, distance_vox: float,
                     merged_into: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Merge the kept instances of ``table`` (centroids.InstanceTable) closer than ``distance_vox``, in
    place (``keep``, ``score``, ``contrast`` per row; rule: module docstring). ``merged_into``: an earlier
    merge's map (per row: the row it joined, -1: none; localize/shells.py), followed through. Returns the
    map with these merges and the report."""
    merged_into = np.full(len(keep), -1) if merged_into is None else np.asarray(merged_into).copy()
    rows = np.flatnonzero(keep)
    groups = close_groups(table.centroids[rows], score[rows], distance_vox)
    for g in groups:
        r = rows[g]
        head, others = r[0], r[1:]
        n = table.counts[r].astype(float)
        table.centroids[head] = (table.centroids[r] * n[:, None]).sum(axis=0) / n.sum()
        contrast[head] = float(np.sum(contrast[r] * n) / n.sum())
        table.counts[head] = int(n.sum())
        score[head] = contrast[head] * np.sqrt(n.sum())
        table.bbox_min[head] = table.bbox_min[r].min(axis=0)
        table.bbox_max[head] = table.bbox_max[r].max(axis=0)
        keep[others] = False
        merged_into[np.isin(merged_into, others)] = head  # what had joined a member joins the head
        merged_into[others] = head
    report = {"distance_vox": round(float(distance_vox), 2), "groups": len(groups),
              "picks_merged": int(sum(len(g) for g in groups)),
              "rule": "picks closer than the smallest particle's diameter are one particle (best score first)"}
    return merged_into, report
