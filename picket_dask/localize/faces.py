"""Instances at the volume's faces: the first labelled layer's artefacts, and instances cut by a face.

Why the first labelled layer is an artefact: the blur reflects the tomogram at its faces (scipy's and
PickET's 'reflect'), so near a face the kernel folds back onto the same voxels and averages fewer
independent ones: the blurred noise's standard deviation rises towards every face (on the dev set, the
same at the raw tomogram's faces as inside, 1.2-1.6x at the face after the 17 A blur). The
neighbourhoods of the first voxels that get a label (``HALF`` in from each face; the ones closer stay
unassigned, 255) are the noisiest the mixture sees, and it calls a sheet of them particle: picks in a
row along the faces, at the first labelled layer (dev set: 12-17 % of the defaults' picks, 19-42 %
of them near a particle, against 81-85 % inside; a 7 A held-out scene: 49 of 66). A particle cut by a
face still reaches its radius into the volume, so its centroid lies further in; an instance whose
centroid lies less than one voxel inside the first labelled layer is the artefact (``on_face_layer``).

Why by hand: a comparison of centroids with the volume's shape; no library rule.
Coordinates: voxels (z, y, x) of the working grid.
"""

from __future__ import annotations

import numpy as np

FACE_LAYER_DEPTH = 1.0  # voxels inside the first labelled layer an instance's centroid must reach


def on_face_layer(centroids_zyx: np.ndarray, shape, half: int) -> np.ndarray:
    """(n,) bool: centroids ((n, 3) voxels) less than FACE_LAYER_DEPTH inside the first labelled layer
    (``half`` voxels from a face: the neighbourhoods' unassigned border) of a volume of ``shape``, at any
    of its six faces."""
    c = np.asarray(centroids_zyx, float).reshape(-1, 3)
    last = np.asarray(shape, float) - 1.0
    inside = np.minimum(c, last - c).min(axis=1) if len(c) else np.zeros(0)
    return inside < half + FACE_LAYER_DEPTH


def touches_faces(bbox_min: np.ndarray, bbox_max: np.ndarray, shape, half: int) -> np.ndarray:
    """(n,) bool: instances whose bounding box ((n, 3) inclusive, voxels) reaches the first labelled voxel
    along y or x (``drop_face_touching``: cut particles and edge artefacts alike)."""
    lo, hi = np.asarray(bbox_min), np.asarray(bbox_max)
    return ((lo[:, 1] <= half) | (lo[:, 2] <= half) | (hi[:, 1] >= shape[1] - 1 - half) | (hi[:, 2] >= shape[2] - 1 - half))
