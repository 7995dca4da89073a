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

``wide`` (``--merge-close wide``, not the default) gives each pair the larger of that distance and
the sum of the two instances' equivalent-sphere radii: the segmented part of a particle is at most
the particle, so its equivalent radius is at most the particle's and two particles' centres are at
least the sum apart. It merges what a large particle's basins leave 6-12 voxels apart (a
ribosome's two or three picks; dev set, gabor-gmm-ws: of the picks it merges, 283 lie in the same
true particle as the pick they join, 3 in another one, 51 join or are a pick on no annotated
particle). The paper's F1 counts every pick near a particle as true, so merging two true picks
lowers its precision ((a - 1) / (b - 1) < a / b); scored one to one it rises. Hence an option.

Why by hand: the greedy grouping is a few lines over a KD-tree (scipy); no library merges
instance tables.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .centroids import merge_rows
from .size_prior import equivalent_diameter_A


def close_groups(centres: np.ndarray, score: np.ndarray, distance_vox: float,
                 radii_vox: np.ndarray | None = None) -> list[np.ndarray]:
    """Groups (row indices, the best-scored first) of picks within ``distance_vox`` of a better pick's
    centre, or within the sum of the two ``radii_vox`` where larger; only groups of two or more.
    ``centres`` (n, 3) voxels, ``score`` (n,)."""
    centres = np.asarray(centres, float).reshape(-1, 3)
    if len(centres) < 2 or distance_vox <= 0:
        return []
    radii = None if radii_vox is None else np.asarray(radii_vox, float)
    reach = distance_vox if radii is None else max(distance_vox, 2 * float(radii.max()))
    tree = cKDTree(centres)
    taken = np.zeros(len(centres), bool)
    groups = []
    for i in np.argsort(-np.asarray(score, float), kind="stable"):
        if taken[i]:
            continue
        taken[i] = True
        near = [j for j in tree.query_ball_point(centres[i], reach) if not taken[j]]
        if radii is not None:
            near = [j for j in near if np.linalg.norm(centres[j] - centres[i]) < max(distance_vox, radii[i] + radii[j])]
        if near:
            taken[near] = True
            groups.append(np.array([i, *sorted(near)]))
    return groups


def merge_duplicates(table, keep: np.ndarray, score: np.ndarray, contrast: np.ndarray, distance_vox: float,
                     merged_into: np.ndarray | None = None, wide: bool = False) -> tuple[np.ndarray, dict]:
    """Merge the kept instances of ``table`` (centroids.InstanceTable) closer than ``distance_vox`` (``wide``:
    or than the sum of their equivalent radii), in place (``keep``, ``score``, ``contrast`` per row; rule:
    module docstring). ``merged_into``: an earlier merge's map (per row: the row it joined, -1: none;
    localize/shells.py), followed through. Returns the map with these merges and the report."""
    merged_into = np.full(len(keep), -1) if merged_into is None else np.asarray(merged_into).copy()
    rows = np.flatnonzero(keep)
    radii = equivalent_diameter_A(table.counts[rows], 1.0) / 2 if wide else None  # voxels
    groups = close_groups(table.centroids[rows], score[rows], distance_vox, radii)
    for g in groups:
        merge_rows(table, keep, score, contrast, merged_into, rows[g], rows[g[0]])  # the best-scored pick is the head
    report = {"distance_vox": round(float(distance_vox), 2), "groups": len(groups),
              "picks_merged": int(sum(len(g) for g in groups)),
              "rule": "picks closer than the smallest particle's diameter" + (" or the sum of their instances' equivalent "
                      "radii" if wide else "") + " are one particle (best score first)"}
    return merged_into, report
