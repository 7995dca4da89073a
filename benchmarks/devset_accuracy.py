"""Accuracy of the workflows on a folder of realistic tomograms with truth (the dev set's layout).

    python benchmarks/devset_accuracy.py [--data ../shared/devset] [--workflows all]
                                         [--preset default|reference] [--tag NAME] [-- extra run options]

The folder holds NAME.mrc and NAME_truth.csv (x, y, z voxels, particle_type) and optionally
NAME_context.csv (membranes, gold, ice: object, x, y, z, radius_nm). Every workflow runs on every
tomogram; per workflow x tomogram the script writes precision, recall, F1, relative recall, the
pick count beside them, the one-to-one scores (``matched_precision``, ``matched_recall``, ``matched_f1``:
each particle and each pick matched at most once; ``duplicates``: picks near a particle left unmatched),
and the fraction of picks within 5 nm of a gold bead or a membrane
(``near_context``; ``near_visible_context``: of a bead or a membrane patch outside the missing wedge,
see context_near; ``near_context_false``: near and not a true positive; ``recall_by_type``: JSON of the
recall per truth particle type), to
benchmarks/results/devset_accuracy.csv, and prints the table with the run time. ``--rescore``:
score the outputs already in the work folder instead of running again.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _measure import RESULTS

HERE = Path(__file__).resolve().parent
DEVSET = HERE.parent.parent / "shared" / "devset"


def context_near(picks_zyx: np.ndarray, context_csv: Path, voxel_A: float, within_A: float = 50.0,
                 tilt_max_deg: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Per pick (n, z y x voxels): is it within ``within_A`` of a membrane surface or a gold bead
    (dev-set geometry: membranes are bilayer spheres, distance | |p - c| - r |; gold are balls,
    distance |p - c| - r)? And of a *visible* one: the nearest membrane point's normal outside the
    missing wedge of a tilt series tilted about y up to +-``tilt_max_deg`` (|n_z| <= tan(tilt) |n_x|).

    Why the second: a membrane's density varies only along its normal, so its signal lies on the line
    of spatial frequencies along that normal; where that line falls in the missing wedge, the
    membrane is absent from the tomogram (the crowded dev tomogram's large sheet: 99 % of its
    near-band), and no picker can see it. Its 5 nm band is still 5.4 % of that slab's volume.
    """
    n = len(picks_zyx)
    near, visible = np.zeros(n, bool), np.zeros(n, bool)
    if n == 0 or not context_csv.exists():
        return near, visible
    ctx = pd.read_csv(context_csv)
    wedge_tan = np.tan(np.radians(tilt_max_deg))
    for _, o in ctx.iterrows():
        c = np.array([o.z, o.y, o.x], float)
        r = float(o.radius_nm) * 10.0 / voxel_A
        v = picks_zyx - c
        dist = np.linalg.norm(v, axis=1)
        d = dist - r
        seen = np.ones(n, bool)
        if o.object in ("vesicle", "sheet"):
            d = np.abs(d)
            seen = np.abs(v[:, 0]) <= wedge_tan * np.abs(v[:, 2])  # the normal (p - c) outside the wedge
        elif o.object != "gold":
            continue
        hit = d * voxel_A <= within_A
        near |= hit
        visible |= hit & seen
    return near, visible


def true_positive(picks_zyx: np.ndarray, truth_csv: Path, within_vox: float) -> np.ndarray:
    """Per pick: is a truth centre within ``within_vox`` voxels (the F1's rule, evaluate's own test)?"""
    from picket_dask.evaluate import within, zyx

    return within(picks_zyx, zyx(pd.read_csv(truth_csv)), within_vox)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEVSET))
    ap.add_argument("--workflows", default="all")
    ap.add_argument("--preset", default=None, help="run preset (default: the package's default)")
    ap.add_argument("--workdir", default="/tmp/picket-devset")
    ap.add_argument("--tag", default="")
    ap.add_argument("--only", default=None, help="comma-separated tomogram names")
    ap.add_argument("--rescore", action="store_true", help="score existing outputs in --workdir/--tag")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `picket-dask run` options")
    a = ap.parse_args()
    os.environ.setdefault("PICKET_DASK_QUIET", "1")
    from picket_dask.cli import main as cli
    from picket_dask.evaluate import evaluate_files
    from picket_dask.io.picks import read_points

    data = Path(a.data)
    tomos = sorted(data.glob("*.mrc"))
    if a.only:
        tomos = [t for t in tomos if t.stem in a.only.split(",")]
    if not tomos:
        raise SystemExit(f"{data}: no NAME.mrc here{' named in --only' if a.only else ''}; "
                         "give --data a folder in the dev set's layout (benchmarks/devset_variants.py makes variants)")
    rows = []
    for t in tomos:
        out = Path(a.workdir) / (a.tag or "run") / t.stem
        argv = ["run", str(t), "--out", str(out), "--workflows", a.workflows, "--cluster", "threads"]
        if a.preset:
            argv += ["--preset", a.preset]
        argv += [x for x in a.extra if x != "--"]
        t0 = time.perf_counter()
        rescore = a.rescore and (out / t.stem / "run.json").exists()
        rc = 0 if rescore else cli(argv)
        secs = float("nan") if rescore else time.perf_counter() - t0
        if rc:
            raise SystemExit(f"run failed on {t} (exit {rc})")
        doc = json.loads((out / t.stem / "run.json").read_text())
        truth = data / f"{t.stem}_truth.csv"
        for wf, paths in doc["picks"].items():
            csv = Path(paths["csv"])
            if not csv.is_absolute():
                csv = out / t.stem / csv
            s = evaluate_files(csv, truth, doc["shape_zyx"], doc["voxel_size_A"], 100.0)
            picks = read_points(csv, max(doc["voxel_size_A"]))
            zyx = picks[["z", "y", "x"]].to_numpy(float)
            near, visible = context_near(zyx, data / f"{t.stem}_context.csv", max(doc["voxel_size_A"]))
            true_pos = true_positive(zyx, truth, 100.0 / max(doc["voxel_size_A"]))
            rows.append({"tomogram": t.stem, "workflow": wf, "n_picks": s.n_picks, "n_truth": s.n_truth,
                         "precision": s.precision, "recall": s.recall, "f1": s.f1,
                         "relative_recall": s.relative_recall,
                         # one to one (evaluate.py): duplicates on one particle count as false picks
                         "matched_precision": s.matched_precision, "matched_recall": s.matched_recall,
                         "matched_f1": s.matched_f1, "duplicates": s.duplicates,
                         # recall per particle type (truth's particle_type): which kinds of particle are missed
                         "recall_by_type": json.dumps({k: round(v, 3) for k, v in s.recall_by_type.items()}, sort_keys=True),
                         "near_context": float(near.mean()) if len(near) else float("nan"),
                         "near_visible_context": float(visible.mean()) if len(near) else float("nan"),
                         "near_context_false": float((near & ~true_pos).mean()) if len(near) else float("nan"),
                         "run_seconds_all_workflows": round(secs, 1), "preset": doc.get("preset", ""),
                         "tag": a.tag, "options": " ".join(a.extra), "data": data.name,
                         "working_voxel_A": max((doc.get("working_grid") or {}).get("voxel_size_A") or doc["voxel_size_A"])})
    table = pd.DataFrame(rows)
    table["date"] = time.strftime("%Y-%m-%d %H:%M")
    table["commit"] = os.popen(f"git -C {HERE} rev-parse --short HEAD").read().strip()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "devset_accuracy.csv"
    if path.exists():  # columns added over time: rewrite with their union, old rows blank in new ones
        pd.concat([pd.read_csv(path), table], ignore_index=True).to_csv(path, index=False)
    else:
        table.to_csv(path, index=False)
    wide = table.pivot(index="workflow", columns="tomogram", values=["f1", "n_picks", "precision", "recall", "matched_f1",
                                                                       "duplicates", "near_context", "near_visible_context"])
    wide = wide.sort_values(wide.columns[0], ascending=False)
    print(wide.round(3).to_string())
    print(f"run seconds: {table.groupby('tomogram').run_seconds_all_workflows.first().to_dict()}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
