"""The ``picket-dask`` command: convert, simulate, run, segment, localize, classify, collect, report, evaluate, preview, view, demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ALL_WORKFLOWS, DEFAULT_WORKFLOWS, RunConfig, load_config
from . import progress
from .errors import PicketError
from .io.atomic import check_writable, ensure_dir, ensure_parent, removed_on_input_error


RELION_NAME_HELP = ("rlnTomoName in the STAR files: the one group of this regular expression matching each tomogram's "
                    "whole name, RELION's name for it ('rec_(.*)' for RELION 5's rec_TS_01.mrc, '(.*)_[0-9.]+Apx' for "
                    "Warp's TS_01_10.00Apx.mrc; default: the name itself)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dask cluster")
    g.add_argument("--cluster", default="local", choices=["local", "threads", "slurm", "pbs", "lsf"],
                   help="local: embedded LocalCluster (default); threads: no distributed; slurm/pbs/lsf: dask-jobqueue")
    g.add_argument("--scheduler", help="address of a running dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--workers", type=int, help="LocalCluster workers (default: dask's choice for this machine)")
    g.add_argument("--threads", type=int, help="threads per worker")
    g.add_argument("--memory-limit", default="auto", help="memory per worker, e.g. 4GB (default: share of RAM)")
    g.add_argument("--jobs", type=int, default=1, help="batch jobs to start with --cluster slurm|pbs|lsf")
    g.add_argument("--gpu", action="store_true", help="dask-cuda workers, one per GPU (needs the gpu extra)")


def _client(args):
    from .cluster import get_client

    return get_client(args.cluster, args.scheduler, args.workers, args.threads, args.memory_limit, args.gpu, args.jobs)


def _bounds(v):
    return None if v is None else (int(v[0]), int(v[1]))


def cmd_convert(args) -> int:
    from .io.tomogram import convert

    t0 = time.perf_counter()
    check_writable(Path(args.output), args.overwrite)  # before a cluster starts
    with _client(args):
        out = convert(args.input, args.output, chunks=args.chunks, voxel_size=args.voxel_size, overwrite=args.overwrite, ngff=args.ngff)
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_simulate(args) -> int:
    from .simulate import simulate

    files = simulate(args.out_dir, args.preset, args.seed, args.crowded, args.noise, scene=args.scene, dose=args.dose)
    for k, v in files.items():
        print(f"{k}: {v}")
    return 0


def _config(args) -> RunConfig:
    cfg = load_config(args.config) if args.config else RunConfig()
    d = cfg.model_dump()
    if args.tomograms:
        d["tomograms"] = list(args.tomograms)
    if args.copick:
        from .io.copick_io import CopickSource

        runs = list(args.copick_runs or [])
        if getattr(args, "all_runs", False):
            if runs:
                raise PicketError("--all-runs", "and --run name the runs twice", "give one of them")
            from .io.copick_io import runs_with_tomograms

            runs, lack = runs_with_tomograms(args.copick, args.copick_voxel_spacing, args.copick_tomo_type)
            if lack:
                from .progress import note

                note(f"--all-runs: {len(runs)} runs; {len(lack)} without such a tomogram left out "
                     f"({', '.join(lack[:5])}{', ...' if len(lack) > 5 else ''})")
        if not runs:
            raise PicketError("--copick", "needs the runs to process", "add --run RUN_NAME (once per run) or --all-runs")
        d["tomograms"] = d["tomograms"] + [CopickSource(args.copick, r, args.copick_voxel_spacing, args.copick_tomo_type).spec()
                                           for r in runs]
    elif getattr(args, "all_runs", False):
        raise PicketError("--all-runs", "needs a copick project", "add --copick CONFIG.json")
    if args.copick_object:
        d["copick_object"] = args.copick_object
    if args.out:
        d["out"] = args.out
    if args.workflows:
        d["workflows"] = [w.strip() for w in args.workflows.split(",") if w.strip()]
    if args.chunks:
        d["chunks"] = args.chunks
    if args.voxel_size:
        d["voxel_size"] = args.voxel_size
    if getattr(args, "classify", False):
        d["classify"] = True
    if getattr(args, "mask", None):
        d["mask"] = args.mask
    if getattr(args, "exclude", None):
        d["exclude"] = args.exclude
    if getattr(args, "no_collect", False):
        d["collect"] = False
    if getattr(args, "relion_tomo_name", None):
        d["relion_tomo_name"] = args.relion_tomo_name
    for key in ("concurrent", "fit_on"):
        if getattr(args, key, None) is not None:
            d[key] = getattr(args, key)
    seg, loc = d["segment"], d["localize"]
    if getattr(args, "preset", None):
        from .config import preset_values

        d["preset"] = args.preset
        ref_seg, ref_loc = preset_values(args.preset)  # the preset's values first, explicit options below still win
        seg.update(ref_seg)
        loc.update(ref_loc)
    if getattr(args, "particle_diameter_A", None):
        loc["particle_diameter_A"] = tuple(args.particle_diameter_A)
    if getattr(args, "no_size_prior", False):
        loc["particle_diameter_A"] = None
    if args.z_fit:
        seg["z_fit"] = _bounds(args.z_fit)
    if args.z_extract:
        loc["z_extract"] = _bounds(args.z_extract)
    if getattr(args, "denoise", None) is not None:
        from .segment.denoise import check_method

        seg["denoise"] = check_method(args.denoise)  # an unknown method: one line, exit 2
    if getattr(args, "gpu", False):
        seg["device"] = "gpu"
    for key, target in (("sigma_vox", seg), ("max_fit_voxels", seg), ("orientation", seg), ("seed", seg), ("kmeans_backend", seg),
                        ("kmeans_cut", seg), ("gmm_starts", seg), ("fit_schedule", seg), ("lamella", seg), ("background", seg), ("resample", seg), ("nodata", seg), ("extreme_refit", seg), ("min_distance_vox", loc), ("min_size_vox", loc), ("max_size_vox", loc),
                        ("context", loc), ("shells", loc), ("merge_close", loc), ("face_layer", loc), ("min_score", loc), ("max_picks", loc), ("fdr", loc)):
        v = getattr(args, key, None)
        if v is not None:
            target[key] = v
    from pydantic import ValidationError

    try:
        return RunConfig(**d)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise PicketError(".".join(str(p) for p in e["loc"]), e["msg"], "fix that option (see picket-dask run --help)") from None


def cmd_run(args) -> int:
    from .inputs import checked_inputs
    from .workflows import run

    cfg = _config(args)
    if not cfg.tomograms:
        raise PicketError("run", "no tomograms given", "name MRC/REC files, .zarr images or folders, or list them in --config")
    paths = checked_inputs(cfg.tomograms, cfg)  # a bad input or option: one line, before a cluster starts
    if args.dry_run:
        from .inputs import plan

        rows = plan(paths, cfg, cfg.out)
        for row in rows:
            z, y, x = row["shape_zyx"]
            print(f"{row['name']}: {z} x {y} x {x} voxels of {row['voxel_size_A']:g} A ({row['voxel_size_from']}); grid: "
                  f"{row['grid']}" + (f"; mask {row['mask']}" if row["mask"] else "") +
                  (f"; exclude {row['exclude']}" if row["exclude"] else "") + f"; {row['out']}: {row['state']}"
                  + (f"; {row['note']}" if row["note"] else ""))
        print(f"{len(paths)} tomogram(s), workflows {', '.join(cfg.workflows)}, preset {cfg.preset}: checked, nothing "
              "written (--dry-run)")
        work = sum(row["work_voxels"] for row in rows)
        print(f"work: {work / 1e6:,.0f} million voxels on the working grids; for scale, the defaults take ~30-35 s and "
              "~1.2 GB for 52 million on 2 cores (benchmarks/stages.py --large), about proportional to the voxels, "
              "memory bounded by the chunks")
        return 0
    with removed_on_input_error(cfg.out, only_if_empty=True):  # bad input leaves no empty output folder
        ensure_dir(cfg.out)  # an output folder that cannot be created: one line, before a cluster starts
        with _client(args):
            results = run(paths, cfg.out, config=cfg)
    for r in results:
        print(f"{r.name}: " + ", ".join(f"{wf} {n} picks" for wf, n in r.counts.items()))
        for wf, where in r.classes.items():
            print(f"  classes {wf}: {where}")
        print(f"  results: {r.run_json.parent}")
    return 0


def cmd_classify(args) -> int:
    from .classify import classify_picks

    with _client(args):
        res = classify_picks(args.result, args.workflow, args.classes, args.box_A, args.drop_junk, args.export_subvolumes,
                             args.edge)
    print(res.classes.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    junk = res.classes.loc[res.classes.junk, "count"].sum()
    print(f"{res.n_picks} picks, {res.k} classes, {junk} picks in junk classes ({res.timings['total']:.1f} s)")
    print(f"  results: {res.out}")
    return 0


def cmd_segment(args) -> int:
    from .workflows import segment_only

    cfg = RunConfig(chunks=args.chunks, voxel_size=args.voxel_size)
    cfg.segment.z_fit = _bounds(args.z_fit)
    if args.max_fit_voxels:
        cfg.segment.max_fit_voxels = args.max_fit_voxels
    if args.orientation:
        cfg.segment.orientation = args.orientation
    pairs = [(f, c) for f in args.features.split(",") for c in args.clusterers.split(",")]
    for f, c in pairs:
        if f not in ("intensities", "ffts", "gabor") or c not in ("kmeans", "gmm"):
            raise PicketError(f"{f}-{c}", "is not a segmentation", "use --features intensities|ffts|gabor and --clusterers kmeans|gmm")
    with removed_on_input_error(args.out, only_if_empty=True):
        ensure_dir(args.out)
        with _client(args):
            images = segment_only(args.tomograms, args.out, pairs, cfg)
    for im in images:
        print(f"{im}: labels " + ", ".join(f"semantic-{f}-{c}" for f, c in pairs))
    return 0


def cmd_localize(args) -> int:
    from .workflows import localize_only

    cfg = RunConfig()
    cfg.localize.z_extract = _bounds(args.z_extract)
    cfg.localize.min_distance_vox = args.min_distance_vox
    ensure_dir(args.out)
    with _client(args):
        paths = localize_only(args.image, args.labels, args.extractor, args.out, cfg, args.particle_id)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_evaluate(args) -> int:
    import pandas as pd

    from .evaluate import evaluate_files, evaluate_run, plot_scores

    for out in (args.csv, args.plot):  # check before scoring, not after
        if out:
            ensure_parent(out)
    if len(args.picks) == 1 and Path(args.picks[0]).is_dir():
        if args.pr_curve:
            raise PicketError("--pr-curve", "takes picks files, not a run folder", "give OUT/NAME/picks/WF.csv (several may be given)")
        df = evaluate_run(args.picks[0], args.truth, args.threshold_A, args.region)
        csv = args.csv or Path(args.picks[0]) / "scores.csv"
        png = args.plot or Path(args.picks[0]) / "scores.png"
    else:
        from .evaluate import Region

        shape, vs = _shape_and_voxel(args)
        region = None if args.region is None else Region.from_bounds(args.region, shape)
        rows = []
        for p in args.picks:
            s = evaluate_files(p, args.truth, shape, vs, args.threshold_A, region)
            rows.append({"picks": str(p), **{k: v for k, v in s.as_dict().items() if k != "recall_by_type"},
                         **{f"recall[{k}]": v for k, v in s.recall_by_type.items()}})
        df = pd.DataFrame(rows)
        csv, png = args.csv, args.plot
        if args.pr_curve:
            print(f"wrote {_pr_curves(args.picks, args.truth, shape, vs, args.threshold_A, args.pr_curve, region)}")
    if args.region is not None:
        box = " ".join(map(str, args.region))
        df.insert(len(df.columns), "region_zzyyxx", box)  # the CSV says how it was scored
        print(f"scored inside the region {box} (voxels Z0 Z1 Y0 Y1 X0 X1): precision over the "
              "n_picks picks and recall over the n_truth particles at least the match distance inside it (or on the volume's face)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if "workflow" in df and df.tomogram.nunique() > 1:
        med = df.groupby("workflow")[["precision", "recall", "f1", "relative_recall", "matched_f1"]].median().sort_values("f1", ascending=False)
        print("\nmedian over tomograms:\n" + med.to_string(float_format=lambda v: f"{v:.3f}"))
    if csv:
        df.to_csv(csv, index=False)
        print(f"wrote {csv}")
    if png and "workflow" in df:
        print(f"wrote {plot_scores(df, png)}")
    return 0


def _pr_curves(picks: list, truth, shape, vs, threshold_A: float, png, region=None) -> Path:
    """Precision-recall curves from the picks' scores (CSV ``score``, STAR ``rlnAutopickFigureOfMerit``, ndjson
    and copick ``score``)."""
    from .evaluate import plot_pr, pr_curve, threshold_vox, zyx
    from .io.picks import read_points

    curves = {}
    for p in picks:
        df = read_points(p, max(vs), shape)
        if "score" not in df.columns:
            raise PicketError(p, "has no score", "give picks written by picket-dask run (the CSV, STAR, ndjson and copick "
                              "files carry the score)")
        curves[Path(p).stem] = pr_curve(zyx(df), df.score.to_numpy(), zyx(read_points(truth, max(vs), shape)),
                                        threshold_vox(threshold_A, vs), region, shape)
    return plot_pr(curves, png)


def _shape_and_voxel(args):
    if args.tomogram:
        from .io.tomogram import open_tomogram

        t = open_tomogram(args.tomogram, voxel_size=args.voxel_size)
        return t.shape, t.voxel_size
    if args.shape and args.voxel_size:
        return tuple(args.shape), (args.voxel_size,) * 3
    raise PicketError("evaluate", "needs the tomogram (for its shape and voxel size)", "pass --tomogram T.mrc, or --shape Z Y X --voxel-size A")


def cmd_preview(args) -> int:
    from .io.picks import read_points
    from .evaluate import zyx
    from .preview import preview

    ensure_parent(args.out)
    picks = zyx(read_points(args.picks)) if args.picks else None
    out = preview(args.image, args.labels, picks, args.out)
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    """A batch at a glance: OUT/report.html (report.py)."""
    from .report import report

    path = report(args.out, args.workflow, args.redraw)
    print(path)
    return 0


def cmd_collect(args) -> int:
    import pandas as pd

    from .collect import SUMMARY, collect

    done = collect(args.out, [w for w in args.workflows.split(",") if w] if args.workflows else None, args.min_score,
                   args.drop_junk, args.relion_tomo_name)
    for c in done.values():
        print(f"{c.workflow}: {c.n_picks} picks of {len(c.tomograms)} tomogram(s) -> {c.star}, {c.csv}")
        if c.missing:
            print(f"  without {c.workflow} picks: {', '.join(c.missing)}")
        if c.unclassified:
            print(f"  not classified (`picket-dask classify OUT/NAME --workflow {c.workflow}`), kept whole: "
                  f"{', '.join(c.unclassified)}")
    summ = pd.read_csv(Path(args.out) / SUMMARY, comment="#")
    cols = ["tomogram", "workflow", "n_picks", "picks_per_um3", "score_median", "lamella_found", "note"]
    print(summ[cols].head(40).to_string(index=False, na_rep=""))
    print(f"summary: {Path(args.out) / SUMMARY}" + (f" ({len(summ)} rows, 40 shown)" if len(summ) > 40 else ""))
    return 0


def cmd_view(args) -> int:
    from .view import open_in_napari

    open_in_napari(args.result, args.workflows.split(",") if args.workflows else None)
    import napari

    napari.run()
    return 0


def cmd_demo(args) -> int:
    from .demo import demo

    ensure_dir(args.out)
    with _client(args):
        demo(args.out, preset=args.preset, seed=args.seed, scene=args.scene, dose=args.dose)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="picket-dask", description="Template-free particle picking in cryo-ET tomograms (PickET) on Dask.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="MRC/REC -> chunked OME-Zarr (3-level mean pyramid)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--chunks", type=int, default=128, help="chunk edge in voxels (default 128)")
    c.add_argument("--voxel-size", type=float, help="voxel size in Angstrom (overrides the header)")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--ngff", default="0.4", choices=["0.4", "0.5"], help="0.4: zarr v2 (copick, CZ portal); 0.5: zarr v3")
    _cluster_args(c)
    c.set_defaults(func=cmd_convert, cluster="threads")

    s = sub.add_parser("simulate", help="synthetic tomogram + ground truth (CSV, ndjson)")
    s.add_argument("out_dir")
    s.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--crowded", action="store_true")
    s.add_argument("--scene", default="realistic", choices=["realistic", "simple"],
                   help="realistic: ice slab in vacuum, membranes, gold, contamination, crowders, dose-limited tilt series; "
                        "simple: clean particles in ice")
    s.add_argument("--noise", type=float, default=1.0,
                   help="noise std factor: times the shot noise at --dose (realistic), times the projections' signal std (simple)")
    s.add_argument("--dose", type=float, default=None, help="total dose of the tilt series in e/A^2 (realistic; default 100)")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run workflows on tomograms", description="Workflows: " + ", ".join(ALL_WORKFLOWS))
    r.add_argument("tomograms", nargs="*", help="MRC/REC files, OME-Zarr images, or folders of them")
    r.add_argument("-o", "--out", help="output folder (default picket-out)")
    r.add_argument("-w", "--workflows", help=f"comma-separated, or 'all' (default {','.join(DEFAULT_WORKFLOWS)})")
    r.add_argument("--config", help="run YAML: picket-dask keys or the reference PickET's s1/s2 keys")
    r.add_argument("--preset", choices=["default", "reference"], help="default: working grid, lamella, context masks, size prior, "
                   "scores (the most accurate measured); reference: PickET exactly as published")
    r.add_argument("--lamella", choices=["auto", "off"], help="auto (default): find the ice slab, fit and pick inside it")
    r.add_argument("--background", choices=["auto", "off"], help="auto (default): subtract the tomogram's local mean "
                   "on scales above the largest particle (400 A) before the blur, so density gradients across the field "
                   "(lamella thickness, carbon, illumination) are not what the clusters split; off: as given (the reference)")
    r.add_argument("--nodata", choices=["auto", "off"], help="auto (default): leave constant fill regions (zero padding, "
                   "NaNs replaced by the mean) and their blurred edge unassigned; off: label every voxel (the reference)")
    r.add_argument("--extreme-refit", dest="extreme_refit", choices=["auto", "off"], help="auto (default): a model "
                   "whose particle cluster is mostly gold on the fit sample is fitted again without it; off: kept (the reference)")
    r.add_argument("--resample", choices=["auto", "off"], help="auto (default): pick a tomogram whose voxels are coarser "
                   "than 6 per smallest particle diameter (10 A for 60 A) on that grid; picks stay in the tomogram's "
                   "voxels. off: its own grid (faster on coarse tomograms)")
    r.add_argument("--denoise", metavar="{none,diffusion}", help="edge-preserving denoising before the blur: "
                   "diffusion (Perona-Malik, scale from the data) or none (default; see README)")
    r.add_argument("--context", choices=["auto", "off"], help="auto (default): mask gold and membranes before instances")
    r.add_argument("--shells", choices=["auto", "off"], help="auto (default): the picks on one hollow particle's wall "
                   "(capsids, cages) become one pick at its centre")
    r.add_argument("--merge-close", choices=["auto", "wide", "off"], help="auto (default): picks closer than the smallest "
                   "particle's diameter become one pick (two particles cannot overlap); wide: also picks closer than "
                   "the sum of their instances' equivalent radii (one pick per large particle, for averaging)")
    r.add_argument("--face-layer", choices=["auto", "off"], help="auto (default): drop picks on the first labelled "
                   "layer at the volume's faces (the blur raises the noise there: a row of false picks along the faces)")
    r.add_argument("--sigma-vox", type=float, metavar="S", help="Gaussian blur sigma in voxels (default: matched to "
                   "the smallest particle of the size prior, its radius / sqrt(3), e.g. 1.73 for 60 A at 10 A voxels; "
                   "2 without a prior and in --preset reference)")
    r.add_argument("--particle-diameter-A", nargs=2, type=float, metavar=("MIN", "MAX"),
                   help="particle-size prior in Angstrom (default 60 400)")
    r.add_argument("--no-size-prior", action="store_true", help="keep instances of every size (the reference)")
    r.add_argument("--min-score", type=float, help="drop picks scoring below this (contrast in noise SDs)")
    r.add_argument("--max-picks", type=int, help="keep at most this many picks per workflow, best first")
    r.add_argument("--fdr", type=float, metavar="Q", help="keep picks significant against the background's own "
                   "noise (empirical null, Benjamini-Hochberg) at false-discovery rate Q, e.g. 0.05 (default off)")
    r.add_argument("--z-fit", nargs=2, type=int, metavar=("LB", "UB"), help="fit on the central slab of z slices [LB, UB)")
    r.add_argument("--z-extract", nargs=2, type=int, metavar=("LB", "UB"), help="keep picks in z slices [LB, UB]")
    r.add_argument("--chunks", type=int, help="chunk edge in voxels (default 128)")
    r.add_argument("--voxel-size", type=float, help="voxel size in Angstrom (overrides the header)")
    r.add_argument("--max-fit-voxels", type=int, help="fitting sample size (default 500,000)")
    r.add_argument("--orientation", choices=["size", "invert", "auto"], help="which cluster is particles (default size)")
    r.add_argument("--seed", type=int)
    r.add_argument("--kmeans-backend", choices=["sklearn", "dask-ml"])
    r.add_argument("--kmeans-cut", choices=["mixture", "mirror", "midpoint"], help="k-means boundary: mixture (default: moved "
                   "where a 1-D Gaussian mixture along the k-means axis cuts, when it calls part of the particle "
                   "cluster noise), mirror (moved to where the particle side holds twice the noise mirrored about the "
                   "mode) or midpoint (the reference)")
    r.add_argument("--gmm-starts", choices=["kmeans+tail", "kmeans"], help="Gaussian-mixture starts: kmeans+tail (default: "
                   "EM from k-means' labels and from the sample's outer 3 %%, the more likely fit kept) or kmeans (the reference)")
    r.add_argument("--fit-schedule", choices=["coarse-to-fine", "exact"], help="coarse-to-fine (default: fit each Gaussian "
                   "mixture on every 8th sample row, then finish on the whole sample: a few full passes) or exact (scikit-learn's fit on the "
                   "whole sample, the reference)")
    r.add_argument("--copick", metavar="CONFIG.json", help="read tomograms from this copick project and write picks and "
                   "segmentations back (with --run)")
    r.add_argument("--run", dest="copick_runs", action="append", metavar="RUN_NAME", help="copick run (repeat for several)")
    r.add_argument("--all-runs", action="store_true", help="every run of the copick project that holds a tomogram (at "
                   "--copick-voxel-spacing, of --copick-tomo-type where given); the others are named and left out")
    r.add_argument("--copick-voxel-spacing", type=float, help="copick voxel spacing to read (default: of several, the coarsest that resolves the smallest particle, 6 voxels across)")
    r.add_argument("--copick-tomo-type", help="copick tomogram type to read (default: the first)")
    r.add_argument("--copick-object", help="pickable object the picks are stored as (default particle)")
    r.add_argument("--concurrent", type=int, help="tomograms processed at once on the cluster (default 2)")
    r.add_argument("--fit-on", type=int, help="fit each clusterer once on the first N tomograms, apply to all")
    r.add_argument("--classify", action="store_true", help="last stage: sort each workflow's picks into classes "
                   "(OUT/NAME/classes/WF; see picket-dask classify)")
    r.add_argument("--relion-tomo-name", metavar="PATTERN", help=RELION_NAME_HELP)
    r.add_argument("--dry-run", action="store_true", help="check every input and option and print what the run would "
                   "do per tomogram (shape, voxel size, working grid, mask, resume), without starting a cluster or writing")
    r.add_argument("--no-collect", action="store_true", help="do not gather all tomograms' picks into OUT/WF.star, "
                   "OUT/WF.csv, OUT/summary.csv at the end (run `picket-dask collect OUT` later; for arrays of many tasks)")
    r.add_argument("--mask", metavar="FILE|FOLDER|copick:NAME", help="picks only where this mask is nonzero at their centre: "
                   "an MRC/OME-Zarr/TIFF of the tomogram's shape, a folder of NAME_mask.mrc (.tif, ...) for each tomogram "
                   "NAME, or for copick runs copick:SEGMENTATION[:USER[:SESSION]], each run's segmentation of that name")
    r.add_argument("--exclude", metavar="FILE|FOLDER|copick:NAME", help="picks dropped where this mask is nonzero at "
                   "their centre (a membrane, carbon or contamination segmentation): as --mask, a folder holding NAME_exclude.mrc")
    r.add_argument("--min-distance-vox", type=int, help="watershed peak spacing in voxels (default: the size prior's "
                   "smallest diameter; 15 in the reference preset)")
    r.add_argument("--min-size-vox", type=int, help="drop instances smaller than this many voxels")
    r.add_argument("--max-size-vox", type=int, help="drop instances larger than this many voxels")
    _cluster_args(r)
    r.set_defaults(func=cmd_run)

    cl = sub.add_parser("classify", help="sort a workflow's picks into classes, de novo: averages, gallery, junk")
    cl.add_argument("result", help="a tomogram's result folder: OUT/NAME")
    cl.add_argument("-w", "--workflow", required=True, help="whose picks, e.g. gabor-gmm-cc (OUT/NAME/picks/WF.csv)")
    cl.add_argument("--classes", default="auto", help="auto (K by BIC, default) or a number of classes K")
    cl.add_argument("--box-A", type=float, help="box edge in Angstrom (default: twice the particle diameter)")
    cl.add_argument("--drop-junk", action="store_true", help="also write picks_clean.csv/.star without the junk picks")
    cl.add_argument("--export-subvolumes", action="store_true", help="also write the boxes as an MRC stack + STAR (RELION)")
    cl.add_argument("--edge", default="pad", choices=["pad", "skip"], help="boxes crossing a face: pad (default) or skip")
    _cluster_args(cl)
    cl.set_defaults(func=cmd_classify, cluster="threads")

    sg = sub.add_parser("segment", help="step 1 only: semantic labels into OUT/NAME/NAME.zarr/labels")
    sg.add_argument("tomograms", nargs="+")
    sg.add_argument("-o", "--out", default="picket-out")
    sg.add_argument("--features", default="gabor", help="comma-separated: intensities,ffts,gabor")
    sg.add_argument("--clusterers", default="kmeans,gmm", help="comma-separated: kmeans,gmm")
    sg.add_argument("--z-fit", nargs=2, type=int, metavar=("LB", "UB"))
    sg.add_argument("--max-fit-voxels", type=int)
    sg.add_argument("--orientation", choices=["size", "invert", "auto"])
    sg.add_argument("--chunks", type=int, default=128)
    sg.add_argument("--voxel-size", type=float)
    _cluster_args(sg)
    sg.set_defaults(func=cmd_segment)

    lo = sub.add_parser("localize", help="step 2 only: instances and picks from a semantic label image")
    lo.add_argument("image", help="OME-Zarr image holding labels/<name> (e.g. OUT/NAME/NAME.zarr)")
    lo.add_argument("--labels", required=True, help="semantic label name, e.g. semantic-gabor-gmm")
    lo.add_argument("--extractor", default="cc", choices=["cc", "ws"])
    lo.add_argument("--particle-id", type=int, default=1, help="label value of the particles (default 1)")
    lo.add_argument("--z-extract", nargs=2, type=int, metavar=("LB", "UB"))
    lo.add_argument("--min-distance-vox", type=int, help="watershed peak spacing (default: from the size prior)")
    lo.add_argument("-o", "--out", default="picks")
    _cluster_args(lo)
    lo.set_defaults(func=cmd_localize, cluster="threads")

    e = sub.add_parser("evaluate", help="precision, recall, F1, relative recall of picks vs truth")
    e.add_argument("picks", nargs="+", help="picks files (.csv, _picket.yaml, .star, .ndjson), or a run's --out folder")
    e.add_argument("--truth", required=True, help="truth CSV (x, y, z voxels[, type]) or portal ndjson; for a run folder: "
                   "a folder holding NAME_truth.csv per tomogram")
    e.add_argument("--plot", help="box plot PNG of F1 per workflow (default for a run folder: OUT/scores.png)")
    e.add_argument("--tomogram", help="the tomogram (for shape and voxel size)")
    e.add_argument("--shape", nargs=3, type=int, metavar=("Z", "Y", "X"))
    e.add_argument("--voxel-size", type=float)
    e.add_argument("--threshold-A", type=float, default=100.0, help="match distance in Angstrom (100 simulated, 125 real)")
    e.add_argument("--csv", help="also write the table here")
    e.add_argument("--pr-curve", metavar="PNG", help="precision-recall curve of each picks CSV from its scores")
    e.add_argument("--region", nargs=6, type=int, metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"),
                   help="the truth is complete only in this box (voxels Z0..Z1-1 and so on; of each tomogram of a run "
                        "folder): picks and particles scored where their matches are all in the box")
    e.set_defaults(func=cmd_evaluate)

    co = sub.add_parser("collect", help="the picks of every tomogram in a run's --out: one RELION 5 STAR and one CSV "
                        "per workflow (OUT/WF.star, OUT/WF.csv) and OUT/summary.csv (run writes them too)")
    co.add_argument("out", help="the --out folder of `picket-dask run` (its tomogram folders OUT/NAME)")
    co.add_argument("-w", "--workflows", help="comma-separated (default: every workflow with picks there)")
    co.add_argument("--min-score", type=float, help="keep picks scoring at least S (written as WF_min-score-S.star/.csv)")
    co.add_argument("--relion-tomo-name", metavar="PATTERN", help=RELION_NAME_HELP)
    co.add_argument("--drop-junk", action="store_true", help="leave out the picks `picket-dask classify` flagged junk "
                    "(written as WF_no-junk.star/.csv; tomograms not classified are kept whole)")
    co.set_defaults(func=cmd_collect)

    rp = sub.add_parser("report", help="OUT/report.html: every tomogram's preview with its summary row and note, "
                        "the noted ones first (a batch at a glance in a browser or JupyterLab)")
    rp.add_argument("out", help="the --out folder of `picket-dask run` (its tomogram folders OUT/NAME)")
    rp.add_argument("-w", "--workflow", help="whose picks to show (default: the first tomogram's first workflow)")
    rp.add_argument("--redraw", action="store_true", help="draw every preview again (default: only missing or older than the picks)")
    rp.set_defaults(func=cmd_report)

    v = sub.add_parser("preview", help="PNG of central XY/XZ slices with segmentation and picks")
    v.add_argument("image", help="the OME-Zarr image written by run (NAME/NAME.zarr)")
    v.add_argument("--labels", help="semantic label name, e.g. semantic-gabor-gmm")
    v.add_argument("--picks", help="picks file to overlay")
    v.add_argument("-o", "--out", default="preview.png")
    v.set_defaults(func=cmd_preview)

    w = sub.add_parser("view", help="open a tomogram's results in napari (viz extra)")
    w.add_argument("result", help="a tomogram's result folder: OUT/NAME")
    w.add_argument("-w", "--workflows", help="comma-separated (default: all in run.json)")
    w.set_defaults(func=cmd_view)

    d = sub.add_parser("demo", help="simulate a small tomogram, run the default workflows, evaluate, preview")
    d.add_argument("-o", "--out", default="picket-demo")
    d.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scene", default="realistic", choices=["realistic", "simple"], help="see picket-dask simulate --help")
    d.add_argument("--dose", type=float, default=None,
                   help="total dose in e/A^2 (default 100); ~10 gives the SNR of the dev set (0.05-0.1), a harder demo")
    _cluster_args(d)
    d.set_defaults(func=cmd_demo)
    for sp in sub.choices.values():  # every subcommand: -q after it, where users type it
        sp.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or informational lines; warnings, errors and results still print")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    was_quiet = progress.is_quiet()
    if args.quiet:
        progress.quiet(True)
    try:
        return args.func(args)
    except PicketError as exc:
        print(f"picket-dask: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system refusal not caught where it happened: still one line
        if not exc.filename:
            raise
        print(f"picket-dask: error: {exc.filename}: {exc.strerror or type(exc).__name__}; check the path, its "
              "permissions and the free space there", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("picket-dask: interrupted", file=sys.stderr)
        return 130
    finally:
        progress.quiet(was_quiet)  # main() called again in one process (tests, notebooks) starts as before


if __name__ == "__main__":
    sys.exit(main())
