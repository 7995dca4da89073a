"""Connected components (face connectivity) over chunks, identical to scipy.ndimage.label up to ids.

Same shape as dask_image.ndmeasure.label, without its per-face re-labelling: each block is
labelled once to count its labels and return its six boundary planes; the planes of touching
blocks give the equivalences, scipy.sparse.csgraph.connected_components joins them, and a final
lazy pass labels each block again, adds its offset and looks the global id up in one table.
Ids are consecutive 1..N, numbered by the first block (C order) that holds each component.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..progress import compute
from ..chunking import block_ids

STRUCTURE = ndi.generate_binary_structure(3, 1)  # faces only


def _label_faces(block: np.ndarray) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
    """Number of labels in a block and its low/high boundary planes of local labels, per axis."""
    lab, n = ndi.label(block, structure=STRUCTURE)
    lab = lab.astype(np.uint32, copy=False)
    lows = [np.take(lab, 0, axis=a).copy() for a in range(3)]
    highs = [np.take(lab, -1, axis=a).copy() for a in range(3)]
    return n, lows, highs


def _relabel(block: np.ndarray, offsets: np.ndarray, lut: np.ndarray, block_info=None) -> np.ndarray:
    bid = block_info[0]["chunk-location"]
    lab, _ = ndi.label(block, structure=STRUCTURE)
    lab = lab.astype(np.int64)
    lab[lab > 0] += offsets[bid]
    return lut[lab]


def label_equivalences(mask: da.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-block label offsets (block-grid shaped), the provisional->global lookup table, and N."""
    ids = block_ids(mask.chunks)
    blocks = mask.to_delayed()  # pass blocks, not the dask array, into delayed: no graph copies
    results = compute(*[dask.delayed(_label_faces)(blocks[b]) for b in ids], label="instances: labelling blocks")
    grid = tuple(len(c) for c in mask.chunks)
    counts = np.zeros(grid, np.int64)
    for b, (n, _, _) in zip(ids, results):
        counts[b] = n
    offsets = (np.cumsum(counts.ravel()) - counts.ravel()).reshape(grid)
    total = int(counts.sum())
    res = dict(zip(ids, results))
    src, dst = [], []
    for b in ids:
        for axis in range(3):
            nb = list(b)
            nb[axis] += 1
            nb = tuple(nb)
            if nb[axis] >= grid[axis]:
                continue
            hi = res[b][2][axis].astype(np.int64)
            lo = res[nb][1][axis].astype(np.int64)
            both = (hi > 0) & (lo > 0)
            if both.any():
                src.append(hi[both] + offsets[b])
                dst.append(lo[both] + offsets[nb])
    if src:
        s, d = np.concatenate(src), np.concatenate(dst)
        graph = coo_matrix((np.ones(len(s), np.int8), (s, d)), shape=(total + 1, total + 1))
        _, comp = connected_components(graph, directed=False)
    else:
        comp = np.arange(total + 1)
    # node 0 (background) is component 0; components are numbered by their smallest node
    return offsets, comp.astype(np.uint32), int(comp.max()) if total else 0


def connected_components_chunked(mask: da.Array) -> tuple[da.Array, int]:
    """Lazy uint32 instance labels (same chunks as ``mask``) and the number of instances."""
    offsets, lut, n = label_equivalences(mask)
    labels = mask.map_blocks(_relabel, offsets, lut, dtype=np.uint32, meta=np.empty((0, 0, 0), np.uint32))
    return labels, n
