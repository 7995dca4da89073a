"""Step 2 end to end for one semantic segmentation: mask -> instances (cc | ws) -> table -> picks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dask.array as da
import numpy as np

from ..chunking import stored as scratch_stored
from ..chunking import value_counts
from ..config import DEFAULT_DIAMETER_A, REFERENCE_MIN_DISTANCE_VOX, LocalizeParams
from ..errors import PicketError
from ..io.atomic import remove
from ..io.omezarr import open_labels, write_labels
from ..progress import compute, note, warn
from ..provenance import Timings, environment
from ..segment.neighborhoods import HALF
from ..segment.lamella import Lamella
from .centroids import InstanceTable, in_size_range, instance_table, relabel
from .components import connected_components_chunked
from .context import centres_near, context_mask
from .duplicates import merge_duplicates
from .faces import on_face_layer, touches_faces
from .mask import particle_mask
from .score import instance_means_and_background, score_instances
from .shells import find_shells, merge_shells
from .significance import significance
from .size_prior import min_distance_vox, size_keep
from .watershed import fill_unreached, watershed_chunked

EXTRACTORS = ("cc", "ws")


@dataclass
class Instances:
    """Instances of one workflow: the table (ids 1..N), where the labels are, and what happened."""

    table: InstanceTable
    labels_path: Path | None
    report: dict = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    scores: np.ndarray | None = None  # per instance of ``table`` (localize/score.py), None when not scored
    contrast: np.ndarray | None = None


def peak_spacing_vox(params: LocalizeParams, voxel_size_A: float) -> int:
    """The watershed's min_distance: given, else the size prior's smallest diameter (two particles'
    centres are at least that far apart), else the reference's 15 voxels."""
    if params.min_distance_vox is not None:
        return int(params.min_distance_vox)
    if params.particle_diameter_A is not None:
        return min_distance_vox(params.particle_diameter_A, voxel_size_A)
    return REFERENCE_MIN_DISTANCE_VOX


def instances_from_mask(mask: da.Array, extractor: str, params: LocalizeParams,
                        scratch: str | None = None, voxel_size_A: float = 1.0) -> tuple[da.Array, int, dict]:
    """Lazy uint32 instances of a boolean mask and the number of ids used (``scratch``: a folder
    the watershed may cache distance maps in until its instances are stored)."""
    if extractor == "cc":
        labels, n = connected_components_chunked(mask)
        return labels, n, {"components": n}
    if extractor == "ws":
        md = peak_spacing_vox(params, voxel_size_A)
        halo = params.halo_vox
        if halo is None and params.particle_diameter_A is not None:  # a basin can be as large as the largest particle
            halo = max(2 * md + 2, int(np.ceil(params.particle_diameter_A[1] / voxel_size_A)))
        return watershed_chunked(mask, md, halo, params.exclude_border, scratch)
    raise ValueError(f"unknown extractor {extractor!r}; use one of {EXTRACTORS}")


def check_labels(semantic: da.Array, mask: da.Array, image_path: str | Path, name: str, particle_id: int) -> int:
    """Refuse labels whose shape differs from the tomogram's and a particle id that never occurs;
    return the number of mask voxels (the values present are read only when there are none)."""
    from ..io.omezarr import open_image

    source = Path(image_path) / "labels" / name
    image, _, _ = open_image(image_path)
    if tuple(semantic.shape) != tuple(image.shape):
        raise PicketError(source, f"label shape {tuple(semantic.shape)} differs from the tomogram's {tuple(image.shape)}",
                          "segment this tomogram again (labels must be voxel-for-voxel)")
    n_mask = int(compute(mask.sum(), label="labels: particle voxels")[0])
    if n_mask:  # the particle id occurs; else read the values present (an empty mask, or no such id?)
        return n_mask
    present = compute(value_counts(semantic, 256), label="labels: values present")[0]
    if present[int(particle_id)] == 0:
        values = [int(v) for v in np.nonzero(present)[0]]
        raise PicketError(source, f"particle id {particle_id} does not occur (values present: {values})",
                          "pass the id of the particle cluster (1 for picket-dask labels)")
    return int(n_mask)


def localize(image_path: str | Path, semantic_name: str, extractor: str, params: LocalizeParams | None = None,
             voxel_size: tuple[float, float, float] | None = None, particle_id: int = 1,
             instance_name: str | None = None, roi: Callable[[np.ndarray], np.ndarray] | None = None) -> Instances:
    """Instances and centroids of ``<image>/labels/<semantic_name>``; instance labels are written as
    ``<image>/labels/<instance_name>`` (uint32). An empty mask gives an empty table, not an error.
    ``roi``: (n, 3) centres (z, y, x voxels of this image) -> (n,) bool, where picks may be (``--mask``,
    io/roi.py); the others are dropped before the significance, score and count cuts."""
    params = params or LocalizeParams()
    timings = Timings()
    vs = float(np.max(voxel_size or (1.0, 1.0, 1.0)))  # Angstrom, for the size prior and the peak spacing
    semantic, meta = open_labels(image_path, semantic_name)
    instance_name = instance_name or semantic_name.replace("semantic-", "instances-") + f"-{extractor}"
    # the particle mask and the instances are kept in scratch arrays (blosc-lz4, chunking.scratch_array)
    # until the table, the filters and the scores are done; the label image is written once, compressed, at the end
    work = Path(image_path) / f".instances-{uuid.uuid4().hex[:8]}"
    try:
        with timings.stage("mask"):
            mask = particle_mask(semantic, particle_id, params.z_extract, Path(image_path) / "labels" / semantic_name)
            lamella = Lamella.from_dict(meta.get("lamella"), semantic.shape)
            if lamella.found and params.z_extract is None:  # nothing outside the sample is ever a pick
                mask = mask & lamella.mask(semantic.chunks, extract=True)
            context_note, ctx = "off", None
            if params.context == "auto":  # gold and other context found by localize/context.py, masked before instances
                ctx, context_note = context_mask(image_path, semantic.shape, semantic.chunks)
                if ctx is not None:
                    mask = mask & ~ctx
            mask = scratch_stored(mask, str(work / "mask"), label="particle mask", fast_codec=True)  # read by every pass below
            n_mask = check_labels(semantic, mask, image_path, semantic_name, particle_id)
        report: dict = {"mask_voxels": n_mask, "lamella": "z_extract given" if params.z_extract is not None else lamella.reason,
                        "context": context_note}
        if n_mask == 0:
            report["warning"] = "the particle mask is empty: no picks"
            warn(f"{instance_name}: {report['warning']}")
        with timings.stage(extractor):
            scratch = Path(image_path) / f".ws-distance-{uuid.uuid4().hex[:8]}"
            try:
                labels, n, rep = instances_from_mask(mask, extractor, params, str(scratch), vs)
                report.update(rep)
                base = dict(step="instances", extractor=extractor, semantic=semantic_name, params=params.model_dump(mode="json"))
                stored = scratch_stored(labels, str(work / "0"), label="instances", fast_codec=True)
            finally:
                remove(scratch)
            if extractor == "ws" and n_mask:
                filled, n_cc = fill_unreached(mask, stored, n)
                report["unreached_components"] = n_cc
                if n_cc:
                    stored = scratch_stored(filled, str(work / "1"), label="instances: unreached voxels", fast_codec=True)
                    n += n_cc
        with timings.stage("centroids"):
            table = instance_table(stored, n)
            in_range = in_size_range(table.counts, params.min_size_vox, params.max_size_vox)
            keep = in_range.copy()
            if params.face_layer == "auto" and len(table):  # the blur's noisier face layer (localize/faces.py)
                on_face = on_face_layer(table.centroids, semantic.shape, HALF)
                report["face_layer"] = int((keep & on_face).sum())
                keep &= ~on_face
            if params.drop_face_touching and len(table):  # cut by the x/y faces: centroid off, edge artefacts
                touching = touches_faces(table.bbox_min, table.bbox_max, semantic.shape, HALF)
                report["touching_faces"] = int((keep & touching).sum())
                keep &= ~touching
            if ctx is not None and len(table):  # pieces of a membrane cut off by the mask: centres at its edge
                r = int(np.ceil((params.particle_diameter_A or DEFAULT_DIAMETER_A)[0] / 2 / vs))
                near = centres_near(table.centroids, ctx, r)
                report["centre_near_context"] = int((keep & near).sum())
                keep &= ~near
            if params.particle_diameter_A is not None and len(table):
                prior = size_keep(table.counts, table.bbox_max - table.bbox_min + 1, vs, params.particle_diameter_A)
                report["outside_size_prior"] = int((keep & ~prior).sum())
                keep &= prior
                if not keep.any():
                    report["warning"] = (f"the particle-size prior {tuple(params.particle_diameter_A)} A excludes all "
                                         f"{len(table)} instances: no picks (widen --particle-diameter-A or --no-size-prior)")
                    warn(f"{instance_name}: {report['warning']}")
        scores = contrast = merged_into = None
        if len(table):
            with timings.stage("scores"):
                sc, image, background = _scores(image_path, semantic, stored, table, lamella, params)
                report["scores"] = sc.summary()
                scores, contrast = sc.score, sc.contrast
            if params.shells == "auto" and params.particle_diameter_A is not None and keep.sum():
                with timings.stage("shells"):  # a hollow particle's wall picks -> one pick at its centre
                    rows = np.flatnonzero(keep)
                    segmentation = (str(Path(image_path).resolve()), semantic_name, meta.get("created"),
                                    json.dumps(meta.get("timings_s"), sort_keys=True), params.z_extract, str(context_note))
                    found = find_shells(mask, _binned_image(image_path, image), table.centroids[rows],
                                        tuple(d / vs for d in params.particle_diameter_A), sc.polarity,
                                        lamella if lamella.found else None, cache_key=segmentation)
                    merged_into = merge_shells(table, keep, scores, contrast, rows, found)
                    report["shells"] = found.report
                    if len(found):
                        note(f"{instance_name}: {len(found)} hollow particle(s): {found.report['picks_merged']} picks on "
                             f"their walls became {len(found)} at their centres (--shells off to keep them apart)")
            if params.merge_close != "off" and params.particle_diameter_A is not None and keep.sum() > 1:
                with timings.stage("duplicates"):  # picks closer than the smallest particle's diameter: one particle
                    merged_into, report["duplicates"] = merge_duplicates(table, keep, scores, contrast,
                                                                         params.particle_diameter_A[0] / vs, merged_into,
                                                                         wide=params.merge_close == "wide")
                    if report["duplicates"]["groups"]:
                        d = report["duplicates"]
                        note(f"{instance_name}: {d['picks_merged']} picks closer than the smallest particle's diameter "
                             f"({params.particle_diameter_A[0]:g} A) became {d['groups']} (--merge-close off to keep them apart)")
            if roi is not None and keep.any():  # the user's region (io/roi.py), on the final centres
                with timings.stage("roi"):
                    in_roi = roi(table.centroids)
                    report["outside_mask"] = int((keep & ~in_roi).sum())
                    keep &= in_roi
            with timings.stage("scores"):
                if params.fdr is not None:  # the picks still in play are the family the FDR is controlled over
                    null_bg = background & ~ctx if ctx is not None else background
                    sig = significance(image, null_bg, scores[keep], table.counts[keep], sc.background_mean,
                                       sc.background_sd, sc.polarity, params.fdr, params.fdr_null_size, params.fdr_seed)
                    report["significance"] = sig.report
                    keep[np.flatnonzero(keep)[~sig.keep]] = False
                if params.min_score is not None:
                    keep &= scores >= params.min_score
                if params.max_picks is not None and keep.sum() > params.max_picks:
                    cut = np.sort(scores[keep])[::-1][params.max_picks - 1]
                    keep &= scores >= cut
                    keep &= np.cumsum(keep) <= params.max_picks  # ties at the cut: the first ones
        with timings.stage("relabel"):  # and the one write of the label image
            report["size_filtered"] = int((~in_range).sum())
            table, lut = relabel(table, keep, merged_into)
            if scores is not None:
                scores, contrast = scores[keep], contrast[keep]
            if lut is None:
                path = write_labels(image_path, instance_name, stored, voxel_size or (1.0, 1.0, 1.0), {**base, **environment()})
            else:
                report["dropped"] = int(len(keep) - keep.sum())
                relabelled = stored.map_blocks(lambda b, lut=lut: lut[b], dtype=np.uint32)
                path = write_labels(image_path, instance_name, relabelled, voxel_size or (1.0, 1.0, 1.0),
                                    {**base, **report, **environment()})
        report["instances"] = len(table)
        return Instances(table, path, report, timings, scores, contrast)
    finally:
        remove(work)


def _binned_image(image_path, image: da.Array) -> da.Array:
    """The tomogram binned 2x by the mean: the OME-Zarr image's pyramid level 1 when it has one
    (written so by io/omezarr.write_image), else binned here."""
    from ..io.omezarr import downsample2, open_image

    try:
        return open_image(image_path, level=1)[0]
    except (IndexError, KeyError):
        return downsample2(image, image.chunksize)


def _scores(image_path, semantic: da.Array, instances: da.Array, table: InstanceTable, lamella, params: LocalizeParams):
    """Per-instance scores (localize/score.py) against the background inside the sample; the image and
    that background (lazy) beside them."""
    from ..io.omezarr import open_image

    image, _, _ = open_image(image_path)
    image = image.rechunk(instances.chunks)
    background = semantic == 0
    if lamella.found and params.z_extract is None:
        background = background & lamella.mask(semantic.chunks, extract=False)
    means, mu, sd = instance_means_and_background(instances, image, table.ids, table.counts, background)
    return score_instances(means, table.counts, mu, sd), image, background
