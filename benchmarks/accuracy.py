"""Accuracy of all twelve workflows on simulated tomograms (sparse and crowded, several seeds).

    python benchmarks/accuracy.py [--seeds 0 1 2] [--preset small] [--max-fit-voxels 250000]
                                  [--min-distance-vox 15] [--fit-on 0] [--noise 1.5]

Prints the per-tomogram table and the median per workflow and condition, and writes
benchmarks/results/accuracy.csv (all rows) and accuracy_summary.csv.
"""

import argparse
import time
from pathlib import Path

import pandas as pd

from _measure import RESULTS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--max-fit-voxels", type=int, default=250_000)
    ap.add_argument("--min-distance-vox", type=int, default=15)
    ap.add_argument("--orientation", default="size")
    ap.add_argument("--fit-on", type=int, default=0)
    ap.add_argument("--workflows", default="all")
    ap.add_argument("--workdir", default="/tmp/picket-accuracy")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    import os

    os.environ.setdefault("PICKET_DASK_QUIET", "1")
    from picket_dask.evaluate import evaluate_run
    from picket_dask.simulate import simulate
    from picket_dask.workflows import run

    wd = Path(a.workdir)
    rows = []
    for crowded in (False, True):
        cond = "crowded" if crowded else "sparse"
        data = wd / f"data-{cond}-n{a.noise}"
        tomos = [simulate(data, a.preset, s, crowded, a.noise)["tomogram"] for s in a.seeds]
        out = wd / f"out-{cond}-{a.tag or 'default'}"
        t0 = time.perf_counter()
        run(tomos, out, a.workflows.split(","), max_fit_voxels=a.max_fit_voxels, min_distance_vox=a.min_distance_vox,
            orientation=a.orientation, fit_on=a.fit_on, concurrent=1)
        secs = time.perf_counter() - t0
        df = evaluate_run(out, data, 100.0)
        df["condition"] = cond
        df["seconds_all_workflows_per_tomogram"] = round(secs / len(tomos), 1)
        rows.append(df)
    table = pd.concat(rows)
    for k, v in (("preset", a.preset), ("noise", a.noise), ("max_fit_voxels", a.max_fit_voxels),
                 ("min_distance_vox", a.min_distance_vox), ("orientation", a.orientation), ("fit_on", a.fit_on), ("tag", a.tag)):
        table[k] = v
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "accuracy.csv"
    table.to_csv(path, mode="a", header=not path.exists(), index=False)
    summary = (table.groupby(["workflow", "condition"])[["precision", "recall", "f1", "relative_recall", "n_picks"]]
               .median().unstack("condition"))
    summary = summary.sort_values(("f1", "sparse"), ascending=False)
    print(summary.round(3).to_string())
    s = summary.copy()
    s.columns = [f"{m}_{c}" for m, c in s.columns]
    s = s.reset_index()
    for k, v in (("noise", a.noise), ("max_fit_voxels", a.max_fit_voxels), ("min_distance_vox", a.min_distance_vox),
                 ("orientation", a.orientation), ("fit_on", a.fit_on), ("tag", a.tag)):
        s[k] = v
    spath = RESULTS / "accuracy_summary.csv"
    s.to_csv(spath, mode="a", header=not spath.exists(), index=False)


if __name__ == "__main__":
    main()
