"""classify_picks: a workflow's picks -> subvolumes -> descriptors -> classes -> averages, junk, outputs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PicketError
from ..io.picks import relion_name
from ..io.results import RUN_JSON, read_run
from ..provenance import Timings, environment
from . import descriptors as dsc
from .cluster import check_k, cluster, parse_classes
from .extract import EDGE_MODES, check_picks, default_box, map_batches, outside_fraction


@dataclass
class ClassifyResult:
    """What classify wrote for one workflow of one tomogram."""

    out: Path
    n_picks: int
    k: int
    classes: pd.DataFrame
    paths: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _describe(boxes, rows, polarity, sizes, families):
    return rows, dsc.describe(boxes, polarity, None if sizes is None else sizes[rows], families)


def _polarity(boxes, rows):
    return dsc.polarity_of(boxes)


def _sums(boxes, rows, labels, frames, k, polarity, export):
    from .average import class_sums

    sums, counts, central = class_sums(boxes, rows, labels, frames, k, polarity)
    return sums, counts, rows, central, (rows, boxes) if export else None


def resolve(result_dir: str | Path, workflow: str) -> tuple[Path, Path, dict]:
    """(image, picks CSV, run.json document or {}) of a tomogram's result folder OUT/NAME."""
    tdir = Path(result_dir)
    if not tdir.is_dir():
        raise PicketError(tdir, "is not a result folder", "give OUT/NAME, a tomogram's folder written by `picket-dask run`")
    doc = {}
    if (tdir / RUN_JSON).is_file():
        try:
            doc = read_run(tdir)  # image and picks paths resolved against tdir (run.json keeps them relative to it)
        except PicketError:
            doc = {}
    image = Path(doc.get("image") or tdir / f"{tdir.name}.zarr")
    if not image.exists():
        image = tdir / f"{tdir.name}.zarr"
    picks = Path(doc.get("picks", {}).get(workflow, {}).get("csv") or tdir / "picks" / f"{workflow}.csv")
    if not picks.is_file():
        have = sorted(p.stem for p in (tdir / "picks").glob("*.csv")) if (tdir / "picks").is_dir() else []
        raise PicketError(picks, f"no picks of workflow {workflow!r} here",
                          f"run that workflow first, or classify one of: {', '.join(have) or 'none'}")
    if not image.exists():
        raise PicketError(image, "the tomogram's OME-Zarr image is missing", "run `picket-dask run` again for this tomogram")
    return image, picks, doc


def read_picks(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, comment="#")
    except Exception as exc:
        raise PicketError(path, f"cannot read the picks ({type(exc).__name__})", "give a picks CSV with x, y, z columns") from None
    if not {"x", "y", "z"} <= set(df.columns):
        raise PicketError(path, "has no x, y, z columns", "give a picks CSV with x, y, z columns in voxels")
    return df


def classify_picks(result_dir: str | Path, workflow: str, classes: int | str | None = "auto", box_A: float | None = None,
                   drop_junk: bool = False, export_subvolumes: bool = False, edge: str = "pad",
                   families: tuple[str, ...] = dsc.DEFAULT_FAMILIES, seed: int = 0, max_picks_per_task: int = 128,
                   out: str | Path | None = None) -> ClassifyResult:
    """Sort a workflow's picks into classes, de novo; write ``RESULT_DIR/classes/WORKFLOW/``.

    result_dir: a tomogram's folder of a run (``OUT/NAME``: ``NAME.zarr``, ``picks/WF.csv``).
    classes: 'auto' (K by BIC) or K. box_A: box edge in Angstrom (default: twice the particle
    diameter from the run's size prior or the instances' sizes). edge: 'pad' or 'skip' picks
    whose box crosses a face. Runs on the active Dask client (or the threaded scheduler).
    """
    from ..io.atomic import atomic_path, exclusive
    from ..io.grid import image_grid
    from ..io.omezarr import open_image
    from . import junk as jk
    from . import outputs as outp

    t0 = time.perf_counter()
    timings = Timings()
    k_req = parse_classes(classes)
    if edge not in EDGE_MODES:
        raise PicketError(f"edge {edge!r}", "is not an edge mode", f"use one of {', '.join(EDGE_MODES)}")
    bad = [f for f in families if f not in dsc.FAMILIES]
    if bad or not families:
        raise PicketError(f"families {bad or families}", "unknown descriptor families", f"use some of {', '.join(dsc.FAMILIES)}")
    image, picks_path, doc = resolve(result_dir, workflow)
    final = Path(out) if out else Path(result_dir) / "classes" / workflow
    # one classify per workflow folder at a time: a second (the command run twice, or beside run --classify) stops
    # with one line naming the first, instead of the last rename winning whole (flock, released if killed)
    lock = Path(out).parent / f".{Path(out).name}.lock" if out else Path(result_dir) / f".classes-{workflow}.lock"
    with exclusive(lock, final):  # beside the tomogram's folder contents: no classes/ folder made before the work
        data, vs, _ = open_image(image)
        shape = tuple(int(s) for s in data.shape)
        chunks = tuple(int(c[0]) for c in data.chunks)
        vmax = float(np.max(vs))
        picks = read_picks(picks_path)
        grid = image_grid(image, vs, shape)  # picks are in the source tomogram's voxels, boxes on the image's grid
        centres = grid.to_work(picks[["z", "y", "x"]].to_numpy(float))
        sizes = picks["size_vox"].to_numpy(float) / float(np.prod(grid.ratio)) if "size_vox" in picks.columns else None
        if box_A is not None:
            if not box_A > 0:
                raise PicketError(f"--box-A {box_A}", "is not a positive length", "give the box edge in Angstrom, e.g. --box-A 400")
            box = int(round(box_A / vmax))
            box += box % 2
        else:
            prior = (doc.get("config", {}).get("localize", {}) or {}).get("particle_diameter_A")
            box = default_box(sizes, vmax, prior, shape)
        check_picks(centres, shape, box, picks_path)
        check_k(k_req, len(picks), picks_path)
        outside = outside_fraction(centres, box, shape)
        keep = np.ones(len(picks), bool) if edge == "pad" else outside == 0
        if not keep.any():
            raise PicketError(picks_path, f"every pick lies within half a box ({box} voxels) of a face", "use edge='pad' or a smaller --box-A")
        idx = np.nonzero(keep)[0]
        check_k(k_req, len(idx), f"{picks_path} (picks not at a face)")
        c_keep = centres[idx]

        # 0: particle polarity from a sample of the picks (cryo-ET: protein darker than ice)
        with timings.stage("polarity"):
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(len(idx), size=min(len(idx), 256), replace=False))
            pol = []
            map_batches(image, c_keep[sample], box, shape, chunks, _polarity, pol.append, (), max_picks=256)
            polarity = float(np.sign(np.mean(pol)) or -1.0)
        # 1: descriptors, batch by batch (only these small arrays come back)
        with timings.stage("descriptors"):
            parts = []
            sz = None if sizes is None else sizes[idx]
            n_batches = map_batches(image, c_keep, box, shape, chunks, _describe, parts.append, (polarity, sz, families),
                                    label=f"classify {workflow}: descriptors of {len(idx)} picks", max_picks=max_picks_per_task)
            desc = {f: np.zeros((len(idx),) + np.asarray(parts[0][1][f]).shape[1:]) for f in parts[0][1]}
            for rows, d in parts:
                for f, v in d.items():
                    desc[f][rows] = v
            del parts
        # 2: classes
        with timings.stage("cluster"):
            x = dsc.whiten(desc, families, seed=seed)
            cl = cluster(x, k_req, seed)
        labels = np.zeros(len(picks), int)
        labels[idx] = cl.labels
        conf = np.zeros(len(picks))
        conf[idx] = cl.confidence
        # 3: aligned class sums (and the boxes for the stack export), batch by batch
        with atomic_path(final, overwrite=True) as tmp:
            tmp.mkdir(parents=True)
            with timings.stage("averages"):
                sums = np.zeros((cl.k + 1, box, box, box), np.float64)
                counts = np.zeros(cl.k + 1, np.int64)
                stack = outp.StackWriter(tmp / "subvolumes.mrcs", len(idx), box, vs) if export_subvolumes else None

                aligned_central = np.zeros(len(idx))

                def add(r):
                    s, c, rows, central, b = r
                    sums[:] += s
                    counts[:] += c
                    aligned_central[rows] = central
                    if b is not None:
                        stack.put(b[0], b[1])

                try:
                    map_batches(image, c_keep, box, shape, chunks, _sums, add, (cl.labels, desc["frame"], cl.k, polarity, export_subvolumes),
                                label=f"classify {workflow}: class averages", max_picks=max_picks_per_task)
                finally:
                    if stack is not None:
                        stack.close()
            averages = {k: (sums[k] / max(counts[k], 1)).astype(np.float32) for k in range(1, cl.k + 1)}
            # 4: junk flags (per class from the class's descriptors and average; per pick for outliers)
            with timings.stage("junk"):
                flags = jk.flag(desc, cl.labels, averages, polarity, box, aligned_central)
            table = jk.class_table(desc, cl.labels, averages, flags, vs, box)
            pick_junk = np.zeros(len(picks), bool)
            pick_reason = np.array([""] * len(picks), dtype=object)
            pick_junk[idx] = flags.pick_junk
            pick_reason[idx] = flags.pick_reason
            picks_out = picks.copy()
            picks_out["class"] = labels
            picks_out["class_confidence"] = np.round(conf, 4)
            picks_out["junk"] = pick_junk
            picks_out["junk_reason"] = pick_reason
            if edge == "pad":
                picks_out["outside_fraction"] = np.round(outside, 3)
            # 5: files
            with timings.stage("write"):
                name = Path(result_dir).name
                rln = relion_name(name, (doc.get("config") or {}).get("relion_tomo_name"))  # as the run's own STAR files
                paths = outp.write_picks_tables(tmp, picks_out, name, grid.source_shape, grid.source_voxel_A, workflow,
                                                drop_junk, star_name=rln)
                table.to_csv(tmp / "classes.csv", index=False, float_format="%.4g")
                paths["classes"] = str(tmp / "classes.csv")
                paths["averages"] = outp.write_averages(tmp, averages, vs)
                paths["gallery"] = str(outp.gallery(tmp / "gallery.png", averages, table, vs, f"{name} / {workflow}"))
                if export_subvolumes:
                    star = outp.subvolume_star(picks_out.iloc[idx], "subvolumes.mrcs", rln, grid.source_shape,
                                               grid.source_voxel_A, box, vs)
                    paths["subvolumes_star"] = str(outp.write_star(star, tmp / "subvolumes.star"))
                    paths["subvolumes"] = str(tmp / "subvolumes.mrcs")
            timings["total"] = round(time.perf_counter() - t0, 3)
            report = {
                "workflow": workflow, "picks": str(picks_path), "image": str(image), "n_picks": int(len(picks)),
                "box_vox": box, "box_A": box * vmax, "edge": edge, "picks_at_faces": int((outside > 0).sum()),
                "skipped": int((~keep).sum()), "polarity": "bright" if polarity > 0 else "dark", "families": list(families),
                "descriptor_dims": int(x.shape[1]), "classes_requested": classes if k_req is None else k_req, "k": cl.k,
                "bic": cl.bic, "junk_rules": jk.RULES, "junk_classes": [int(k) for k in table.loc[table.junk, "class"]],
                "n_junk_picks": int(pick_junk.sum()), "batches": n_batches, "timings_s": dict(timings), **environment(),
            }
            (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
            paths = {k: (v.replace(str(tmp), str(final)) if isinstance(v, str) else
                         {kk: vv.replace(str(tmp), str(final)) for kk, vv in v.items()}) for k, v in paths.items()}
        return ClassifyResult(final, len(picks), cl.k, table, paths, dict(timings))
