"""Subvolumes (boxes) around picks, read from the OME-Zarr image batch by batch on the cluster.

Picks are grouped by the image chunk their centre lies in and split into batches of at most
``max_picks``; one task per batch reads the bounding region of its boxes (at most a chunk plus
half a box per face) straight from the zarr store, cuts the boxes and hands them to a function
that reduces them to something small (descriptors, class sums, a slice of an MRC stack) before
returning. The tomogram is never in memory; a task holds one region and one batch of boxes.

Boxes: edge ``box`` voxels, the pick's centre rounded to the nearest voxel at index ``box // 2``.
Near a face the part of the box outside the tomogram is padded with the mean of the part inside
(``edge="pad"``, the default; ``outside_fraction`` says how much) or the pick is skipped
(``edge="skip"``: any part outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dask
import numpy as np

from ..errors import PicketError

EDGE_MODES = ("pad", "skip")


@dataclass(frozen=True)
class Batch:
    """Rows of the picks table read together, and the region [lo, hi) of the image they need."""

    rows: np.ndarray
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]


def level0_store(image: str | Path) -> str:
    """Path of the full-resolution array of an OME-Zarr image (what the tasks open)."""
    import zarr

    group = zarr.open_group(str(image), mode="r")
    attrs = dict(group.attrs)
    ms = attrs.get("ome", attrs).get("multiscales")
    return str(Path(image) / ms[0]["datasets"][0]["path"])


def box_starts(centres_zyx: np.ndarray, box: int) -> np.ndarray:
    """First voxel (z, y, x) of each pick's box."""
    return np.rint(np.asarray(centres_zyx, float)).astype(np.int64) - box // 2


def outside_fraction(centres_zyx: np.ndarray, box: int, shape) -> np.ndarray:
    """Fraction of each pick's box that lies outside the tomogram (0 inside, up to 7/8 at a corner)."""
    lo = box_starts(centres_zyx, box)
    inside = np.ones(len(lo))
    for a in range(3):
        n_in = np.clip(np.minimum(lo[:, a] + box, shape[a]) - np.maximum(lo[:, a], 0), 0, box)
        inside *= n_in / box
    return 1.0 - inside


def check_picks(centres_zyx: np.ndarray, shape, box: int, source: object) -> None:
    """Refuse no picks, picks outside the image and a box larger than the tomogram (one line each)."""
    if len(centres_zyx) == 0:
        raise PicketError(source, "has no picks", "run a workflow that finds particles first (or lower its thresholds)")
    c = np.asarray(centres_zyx, float)
    if not np.isfinite(c).all():
        raise PicketError(source, "has picks with missing or non-finite x, y, z", "give every pick voxel coordinates")
    out = np.any((c < -0.5) | (c > np.asarray(shape) - 0.5), axis=1)
    if out.any():
        i = int(np.argmax(out))
        raise PicketError(source, f"{int(out.sum())} pick(s) lie outside the image {tuple(int(s) for s in shape)} (z, y, x), "
                          f"e.g. x={c[i, 2]:.1f} y={c[i, 1]:.1f} z={c[i, 0]:.1f}",
                          "give picks of this tomogram, in voxels (x, y, z columns)")
    if box > min(shape):
        raise PicketError(f"box {box} voxels", f"is larger than the tomogram {tuple(int(s) for s in shape)}",
                          "give a smaller --box-A")
    if box < 4:
        raise PicketError(f"box {box} voxels", "is too small to describe a particle", "give a --box-A of at least 4 voxels")


def plan_batches(centres_zyx: np.ndarray, box: int, shape, chunks, max_picks: int = 128) -> list[Batch]:
    """Batches of picks sharing an image chunk (by centre), each with its clipped read region."""
    c = np.rint(np.asarray(centres_zyx, float)).astype(np.int64)
    chunk = np.asarray(chunks, np.int64)
    key = c // chunk
    order = np.lexsort((c[:, 2], c[:, 1], c[:, 0], key[:, 2], key[:, 1], key[:, 0]))
    starts = box_starts(c, box)
    batches = []
    i = 0
    while i < len(order):
        j = i
        k0 = key[order[i]]
        while j < len(order) and j - i < max_picks and np.array_equal(key[order[j]], k0):
            j += 1
        rows = order[i:j]
        lo = np.maximum(starts[rows].min(axis=0), 0)
        hi = np.minimum(starts[rows].max(axis=0) + box, shape)
        batches.append(Batch(rows, tuple(int(v) for v in lo), tuple(int(v) for v in hi)))
        i = j
    return batches


def cut_boxes(region: np.ndarray, region_lo, centres_zyx: np.ndarray, box: int, shape) -> np.ndarray:
    """(n, box, box, box) float32 boxes from a region starting at ``region_lo``; outside parts padded."""
    starts = box_starts(centres_zyx, box)
    out = np.empty((len(starts), box, box, box), np.float32)
    shape = np.asarray(shape)
    rlo = np.asarray(region_lo)
    for i, s in enumerate(starts):
        lo = np.maximum(s, 0)
        hi = np.minimum(s + box, shape)
        src = region[tuple(slice(a - r, b - r) for a, b, r in zip(lo, hi, rlo))]
        if np.array_equal(lo, s) and np.array_equal(hi, s + box):
            out[i] = src
            continue
        out[i] = src.mean() if src.size else 0.0
        out[i][tuple(slice(a - b0, b - b0) for a, b, b0 in zip(lo, hi, s))] = src
    return out


def _read_and_reduce(store: str, batch: Batch, centres: np.ndarray, box: int, shape, reduce: Callable, args: tuple):
    import zarr

    arr = zarr.open_array(store, mode="r")
    region = np.asarray(arr[batch.lo[0]:batch.hi[0], batch.lo[1]:batch.hi[1], batch.lo[2]:batch.hi[2]], np.float32)
    boxes = cut_boxes(region, batch.lo, centres, box, shape)
    del region
    return reduce(boxes, batch.rows, *args)


def map_batches(image: str | Path, centres_zyx: np.ndarray, box: int, shape, chunks, reduce: Callable,
                consume: Callable, args: tuple = (), label: str = "", max_picks: int = 128) -> int:
    """For each batch, ``reduce(boxes, rows, *args)`` on a worker, then ``consume(result)`` here as
    results arrive (nothing else is kept). Returns the number of batches."""
    from ..progress import compute_each

    store = level0_store(image)
    centres_zyx = np.asarray(centres_zyx, float)
    batches = plan_batches(centres_zyx, box, shape, chunks, max_picks)
    tasks = [dask.delayed(_read_and_reduce, pure=True)(store, b, centres_zyx[b.rows], box, tuple(shape), reduce, args)
             for b in batches]
    compute_each(tasks, lambda i, r: consume(r), label=label, batch=4)
    return len(batches)


def default_box(sizes_vox: np.ndarray | None, voxel_size: float, diameter_A=None, shape=None) -> int:
    """Box edge in voxels: twice the particle diameter, even, at least 16 voxels, at most the
    tomogram's smallest dimension. The diameter is that of a ball of the 90th-percentile instance
    volume (the larger particles picked), kept inside the run's particle-size prior (``diameter_A``:
    (min, max) Angstrom, or one value) when there is one; without sizes, the prior's largest
    value, else 250 A (a large complex: a ribosome is ~250-300 A across)."""
    prior = None if diameter_A is None else np.atleast_1d(np.asarray(diameter_A, float)) / voxel_size
    s = None if sizes_vox is None else np.asarray(sizes_vox, float)
    if s is not None and np.any(s > 0):
        d = (6.0 * np.percentile(s[s > 0], 90) / np.pi) ** (1 / 3)
        if prior is not None:
            d = float(np.clip(d, prior.min(), prior.max()))
    else:
        d = float(prior.max()) if prior is not None else 250.0 / voxel_size
    b = int(2 * np.ceil(d))
    b = max(16, b + b % 2)
    if shape is not None:
        b = min(b, int(min(shape)) - int(min(shape)) % 2)
    return b
