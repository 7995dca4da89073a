"""How long `collect` takes on a batch: N tomogram folders, the two default workflows (time, peak memory).

    python benchmarks/collect.py [--tomograms 50,200,800] [--picks 1000] [--repeats 3]

Every `run` ends with a collect over all folders of its --out, so in a SLURM array of N tasks each task pays it
once: this says when `--no-collect` and one `picket-dask collect` at the end are worth it. The folders are
written here (run.json, STAR and CSV picks of both workflows, random picks with scores; no images: collect
reads no image), the same files a run writes (io.picks.write_all).
"""

import argparse
import shutil
import statistics
from pathlib import Path

from _measure import measure, record

WORKFLOWS = ("gabor-gmm-ws", "gabor-gmm-cc")


def make_batch(root: Path, n: int, picks: int, seed: int = 0) -> Path:
    import numpy as np

    from picket_dask.io.picks import picks_frame, write_all
    from picket_dask.io.results import write_run

    rng = np.random.default_rng(seed)
    out = root / f"batch_{n}x{picks}"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shape, vs = (200, 1000, 1000), (10.0, 10.0, 10.0)
    for i in range(n):
        name = f"TS_{i:04d}"
        tdir = out / name
        paths, counts = {}, {}
        for wf in WORKFLOWS:
            k = int(rng.integers(picks // 2, picks * 3 // 2))
            df = picks_frame(rng.uniform(0, 1, (k, 3)) * shape, vs, rng.integers(50, 5000, k), None,
                             rng.normal(3, 2, k), rng.normal(0.2, 0.1, k))
            paths[wf] = write_all(df, tdir / "picks", wf, name, shape, vs, {"workflow": wf})
            counts[wf] = k
        write_run(tdir, {"name": name, "shape_zyx": list(shape), "voxel_size_A": list(vs), "picks": paths,
                         "n_picks": counts, "lamella": {"found": True, "ice_fraction": 0.5},
                         "context": {"mode": "auto", "masked_fraction": 0.03}, "timings_s": {"total": 30.0}})
    (out / "done").write_text("")
    return out


def case(out: str) -> dict:
    from picket_dask.collect import collect

    done = collect(out)
    return {"picks_collected": sum(c.n_picks for c in done.values())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tomograms", default="50,200,800")
    ap.add_argument("--picks", type=int, default=1000, help="mean picks per tomogram and workflow")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    for n in (int(x) for x in a.tomograms.split(",")):
        out = make_batch(Path(a.workdir), n, a.picks)
        runs = [measure(case, str(out)) for _ in range(a.repeats)]
        errors = [r["error"] for r in runs if r.get("error")]
        if errors:
            raise SystemExit(f"collect failed: {errors[0]}")
        row = {"tomograms": n, "picks_per_tomogram": a.picks, "workflows": len(WORKFLOWS),
               "picks_collected": runs[0]["picks_collected"], "repeats": a.repeats,
               "wall_s_median": statistics.median(r["wall_s"] for r in runs),
               "wall_s": ";".join(str(r["wall_s"]) for r in runs),
               "peak_rss_MiB": max(r["peak_rss_MiB"] for r in runs), "label": a.label}
        record("collect", row)
