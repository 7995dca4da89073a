"""Context that is not particles, found and masked before instances: gold (extreme density) and
membranes (sheet-like structures, localize/membranes.py).

Gold fiducials (and other heavy-metal or very dense objects) are an order of magnitude denser
than protein: after the method's blur they stand out of the ice by tens of noise SDs, while the
densest macromolecules (RNA-rich ribosomes) reach a few. A voxel is *extreme* when its blurred
density is further from the ice median than ``EXTREME_FACTOR`` x the 99th percentile of the
same distance (both measured inside the sample; median and percentiles from a strided subsample);
the extreme voxels are grown by ``margin_A`` (the bead's blurred rim and the back-projection
streaks around it) with a ball, chunk by chunk with a halo of the same size.

Membranes and other sheets are found by the planarity of the gradient structure tensor
(localize/membranes.py). The mask is written as its own label image ``<image>/labels/context``
(uint8: 0 free, 1 extreme density, 2 membrane; napari shows it); every workflow's particle mask
excludes it, and instances whose centre lies within the smallest particle's radius of it are
dropped (``centres_near``: the pieces of a membrane that the mask cut off).

Why by hand: scikit-image/dask-image give the filters (blur, dilation) used here, not the rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from ..chunking import stored, value_counts
from ..config import EXTREME_FACTOR, EXTREME_MARGIN_A
from .morphology import grown

EXTREME = 1
MEMBRANE = 2
MAX_FRACTION = 0.3  # a mask larger than this is not gold and membranes: it is not applied
CONTEXT_COLORS = [{"label-value": 0, "rgba": [0, 0, 0, 0]}, {"label-value": EXTREME, "rgba": [0, 160, 255, 200]},
                  {"label-value": MEMBRANE, "rgba": [160, 80, 255, 160]}]


@dataclass
class Context:
    """The context mask (lazy uint8, z, y, x) and what was found."""

    labels: da.Array
    report: dict = field(default_factory=dict)


def robust_levels(blurred: da.Array, inside: da.Array, stride: int = 4) -> tuple[float, float]:
    """Median of the blurred density inside the sample and the 99th percentile of |density - median|
    (from every ``stride``-th voxel along each axis)."""
    from ..progress import compute

    sub = (slice(None, None, stride),) * 3
    vals, keep = compute(blurred[sub], inside[sub], label="context: density levels")
    v = np.asarray(vals, np.float64)[np.asarray(keep, bool)]
    if v.size == 0:
        v = np.asarray(vals, np.float64).ravel()
    med = float(np.median(v))
    return med, float(np.percentile(np.abs(v - med), 99.0))


def extreme_density(image: da.Array, voxel_size_A: float, inside: da.Array, sigma_vox: float = 2.0,
                    margin_A: float = EXTREME_MARGIN_A) -> Context:
    """Mask of extreme-density objects (gold) grown by ``margin_A``; ``inside``: the sample (lamella)."""
    from dask_image.ndfilters import gaussian_filter

    blurred = gaussian_filter(image.astype(np.float32), sigma=sigma_vox, mode="reflect")
    med, q = robust_levels(blurred, inside)
    thr = EXTREME_FACTOR * q
    radius = int(np.ceil(margin_A / voxel_size_A))
    core = (abs(blurred - med) > thr) & inside.rechunk(blurred.chunks)
    labels = grown(core, radius).astype(np.uint8) * np.uint8(EXTREME)
    return Context(labels, {"extreme_density": {"median": med, "q99_abs_dev": q, "threshold_abs_dev": thr,
                                                "margin_A": margin_A, "rule": f"|blurred - median| > {EXTREME_FACTOR} x "
                                                "the 99th percentile of |blurred - median| inside the sample"}})


def detect_context(image_path, lamella, voxel_size: tuple[float, float, float], sigma_vox: float = 2.0,
                   diameter_A: tuple[float, float] = (60.0, 400.0), no_data: da.Array | None = None) -> dict:
    """Find the context of a converted tomogram and write ``<image>/labels/context``; return the report
    (rules, levels, masked voxels and their share of the box, number of masked objects).
    ``diameter_A``: the particle-size prior (min, max), which tells membranes from particles.
    ``no_data``: boolean (z, y, x) of the voxels step 1 left unassigned for want of data
    (segment/nodata.py): left out of the sample the levels are measured in (a constant fill would
    pull the median and spreads that the gold and membrane thresholds rest on)."""
    from ..io.atomic import remove
    from ..io.omezarr import open_image
    from .membranes import bin_factor, binned

    image, _, _ = open_image(image_path)
    vs = float(np.max(voxel_size))
    f = bin_factor(vs)  # gold and membranes need no finer voxels than ~20 A: 8x fewer voxels at 10 A
    scratch = Path(image_path) / f".context-{uuid.uuid4().hex[:8]}"
    try:
        # the binned tomogram is read by the gold levels and again when the mask is formed: stored once
        small = stored(binned(image, f), str(scratch / "binned"), label="context: binned tomogram")
        inside_small = lamella.mask(small.chunks, extract=True, binning=f)
        if no_data is not None:  # a binned voxel with any no-data voxel in its cube is not sample
            nd = da.coarsen(np.any, no_data, {0: f, 1: f, 2: f}, trim_excess=True) if f > 1 else no_data
            inside_small = inside_small & ~nd.rechunk(small.chunks)  # both trimmed to whole f^3 cubes
            # the fill at the sample's median for the membranes' gradients: a fill far from the data's level is a
            # planar step that the planarity calls a membrane and grows into the sample (padded-offset variant:
            # membrane voxels 3.3x those of the same tomogram filled at its mean)
            level = robust_levels(small, inside_small)[0]
            image = da.where(no_data.rechunk(image.chunks), np.float32(level), image.astype(np.float32))
        return _detect(image_path, image, small, inside_small, f, vs, voxel_size, diameter_A, sigma_vox, scratch)
    finally:
        remove(scratch)


def _detect(image_path, image, small, inside_small, f, vs, voxel_size, diameter_A, sigma_vox, scratch: Path) -> dict:
    from ..io.omezarr import open_labels, write_labels
    from ..progress import compute
    from ..provenance import environment
    from .components import connected_components_chunked
    from .membranes import membrane_mask, upsample

    gold = extreme_density(small, vs * f, inside_small, sigma_vox / f)
    membranes, mrep = membrane_mask(image, vs, inside_small, f, min_extent_A=diameter_A[1], min_diameter_A=diameter_A[0],
                                    scratch=str(scratch / "planarity"))
    membranes = da.pad(membranes, [(0, s - m) for s, m in zip(small.shape, membranes.shape)])
    small_labels = da.where(gold.labels > 0, np.uint8(EXTREME), da.where(membranes.rechunk(small.chunks), np.uint8(MEMBRANE), np.uint8(0)))
    # formed once on the binned grid, in chunks of the image's // f: each full-resolution chunk of the
    # written mask is then one stored binned chunk repeated (no rechunk, nothing computed twice)
    aligned = tuple(max(1, min(s, int(max(c)) // f)) for s, c in zip(small.shape, image.chunks))
    small_labels = stored(small_labels.astype(np.uint8).rechunk(aligned), str(scratch / "labels"),
                          label="context: gold and membranes", fast_codec=True)
    labels = upsample(small_labels, f, image.shape, image.chunks)
    report = {**gold.report, "binning": f, "membranes": mrep}
    meta = {"step": "context", "labels": {"0": "free", str(EXTREME): "extreme density (gold)", str(MEMBRANE): "membrane"},
            **report, **environment()}
    write_labels(image_path, "context", labels.astype(np.uint8), voxel_size, meta, colors=CONTEXT_COLORS)
    written, _ = open_labels(image_path, "context")
    counts = np.asarray(compute(value_counts(written, 3), label="context: counting")[0])
    n_vox = int(counts[1:].sum())
    # objects on every f-th voxel: the stored mask is the binned one repeated f times per axis, so its
    # face-connected components are the binned mask's (f^3 fewer voxels to label, same count)
    every_f = (slice(None, None, f),) * 3
    n_obj = connected_components_chunked(written[every_f] > 0)[1] if n_vox else 0
    frac = n_vox / float(np.prod(image.shape))
    report.update(masked_voxels=n_vox, masked_fraction=round(frac, 6), gold_voxels=int(counts[EXTREME]),
                  membrane_voxels=int(counts[MEMBRANE]), objects=int(n_obj), used=True)
    if frac > MAX_FRACTION:  # not gold or membranes: masking it would remove the sample itself
        report.update(used=False, warning=f"the context mask covers {frac:.0%} of the volume, more than gold and membranes "
                      "could: not applied (--context off skips the search)")
    _set_report(image_path, report)
    return report


def _set_report(image_path, report: dict) -> None:
    """Add the outcome (counts, used) to the context label image's metadata."""
    import zarr

    g = zarr.open_group(str(Path(image_path) / "labels" / "context"), mode="r+")
    meta = dict(g.attrs).get("picket_dask", {})
    g.attrs["picket_dask"] = {**meta, **report}


def context_mask(image_path, shape, chunks) -> tuple[da.Array | None, str]:
    """The stored context mask (True = not a particle) if one was found and applied, else None; and why."""
    from ..io.omezarr import open_labels

    if not (Path(image_path) / "labels" / "context").exists():
        return None, "no context labels"
    labels, meta = open_labels(image_path, "context")
    if tuple(labels.shape) != tuple(shape) or not meta.get("used", True):
        return None, meta.get("warning", "context labels do not match this image")
    return labels.rechunk(chunks) > 0, f"{meta.get('masked_voxels', '?')} voxels masked ({meta.get('objects', '?')} objects)"


def centres_near(centroids_zyx: np.ndarray, context: da.Array, radius_vox: int) -> np.ndarray:
    """(N,) bool: which centroids (z, y, x voxels) lie within ``radius_vox`` of the ``context`` mask
    (True = not a particle). Masking cuts a membrane's particle-class voxels at the mask's edge; the
    pieces left outside have their centres right at the edge, while a particle's centre lies at least
    its radius from anything it touches: with the smallest particle's radius, the pieces go and the
    particles next to a membrane or bead stay. Only the ball around each centre is looked at, per chunk
    with a halo (morphology.points_near): the same answer as growing the whole mask, without doing it."""
    from .morphology import points_near

    if len(centroids_zyx) == 0:
        return np.zeros(0, bool)
    idx = np.clip(np.round(np.asarray(centroids_zyx, float)).astype(np.int64), 0, np.array(context.shape) - 1)
    return points_near(context, idx, radius_vox)  # the mask grown per chunk, read only at the centres
