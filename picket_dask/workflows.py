"""The twelve workflows (FEATURES-CLUSTERER-EXTRACTOR) over one or many tomograms.

Work is shared: each tomogram is converted and preprocessed once, the fitting sample is drawn
once, every (features, clusterer) segmentation is computed in one pass over the volume, and
each segmentation serves both extractors. Output layout, per tomogram NAME under ``out``::

    NAME/NAME.zarr                    OME-Zarr image (+ labels/semantic-F-C, labels/instances-F-C-E)
    NAME/picks/F-C-E.{csv,star,ndjson}, F-C-E_picket.yaml, F-C-E_copick.json
    NAME/run.json                     parameters, versions, per-stage timings, scores
    WF.star, WF.csv, summary.csv      every tomogram folder's picks gathered at the end (collect.py)
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import ALL_WORKFLOWS, DEFAULT_DIAMETER_A, LocalizeParams, RunConfig, SegmentParams
from .errors import PicketError
from .io.atomic import ensure_dir, exclusive, removed_on_input_error
from .io.omezarr import read_attrs
from .io.picks import picks_frame, relion_name, write_all
from .io.results import RUN_JSON, read_run, write_run
from .io.copick_io import is_copick
from .io.grid import Grid, resample, work_params, working_grid
from .inputs import checked_inputs, expand_inputs, region_rule, user_mask
from .io.tomogram import convert, open_tomogram, source_id, source_stamp, tomogram_name
from .localize.extract import localize
from .provenance import Timings, environment
from .segment.preprocess import with_blur_scale
from .segment.semantic import segment_tomogram


def split_workflow(name: str) -> tuple[str, str, str]:
    """'gabor-kmeans-ws' -> ('gabor', 'kmeans', 'ws')."""
    if name not in ALL_WORKFLOWS:
        raise PicketError(name, "is not a workflow", f"use FEATURES-CLUSTERER-EXTRACTOR, one of {', '.join(ALL_WORKFLOWS)}")
    f, c, e = name.split("-")
    return f, c, e


@dataclass
class TomogramResult:
    """What a run produced for one tomogram."""

    name: str
    image: Path
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    picks: dict[str, dict[str, str]] = field(default_factory=dict)  # workflow -> format -> path
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    run_json: Path | None = None
    copick: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)  # workflow -> classes folder (or why not), with --classify


def write_back_copick(spec: str, image: Path, cfg: RunConfig, res: "TomogramResult", grid: Grid) -> dict:
    """Picks (one session per workflow) and binary segmentations (one session per features-clusterer),
    both named after the pickable object, into copick; segmentations on the tomogram's own voxels
    (``grid``: the tomogram's working grid)."""
    import pandas as pd

    from .io import copick_io
    from .io.grid import labels_to_source
    from .io.omezarr import open_labels

    out = {"picks": {}, "segmentations": {}}
    for wf, paths in res.picks.items():
        df = pd.read_csv(paths["csv"], comment="#")
        out["picks"][wf] = copick_io.write_picks(spec, df, wf, cfg.copick_object, cfg.copick_user)
    for f, c in workflow_pairs(cfg.workflows):
        sem, _ = open_labels(image, f"semantic-{f}-{c}")
        out["segmentations"][f"{f}-{c}"] = copick_io.write_segmentation(
            spec, labels_to_source(sem == 1, grid, cfg.chunks), grid.source_voxel_A[0], cfg.copick_object, f"{f}-{c}",
            cfg.copick_user)
    return out


def warn_unset_voxel_size(name: str, cfg: RunConfig, voxel_size, seg_params: SegmentParams) -> None:
    """One line when the header's voxel size looks unset (<= 1 A: tomograms are binned to >= ~2 A, and
    1 A is what MRC writers put when none was set) and the user gave none."""
    if cfg.voxel_size is None and max(voxel_size) <= 1.0:
        from .progress import warn

        warn(f"{name}: voxel size {max(voxel_size):g} A in the header (1 A is what MRC writers put when none was set); "
             f"the blur ({seg_params.sigma_vox:g} voxels), size prior and distances use it: pass --voxel-size A if it is wrong")


def segment_params(cfg: RunConfig, grid: Grid) -> SegmentParams:
    """Step 1's parameters on a tomogram's working ``grid``: options given in the tomogram's voxels
    converted (io/grid.work_params), the blur, when not set, matched to the run's particle-size prior
    (segment/preprocess.blur_sigma_vox) at the working voxel size."""
    seg, _ = work_params(grid, cfg.segment, cfg.localize)
    return with_blur_scale(seg, cfg.localize.particle_diameter_A, grid.voxel_A)


def localize_params(cfg: RunConfig, grid: Grid) -> LocalizeParams:
    """Step 2's parameters on a tomogram's working ``grid`` (options in voxels converted)."""
    return work_params(grid, cfg.segment, cfg.localize)[1]


def _semantic_done(image: Path, name: str, params: SegmentParams, shared_fit: str | None) -> bool:
    meta = read_attrs(image / "labels" / f"semantic-{name}")
    return bool(meta) and meta.get("params") == params.model_dump(mode="json") and meta.get("shared_fit") == shared_fit


def prepare_image(path: str | Path, cfg: RunConfig, out: Path, timings: Timings):
    """Validate the input and convert it into ``out/NAME/NAME.zarr`` on its working grid (io/grid.py;
    skipped when already done). Returns (name, folder, image, tomogram on the working grid, grid)."""
    name = tomogram_name(path)
    tdir = ensure_dir(out / name)
    image = tdir / f"{name}.zarr"
    with timings.stage("convert"):
        src = open_tomogram(path, cfg.chunks, cfg.voxel_size)  # validates before anything is written
        grid = working_grid(src.voxel_size, src.shape, cfg.localize.particle_diameter_A, cfg.segment.resample)
        meta = read_attrs(image)
        done = (meta.get("input") == source_id(path) and meta.get("input_stamp") == source_stamp(path)
                and Grid.from_dict(meta.get("working_grid"), meta.get("voxel_size_A"), src.shape) == grid)
        if not done:
            if grid.resampled:
                from .progress import note

                note(f"{name}: {grid.reason}")
            convert(path, image, chunks=cfg.chunks, voxel_size=cfg.voxel_size, overwrite=True, grid=grid)
    return name, tdir, image, open_tomogram(image, cfg.chunks), grid


def workflow_pairs(workflows: list[str]) -> list[tuple[str, str]]:
    """The distinct (features, clusterer) segmentations the workflows need."""
    return list(dict.fromkeys(split_workflow(w)[:2] for w in workflows))


def source_picks(inst, grid: Grid):
    """Picks of ``inst`` (localize.extract.Instances, on the working grid) in the source tomogram's voxels:
    centroids mapped through ``grid``, instance sizes in source voxels (fractional when resampled)."""
    sizes = inst.table.counts
    if grid.resampled:
        sizes = np.round(np.asarray(sizes, float) * float(np.prod(grid.ratio)), 3)
    return picks_frame(grid.to_source(inst.table.centroids), grid.source_voxel_A, sizes, inst.table.ids, inst.scores,
                       inst.contrast)


def extract_workflow(image: Path, tomo, wf: str, cfg: RunConfig, seg_params: SegmentParams, tdir: Path, path,
                     timings: Timings, grid: Grid, roi=None, regions: dict | None = None) -> tuple[dict, int]:
    """Step 2 of one workflow on an existing segmentation; picks in every format. Returns (paths, n).
    ``seg_params``: step 1's parameters as used for this tomogram (segment_params), recorded with the picks.
    ``grid``: the tomogram's working grid (prepare_image); picks are written in the source's voxels.
    ``roi``: where picks may be (localize's ``roi``: centres on the working grid -> bool), from ``--mask`` and
    ``--exclude``; ``regions``: their run.json records, kept with the picks' metadata."""
    f, c, e = split_workflow(wf)
    loc = localize_params(cfg, grid)
    inst = localize(image, f"semantic-{f}-{c}", e, loc, tomo.voxel_size, instance_name=f"instances-{wf}", roi=roi)
    for k, v in inst.timings.items():
        timings[f"{wf}.{k}"] = v
    df = source_picks(inst, grid)
    meta = {"workflow": wf, "tomogram_path": source_id(path), "tomogram_shape": list(grid.source_shape),
            "voxel_size": list(grid.source_voxel_A), "coordinates": "voxels (z, y, x) of the data array, origin at voxel 0's centre",
            "segment_params": seg_params.model_dump(mode="json"), "localize_params": loc.model_dump(mode="json"),
            "instances_report": inst.report, **environment()}
    if grid.resampled:
        meta["working_grid"] = grid.as_dict()
    if regions:
        meta["regions"] = regions
    with timings.stage(f"{wf}.write_picks"):
        paths = write_all(df, tdir / "picks", wf, tdir.name, grid.source_shape, grid.source_voxel_A, meta,
                          star_name=relion_name(tdir.name, cfg.relion_tomo_name))
    return paths, len(df)


def run_tomogram(path: str | Path, cfg: RunConfig, out: Path, models=None, shared_fit: str | None = None) -> TomogramResult:
    """All of ``cfg.workflows`` on one tomogram; resumes stages whose outputs match the parameters.

    ``models``: segmentations fitted elsewhere (``fit_shared``), applied instead of fitting here.
    Bad input found on the way (a PicketError) removes the tomogram's folder if this run created it.
    """
    with writing_folder(Path(out), tomogram_name(path)):
        return _run_tomogram(path, cfg, out, models, shared_fit)


@contextmanager
def writing_folder(out: Path, name: str) -> Iterator[Path]:
    """``out/name`` while a run writes it: locked against a second run (``out/.name.lock``), and removed again
    when bad input ends the work and this run created it (io/atomic.py)."""
    with exclusive(out / f".{name}.lock", out / name), removed_on_input_error(out / name):
        yield out / name


def _run_tomogram(path: str | Path, cfg: RunConfig, out: Path, models, shared_fit: str | None) -> TomogramResult:
    timings = Timings()
    t_start = time.perf_counter()
    roi_mask, roi_doc = user_mask(path, cfg, timings)
    exclude, exclude_doc = user_mask(path, cfg, timings, "--exclude")
    name, tdir, image, tomo, grid = prepare_image(path, cfg, out, timings)
    roi = region_rule(roi_mask, exclude, grid)
    pairs = workflow_pairs(cfg.workflows)
    seg_params = segment_params(cfg, grid)
    warn_unset_voxel_size(name, cfg, grid.source_voxel_A, seg_params)
    todo = [p for p in pairs if not _semantic_done(image, f"{p[0]}-{p[1]}", seg_params, shared_fit)]
    seg_meta = {}
    if todo:
        use = None if models is None else [m for m in models if (m.features, m.clusterer) in todo]
        segs, seg_t = segment_tomogram(image, tomo.data, tomo.voxel_size, todo, seg_params, source=str(path),
                                       models=use, extra_meta={"shared_fit": shared_fit})
        timings.update({f"segment.{k}": v for k, v in seg_t.items()})
        seg_meta = {s.name: {"orientation": s.orientation, "cluster_counts": s.counts} for s in segs}
    lamella, no_data, context = sample_context(image, tomo, cfg, pairs[0], seg_params.sigma_vox, timings)
    res = TomogramResult(name, image, grid.source_shape, grid.source_voxel_A, timings=timings)
    for wf in cfg.workflows:
        res.picks[wf], res.counts[wf] = extract_workflow(image, tomo, wf, cfg, seg_params, tdir, path, timings, grid, roi,
                                                           {k: v for k, v in (("mask", roi_doc), ("exclude", exclude_doc)) if v})
    timings["total"] = round(time.perf_counter() - t_start, 3)
    if cfg.classify:
        res.classes = classify_stage(tdir, cfg.workflows, timings)
    if is_copick(path):
        with timings.stage("copick_write"):
            res.copick = write_back_copick(path, image, cfg, res, grid)
    if (tdir / RUN_JSON).exists():  # keep the earlier runs' workflows whose outputs are still there
        old = read_run(tdir)
        for wf, paths in old.get("picks", {}).items():
            if wf not in res.picks and all(Path(p).exists() for p in paths.values()):
                res.picks[wf], res.counts[wf] = paths, old["n_picks"][wf]
    doc = {"tomogram": source_id(path), "name": name, "image": str(image), "shape_zyx": list(grid.source_shape),
           "voxel_size_A": list(grid.source_voxel_A), "working_grid": grid.as_dict(), "config": cfg.model_dump(mode="json"),
           "blur_sigma_vox": seg_params.sigma_vox,
           "shared_fit": shared_fit,
           "segmentations": seg_meta, "lamella": lamella, "no_data": no_data, "context": context, "mask": roi_doc, "exclude": exclude_doc, "picks": res.picks, "copick": res.copick, "classes": res.classes, "n_picks": res.counts, "timings_s": dict(timings), **environment()}
    res.run_json = write_run(tdir, doc)  # image and picks paths relative to tdir: the folder can be moved
    return res


def classify_stage(tdir: Path, workflows: list[str], timings: Timings) -> dict[str, str]:
    """``--classify``: classes of each workflow's picks, after the picks (steps 1 and 2 never import classify)."""
    from .classify import classify_picks

    out = {}
    for wf in workflows:
        with timings.stage(f"{wf}.classify"):
            try:
                out[wf] = str(classify_picks(tdir, wf).out)
            except PicketError as exc:  # e.g. a workflow without picks: the others still get classes
                out[wf] = f"not classified: {exc}"
    return out


def sample_context(image: Path, tomo, cfg: RunConfig, pair: tuple[str, str], sigma_vox: float,
                   timings: Timings) -> tuple[dict, dict | None, dict]:
    """The lamella and the no-data record found by step 1 (from the label metadata) and, with
    ``context: auto``, the context mask written as ``labels/context`` before any instances (gold found
    at the blur ``sigma_vox``, voxels, that step 1 used); all three as run.json records."""
    from .localize.context import detect_context
    from .segment.lamella import Lamella

    attrs = read_attrs(image / "labels" / f"semantic-{pair[0]}-{pair[1]}")
    lam = Lamella.from_dict(attrs.get("lamella"), tomo.shape)
    nd = attrs.get("no_data")
    if cfg.localize.context != "auto":
        return lam.as_dict(), nd, {"mode": "off"}
    with timings.stage("context"):
        diameter = tuple(cfg.localize.particle_diameter_A or DEFAULT_DIAMETER_A)
        no_data = None
        if (nd or {}).get("voxels"):  # step 1's unassigned voxels (255): the fill and the faces
            from .io.omezarr import open_labels

            no_data = open_labels(image, f"semantic-{pair[0]}-{pair[1]}")[0] == np.uint8(255)
        report = detect_context(image, lam, tomo.voxel_size, sigma_vox, diameter, no_data)
    if report.get("warning"):
        from .progress import warn

        warn(f"context: {report['warning']}")
    return lam.as_dict(), nd, {"mode": "auto", **report}


def fit_shared(paths: list[Path], cfg: RunConfig):
    """Fit every needed (features, clusterer) model once on samples pooled from ``paths``.

    Each tomogram is preprocessed with its own min/max and contributes max_fit_voxels / N voxels.
    """
    from .segment.preprocess import preprocess
    from .segment.semantic import FitSample, draw_sample, fit_models

    per = None if cfg.segment.max_fit_voxels is None else max(1, cfg.segment.max_fit_voxels // len(paths))
    samples = []
    for p in paths:
        t = open_tomogram(p, cfg.chunks, cfg.voxel_size)
        grid = working_grid(t.voxel_size, t.shape, cfg.localize.particle_diameter_A, cfg.segment.resample)
        params = segment_params(cfg, grid).model_copy(update={"max_fit_voxels": per})
        scaled, _, _ = preprocess(resample(t.data, grid, cfg.chunks), params.sigma_vox, p, denoise=params.denoise,
                                  background_sigma_vox=params.background_sigma_vox if params.background == "auto" else None)
        samples.append(draw_sample(scaled, params))
    pooled = FitSample(np.concatenate([s.coords for s in samples]), np.concatenate([s.neighborhoods for s in samples]))
    return fit_models(pooled, workflow_pairs(cfg.workflows), cfg.segment)


def run(tomograms: list[str | Path] | str | Path, out: str | Path = "picket-out", workflows: list[str] | str | None = None,
        config: RunConfig | None = None, **overrides) -> list[TomogramResult]:
    """Run workflows over tomograms (MRC/REC files, OME-Zarr images, or folders of them).

    ``workflows``: names like 'gabor-kmeans-ws', 'all', or None for the default two.
    ``overrides``: RunConfig fields (e.g. chunks=64, fit_on=2, concurrent=2) or segment/localize
    parameters by name (e.g. z_fit=(40, 80), min_distance_vox=8).
    Tomograms run ``concurrent`` at a time on the active Dask cluster; with ``fit_on`` N > 0 the
    clusterers are fitted once on the first N tomograms and applied to all.
    """
    cfg = (config or RunConfig()).model_copy(deep=True)
    if workflows is not None:
        cfg.workflows = [workflows] if isinstance(workflows, str) else list(workflows)
        cfg = RunConfig(**cfg.model_dump())
    if "preset" in overrides:  # the preset's values first; the other overrides below still win
        from .config import preset_values

        cfg.preset = overrides.pop("preset")
        seg, loc = preset_values(cfg.preset)
        for k, v in seg.items():
            setattr(cfg.segment, k, v)
        for k, v in loc.items():
            setattr(cfg.localize, k, v)
    for k, v in overrides.items():
        if k in SegmentParams.model_fields:
            setattr(cfg.segment, k, v)
        elif k in LocalizeParams.model_fields:
            setattr(cfg.localize, k, v)
        elif k in RunConfig.model_fields:
            setattr(cfg, k, v)
        else:
            raise PicketError(k, "is not a run parameter", "see help(picket_dask.run) and picket_dask.config")
    paths = checked_inputs(tomograms, cfg)
    with removed_on_input_error(out, only_if_empty=True):
        results = _run_all(paths, cfg, ensure_dir(out))  # ensure_dir: fail fast on a folder that cannot be created
    if cfg.collect:
        collect_run(out, cfg.workflows, cfg.relion_tomo_name)
    return results


def collect_run(out: str | Path, workflows: list[str], relion_tomo_name: str | None = None) -> None:
    """The run's workflows gathered over every tomogram folder in ``out`` (collect.py: OUT/WF.star, OUT/WF.csv).
    After the tomograms' own outputs are written, a folder it cannot read (another run's) is one line, not a failure."""
    from .collect import collect
    from .progress import note, warn

    try:
        done = collect(out, workflows, relion_tomo_name=relion_tomo_name)
    except PicketError as exc:
        warn(f"particles of the run's tomograms not collected into {out}: {exc} (each tomogram's own picks are written)")
        return
    for c in done.values():
        note(f"{c.workflow}: {c.n_picks} picks of {len(c.tomograms)} tomogram(s) in {c.star} and {c.csv.name}")
    for line in noted_rows(out):
        warn(line)
    note(f"`picket-dask report {out}` draws every tomogram's preview and summary row on one page")


def noted_rows(out: str | Path, at_most: int = 10) -> list[str]:
    """The summary rows with a note (collect.summary: no picks, no lamella, far from the batch's density), one line
    each (``at_most``, then how many more), for the console at the end of a run: which tomograms to look at."""
    import pandas as pd

    from .collect import SUMMARY

    table = pd.read_csv(Path(out) / SUMMARY, comment="#", usecols=["tomogram", "workflow", "note"], dtype=str,
                        keep_default_na=False)  # an empty note is "", not NaN
    noted = table[table.note != ""]
    lines = [f"look at {r.tomogram} ({r.workflow}): {r.note}" for r in noted.head(at_most).itertuples()]
    if len(noted) > at_most:
        lines.append(f"and {len(noted) - at_most} more rows with a note in {Path(out) / SUMMARY}")
    return lines


def _run_all(paths: list, cfg: RunConfig, out: Path) -> list[TomogramResult]:
    """``run``'s work once its inputs are checked: the shared fit if asked, then each tomogram."""
    models, shared = None, None
    if cfg.fit_on:
        fit_paths = paths[: cfg.fit_on]
        models = fit_shared(fit_paths, cfg)
        shared = ",".join(source_id(p) for p in fit_paths)
    if cfg.concurrent <= 1 or len(paths) == 1:
        return [run_tomogram(p, cfg, out, models, shared) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    # each tomogram's stages submit their own graphs to the same cluster; threads only wait
    with ThreadPoolExecutor(max_workers=cfg.concurrent) as pool:
        return list(pool.map(lambda p: run_tomogram(p, cfg, out, models, shared), paths))


def segment_only(tomograms, out: str | Path, pairs: list[tuple[str, str]], cfg: RunConfig | None = None) -> list[Path]:
    """Step 1 alone: convert each tomogram into ``out/NAME/NAME.zarr`` and write its semantic labels."""
    cfg = cfg or RunConfig()
    images = []
    with removed_on_input_error(out, only_if_empty=True):
        ensure_dir(out)
        for p in expand_inputs([tomograms] if isinstance(tomograms, (str, Path)) else tomograms):
            with writing_folder(Path(out), tomogram_name(p)):
                name, _, image, tomo, grid = prepare_image(p, cfg, Path(out), Timings())
                params = segment_params(cfg, grid)
                warn_unset_voxel_size(name, cfg, grid.source_voxel_A, params)
                segment_tomogram(image, tomo.data, tomo.voxel_size, pairs, params, source=source_id(p))
            images.append(image)
    return images


def localize_only(image: str | Path, semantic_name: str, extractor: str, out: str | Path, cfg: RunConfig | None = None,
                  particle_id: int = 1) -> dict[str, str]:
    """Step 2 alone on an existing semantic label image (``<image>/labels/<semantic_name>``); picks into ``out``."""
    from .io.omezarr import open_image

    cfg = cfg or RunConfig()
    data, vs, _ = open_image(image)
    ensure_dir(out)  # before the work, not after it
    grid = Grid.from_dict(read_attrs(image).get("working_grid"), vs, data.shape)  # picks in the source's voxels
    loc = localize_params(cfg, grid)
    inst = localize(image, semantic_name, extractor, loc, vs, particle_id=particle_id,
                    instance_name=f"{semantic_name.replace('semantic-', 'instances-')}-{extractor}")
    df = source_picks(inst, grid)
    stem = f"{semantic_name.replace('semantic-', '')}-{extractor}"
    name = tomogram_name(image)
    meta = {"workflow": stem, "tomogram_path": str(Path(image).resolve()), "tomogram_shape": list(grid.source_shape),
            "voxel_size": list(grid.source_voxel_A), "particle_id": particle_id, "localize_params": loc.model_dump(mode="json"),
            "instances_report": inst.report, **environment()}
    return write_all(df, Path(out), stem, name, grid.source_shape, grid.source_voxel_A, meta)

