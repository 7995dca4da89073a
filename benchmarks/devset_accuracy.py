"""Accuracy of the workflows on a folder of realistic tomograms with truth (the dev set's layout).

    python benchmarks/devset_accuracy.py [--data ../shared/devset] [--workflows all]
                                         [--preset default|reference] [--tag NAME] [-- extra run options]

The folder holds NAME.mrc and NAME_truth.csv (x, y, z voxels, particle_type) and optionally
NAME_context.csv (membranes, gold, ice: object, x, y, z, radius_nm). Every workflow runs on every
tomogram; per workflow x tomogram the script writes precision, recall, F1, relative recall, the
pick count beside them, and the fraction of picks within 5 nm of a gold bead or a membrane, to
benchmarks/results/devset_accuracy.csv, and prints the table with the run time.
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


def context_fraction(picks_zyx: np.ndarray, context_csv: Path, voxel_A: float, within_A: float = 50.0) -> float:
    """Fraction of picks within ``within_A`` of a membrane surface or a gold bead (dev-set geometry:
    membranes are bilayer spheres, distance | |p - c| - r |; gold are balls, distance |p - c| - r)."""
    if len(picks_zyx) == 0 or not context_csv.exists():
        return float("nan")
    ctx = pd.read_csv(context_csv)
    near = np.zeros(len(picks_zyx), bool)
    for _, o in ctx.iterrows():
        c = np.array([o.z, o.y, o.x], float)
        r = float(o.radius_nm) * 10.0 / voxel_A
        d = np.linalg.norm(picks_zyx - c, axis=1) - r
        if o.object in ("vesicle", "sheet"):
            d = np.abs(d)
        elif o.object != "gold":
            continue
        near |= d * voxel_A <= within_A
    return float(near.mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEVSET))
    ap.add_argument("--workflows", default="all")
    ap.add_argument("--preset", default=None, help="run preset (default: the package's default)")
    ap.add_argument("--workdir", default="/tmp/picket-devset")
    ap.add_argument("--tag", default="")
    ap.add_argument("--only", default=None, help="comma-separated tomogram names")
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
    rows = []
    for t in tomos:
        out = Path(a.workdir) / (a.tag or "run") / t.stem
        argv = ["run", str(t), "--out", str(out), "--workflows", a.workflows, "--cluster", "threads"]
        if a.preset:
            argv += ["--preset", a.preset]
        argv += [x for x in a.extra if x != "--"]
        t0 = time.perf_counter()
        rc = cli(argv)
        secs = time.perf_counter() - t0
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
            near = context_fraction(picks[["z", "y", "x"]].to_numpy(float), data / f"{t.stem}_context.csv",
                                    max(doc["voxel_size_A"]))
            rows.append({"tomogram": t.stem, "workflow": wf, "n_picks": s.n_picks, "n_truth": s.n_truth,
                         "precision": s.precision, "recall": s.recall, "f1": s.f1,
                         "relative_recall": s.relative_recall, "near_context": near,
                         "run_seconds_all_workflows": round(secs, 1), "preset": doc.get("preset", ""),
                         "tag": a.tag, "options": " ".join(a.extra)})
    table = pd.DataFrame(rows)
    table["date"] = time.strftime("%Y-%m-%d %H:%M")
    table["commit"] = os.popen(f"git -C {HERE} rev-parse --short HEAD").read().strip()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "devset_accuracy.csv"
    table.to_csv(path, mode="a", header=not path.exists(), index=False)
    wide = table.pivot(index="workflow", columns="tomogram", values=["f1", "n_picks", "precision", "recall", "near_context"])
    wide = wide.sort_values(wide.columns[0], ascending=False)
    print(wide.round(3).to_string())
    print(f"run seconds: {table.groupby('tomogram').run_seconds_all_workflows.first().to_dict()}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
