"""One particle file per workflow for every tomogram of a run's output folder.

RELION 5 reads a data set's particles from one STAR file (its particle set: ``rlnTomoName`` names
each row's tomogram), and a batch of tomograms (a folder, a SLURM array of runs into one ``--out``)
leaves one picks file per tomogram in ``OUT/NAME/picks/``. ``collect`` gathers them::

    OUT/WF.star   RELION 5 particles of all tomograms: rlnTomoName, rlnCenteredCoordinate{X,Y,Z}Angst
                  (each tomogram's own centre and voxel size), rlnCoordinate{X,Y,Z}, rlnAutopickFigureOfMerit
    OUT/WF.csv    the tomograms' CSV picks with a first column ``tomogram``
    OUT/summary.csv  one row per tomogram and workflow: picks, picks per cubic micrometre of sample, scores,
                  the lamella, context and mask found, the working grid, run time (``summary``): which
                  tomograms of a batch to look at first

for each workflow WF; ``min_score`` keeps the picks scoring at least that, written as
``WF_min-score-S.{star,csv}`` so the full set is never replaced by a cut, and ``drop_junk`` leaves out
the picks ``picket-dask classify`` flagged junk (``WF_no-junk.*``; a tomogram not classified is kept whole). ``run`` calls it at the end,
over every tomogram folder in ``--out`` (earlier runs' too); ``picket-dask collect OUT`` does it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ALL_WORKFLOWS
from .errors import PicketError
from .io.picks import read_star_particles, relion_name, write_csv, write_star_frame
from .io.results import batch_runs


@dataclass
class Collected:
    """One workflow's collected particles: where they were written and what went in."""

    workflow: str
    star: Path
    csv: Path
    n_picks: int
    tomograms: list[str]
    missing: list[str] = field(default_factory=list)  # tomogram folders without this workflow's picks
    unclassified: list[str] = field(default_factory=list)  # with drop_junk: tomograms kept whole (no current classes)


def junk_flags(folder: Path, workflow: str, table: pd.DataFrame) -> np.ndarray | None:
    """Per pick of ``table`` (a tomogram's CSV picks of ``workflow``), whether ``picket-dask classify`` flagged
    it junk (``folder/classes/WF/picks.csv``: the same rows plus class and junk columns); None when the
    workflow was not classified, or its classes are of other picks (the workflow was run again since)."""
    f = Path(folder) / "classes" / workflow / "picks.csv"
    if not f.is_file():
        return None
    cls = pd.read_csv(f, comment="#")
    xyz = ["x", "y", "z"]
    if "junk" not in cls.columns or len(cls) != len(table) or not np.allclose(cls[xyz].to_numpy(float),
                                                                              table[xyz].to_numpy(float), atol=1e-3):
        return None
    return cls["junk"].astype(str).str.lower().isin(("true", "1")).to_numpy()


def _read(path: Path, reader) -> pd.DataFrame:
    try:
        return reader(path)
    except Exception as exc:  # truncated, or not a STAR / CSV file: one line naming it
        raise PicketError(path, f"cannot be read ({type(exc).__name__}: {exc})",
                          "run its tomogram again, or move its folder out of the run's --out") from None


def _read_picks(paths: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tomogram's STAR rows (as written: RELION gets the numbers of the tomogram's own STAR) and CSV rows,
    both in score order, row for row."""
    star = _read(paths["star"], read_star_particles)
    table = _read(paths["csv"], lambda f: pd.read_csv(f, comment="#"))
    if len(star) != len(table):
        raise PicketError(paths["star"].parent, f"holds {len(star)} STAR and {len(table)} CSV picks",
                          "run the tomogram again (a file was replaced by hand?)")
    return star, table


def _kept(star: pd.DataFrame, table: pd.DataFrame, min_score: float | None, junk: np.ndarray | None,
          path: Path) -> np.ndarray:
    """Rows to collect: with ``min_score`` those whose STAR figure of merit is at least it, with ``junk`` (the
    classes' flags, ``junk_flags``) those not flagged."""
    keep = np.ones(len(table), bool) if junk is None else ~junk
    if min_score is not None:
        if "rlnAutopickFigureOfMerit" not in star.columns:
            raise PicketError(path, "has no rlnAutopickFigureOfMerit to cut at --min-score",
                              "run the tomogram again with this version (every pick is scored), or collect without --min-score")
        keep &= star["rlnAutopickFigureOfMerit"].to_numpy(float) >= min_score
    return keep


def stem(workflow: str, min_score: float | None, drop_junk: bool = False) -> str:
    """File stem of a workflow's collected particles: ``WF``, ``WF_min-score-S`` with a cut, ``..._no-junk``
    without the picks classify flagged junk."""
    return workflow + ("" if min_score is None else f"_min-score-{min_score:g}") + ("_no-junk" if drop_junk else "")


def collect(out: str | Path, workflows: list[str] | None = None, min_score: float | None = None,
            drop_junk: bool = False, relion_tomo_name: str | None = None) -> dict[str, Collected]:
    """Gather every tomogram's picks under ``out`` (a ``run``'s output folder) into one RELION 5 STAR
    and one CSV per workflow (module docstring). ``workflows``: those to gather (default: every
    workflow any tomogram has picks of); ``min_score``: keep picks scoring at least this; ``drop_junk``:
    leave out the picks ``picket-dask classify`` flagged junk (tomograms without current classes whole);
    ``relion_tomo_name``: the STAR's rlnTomoName from each tomogram's name by this pattern (io.picks.relion_name;
    default: the rows' names as each tomogram's STAR has them)."""
    out = Path(out)
    folders, docs = batch_runs(out)
    rln = {d["name"]: relion_name(d["name"], relion_tomo_name) for d in docs} if relion_tomo_name else {}
    have = [{wf: {f: Path(paths[f]) for f in ("star", "csv")} for wf, paths in d.get("picks", {}).items()
             if all(paths.get(f) and Path(paths[f]).is_file() for f in ("star", "csv"))}
            for d in docs]  # per folder: workflow -> its STAR and CSV
    found = [wf for wf in ALL_WORKFLOWS if any(wf in h for h in have)]
    for wf in workflows or []:
        if wf not in found:
            raise PicketError(wf, f"has no picks in {out}", f"collect one it has ({', '.join(found) or 'none'}) or run it first")
    result, scores = {}, {}  # scores: (tomogram folder, workflow) -> its picks' scores, for the summary
    for wf in workflows or found:
        stars, tables, names, missing, unclassified = [], [], [], [], []
        for folder, d, h in zip(folders, docs, have):
            if wf not in h:
                missing.append(d["name"])
                continue
            star, df = _read_picks(h[wf])
            scores[(folder, wf)] = df["score"] if "score" in df.columns else pd.Series(dtype=float)
            junk = junk_flags(folder, wf, df) if drop_junk else None
            if drop_junk and junk is None:
                unclassified.append(d["name"])
            keep = _kept(star, df, min_score, junk, h[wf]["star"])
            star, df = star.loc[keep].reset_index(drop=True), df.loc[keep].reset_index(drop=True)
            if rln:
                star["rlnTomoName"] = rln[d["name"]]
            stars.append(star)
            tables.append(df.assign(tomogram=d["name"])[["tomogram", *df.columns]])
            names.append(d["name"])
        s = stem(wf, min_score, drop_junk)
        star = write_star_frame(pd.concat(stars, ignore_index=True), out / f"{s}.star")
        table = pd.concat(tables, ignore_index=True)
        csv_path = write_csv(table, out / f"{s}.csv")  # x, y, z in the voxels of each row's tomogram
        result[wf] = Collected(wf, star, csv_path, len(table), names, missing, unclassified)
    runs = [(d, {wf: scores[(f, wf)] if (f, wf) in scores else picks_scores(p["csv"]) for wf, p in h.items()})
            for f, d, h in zip(folders, docs, have)]  # the workflows not collected now: their scores read here
    write_csv(summary(runs), out / SUMMARY, comment=SUMMARY_COMMENT)
    return result


SUMMARY = "summary.csv"
SUMMARY_COMMENT = "# one row per tomogram and workflow of this folder (picket_dask/collect.py: summary)"


def picks_scores(csv: Path) -> pd.Series | None:
    """The score column of a picks CSV (empty without one), None when the file cannot be read."""
    try:
        return pd.read_csv(csv, comment="#", usecols=lambda c: c == "score").get("score", pd.Series(dtype=float))
    except Exception:  # an unreadable picks file: its summary row says so (collect names it when it gathers it)
        return None


def summary(runs: list[tuple[dict, dict[str, pd.Series | None]]]) -> pd.DataFrame:
    """One row per tomogram and workflow from each tomogram's run.json and its picks' scores (``runs``: (run.json
    document, workflow -> scores, None where the picks file was unreadable)): n_picks, picks_per_um3 (per cubic micrometre of the sample: the
    lamella's ice, or the whole volume where none was found), score quartiles, the lamella, the share of the
    volume masked as context (gold, membranes) and kept by ``--mask``, voxel size, resampling, run time."""
    rows = []
    for d, per_wf in runs:
        vs = [float(v) for v in d["voxel_size_A"]]
        volume_um3 = float(np.prod(d["shape_zyx"])) * float(np.prod(vs)) * 1e-12  # A^3 -> um^3
        lam, ctx, mask = d.get("lamella") or {}, d.get("context") or {}, d.get("mask") or {}
        ice = float(lam.get("ice_fraction", 1.0)) if lam.get("found") else 1.0
        sample_um3 = volume_um3 * ice * float(mask.get("fraction", 1.0))
        for wf, scores in per_wf.items():
            unreadable = scores is None
            scores = pd.Series(dtype=float) if unreadable else scores
            q = scores.quantile([0.25, 0.5, 0.75]).to_numpy() if len(scores) else [np.nan] * 3
            n = int(d.get("n_picks", {}).get(wf, len(scores)))
            rows.append({
                "tomogram": d["name"], "workflow": wf, "n_picks": n,
                "picks_per_um3": round(n / sample_um3, 1) if sample_um3 > 0 else np.nan,
                "score_q25": q[0], "score_median": q[1], "score_q75": q[2],
                "lamella_found": bool(lam.get("found", False)), "ice_fraction": round(ice, 4),
                "context_fraction": ctx.get("masked_fraction", 0.0) if ctx.get("mode") == "auto" else np.nan,
                "mask_fraction": mask.get("fraction", np.nan),
                "voxel_size_A": vs[0], "resampled": bool((d.get("working_grid") or {}).get("resampled", False)),
                "seconds": (d.get("timings_s") or {}).get("total", np.nan),
                "note": "; ".join(t for t in (
                    "picks file unreadable" if unreadable else "" if n else "no picks",
                    "" if lam.get("found", True) else f"lamella not found: {lam.get('reason', '')}",
                    f"context: {ctx['warning']}" if ctx.get("warning") else "") if t),
            })
    return _batch_outliers(pd.DataFrame(rows))


OUTLIER_FACTOR = 4.0  # picks per cubic micrometre this many times above or below the batch's median: look at it
OUTLIER_MIN_BATCH = 5  # tomograms a workflow needs in the folder before a median says what is usual


def _batch_outliers(table: pd.DataFrame) -> pd.DataFrame:
    """Add a note to the rows whose picks per cubic micrometre lie OUTLIER_FACTOR times above or below their
    workflow's median over the folder's tomograms (with at least OUTLIER_MIN_BATCH of them): one sample
    imaged alike gives similar densities, so such a tomogram is where a fit went wrong (picks on noise or
    contamination, or a particle class that caught only a few), or where the sample differs."""
    if table.empty:
        return table
    for wf, rows in table.groupby("workflow"):
        dens = rows["picks_per_um3"].dropna()
        dens = dens[dens > 0]  # a tomogram without picks has its own note, and would pull the median down
        if len(dens) < OUTLIER_MIN_BATCH:
            continue
        med = float(np.median(dens))
        for i, v in dens.items():
            ratio = v / med
            if ratio >= OUTLIER_FACTOR or ratio <= 1 / OUTLIER_FACTOR:
                text = (f"picks per um^3 {ratio:.2g} x the median of the {len(dens)} tomograms with picks in this folder "
                        f"({med:,.0f})")
                table.loc[i, "note"] = "; ".join(t for t in (table.loc[i, "note"], text) if t)
    return table
