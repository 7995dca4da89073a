"""De novo classes of the default workflow's picks on the crowded dev-set tomogram (issue 13).

    python benchmarks/classify.py [--tomogram ../shared/devset/small_crowded_s3003.mrc]
                                  [--out /tmp/cls-run] [--reuse] [--timing-picks 2000] [--study]

1. ``picket-dask run TOMO --workflows W --out OUT`` with W = picket_dask.config.DEFAULT_WORKFLOWS[0]
   (in a fresh process: wall time and peak RSS of producing the picks);
2. ``classify_picks(OUT/NAME, W)`` in a fresh process (wall, peak RSS);
3. against NAME_truth.csv (particle_type) at 100 A: the adjusted Rand index between the classes and
   the true types over the matched picks; precision and recall of all picks and of the picks left
   after dropping the junk ones; with NAME_context.csv, the fraction of junk and kept picks within
   50 A of a membrane, gold or ice;
4. timing at ~2000 picks: ``--timing-picks N`` classifies N picks drawn (with repetition, +-2 voxel
   jitter) from the run's picks, against the run's time to produce its picks.

``--study``: the descriptor-family study behind ``classify.descriptors.DEFAULT_FAMILIES`` (ARI of
the auto-K classes and of fixed K = 3, 5, 8 over two seeds, per family alone, all, all but one).
Rows go to benchmarks/results/classify.csv; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from _measure import measure, record

HERE = Path(__file__).resolve().parent
DEVSET = HERE.parent.parent / "shared" / "devset"


def run_picks(tomo: str, out: str, workflow: str) -> dict:
    from picket_dask.cli import main

    rc = main(["run", tomo, "--out", out, "--workflows", workflow, "--cluster", "threads"])
    return {"rc": rc}


def classify(result_dir: str, workflow: str, out: str | None = None) -> dict:
    from picket_dask.classify import classify_picks

    r = classify_picks(result_dir, workflow, out=out)
    return {"k": r.k, "n_classified": r.n_picks, "stages": ";".join(f"{k}={v:.1f}" for k, v in r.timings.items())}


def near_context(zyx: np.ndarray, context_csv: Path, voxel_A: float, within_A: float = 50.0) -> np.ndarray:
    """Which picks lie within ``within_A`` of a membrane (bilayer sphere), gold bead or ice blob."""
    near = np.zeros(len(zyx), bool)
    if not context_csv.exists():
        return near
    for _, o in pd.read_csv(context_csv).iterrows():
        d = np.linalg.norm(zyx - np.array([o.z, o.y, o.x]), axis=1) - float(o.radius_nm) * 10.0 / voxel_A
        d = np.abs(d) if o.object in ("vesicle", "sheet") else d
        near |= d * voxel_A <= within_A
    return near


def scores(classes_dir: Path, truth_csv: Path, context_csv: Path, shape, voxel_A: float) -> dict:
    from scipy.spatial import cKDTree
    from sklearn.metrics import adjusted_rand_score

    from picket_dask.evaluate import score, threshold_vox

    picks = pd.read_csv(classes_dir / "picks.csv", comment="#")
    truth = pd.read_csv(truth_csv)
    zyx, tz = picks[["z", "y", "x"]].to_numpy(float), truth[["z", "y", "x"]].to_numpy(float)
    thr = threshold_vox(100.0, (voxel_A,) * 3)
    d, j = cKDTree(tz).query(zyx)
    matched = d <= thr
    types = truth["particle_type"].to_numpy()[j]
    junk = picks["junk"].to_numpy(bool)
    before = score(zyx, tz, shape, thr)
    after = score(zyx[~junk], tz, shape, thr)
    ctx = near_context(zyx, context_csv, voxel_A)
    classes = pd.read_csv(classes_dir / "classes.csv")
    # per class, the true type most of its picks lie on (unmatched picks count against it): is one class one kind?
    label = np.where(matched, types, "none")
    comp = pd.crosstab(picks["class"].to_numpy(), label)
    comp = comp.drop(columns="none", errors="ignore").reindex(index=comp.index, fill_value=0)
    sizes = picks["class"].value_counts()
    purity = {int(c): (str(comp.loc[c].idxmax()), round(float(comp.loc[c].max() / sizes[c]), 3)) for c in comp.index
              if comp.loc[c].sum()}
    best = max(purity.items(), key=lambda kv: kv[1][1]) if purity else (0, ("", float("nan")))
    return {
        "n_picks": len(picks), "k": int(picks["class"].max()), "matched": int(matched.sum()),
        "ari_types": round(float(adjusted_rand_score(types[matched], picks["class"][matched])), 3),
        "n_types_matched": int(len(set(types[matched]))),
        "junk_classes": int(classes["junk"].sum()), "junk_picks": int(junk.sum()),
        "junk_picks_unmatched": int((junk & ~matched).sum()),
        "precision": round(before.precision, 3), "recall": round(before.recall, 3),
        "precision_clean": round(after.precision, 3), "recall_clean": round(after.recall, 3),
        "d_precision": round(after.precision - before.precision, 3), "d_recall": round(after.recall - before.recall, 3),
        "near_context_junk": round(float(ctx[junk].mean()), 3) if junk.any() else float("nan"),
        "near_context_kept": round(float(ctx[~junk].mean()), 3) if (~junk).any() else float("nan"),
        "junk_reasons": "; ".join(f"{r} x{n}" for r, n in picks.loc[junk, "junk_reason"].value_counts().items()),
        "purest_class": f"class {best[0]}: {best[1][1]:.0%} of its {int(sizes.get(best[0], 0))} picks on {best[1][0]}",
        "class_types": "; ".join(f"{c}: {t} {f:.0%}" for c, (t, f) in sorted(purity.items())),
    }


def resample_picks(src: Path, dst_dir: Path, n: int, workflow: str, seed: int = 0) -> None:
    """OUT2/NAME with the image linked and N picks drawn from the run's picks (jittered +-2 voxels)."""
    rng = np.random.default_rng(seed)
    picks = pd.read_csv(src / "picks" / f"{workflow}.csv", comment="#")
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / "picks").mkdir(exist_ok=True)
    image = dst_dir / f"{dst_dir.name}.zarr"
    if not image.exists():
        os.symlink((src / f"{src.name}.zarr").resolve(), image)
    rows = picks.iloc[rng.integers(0, len(picks), n)].reset_index(drop=True)
    from picket_dask.io.omezarr import open_image

    shape = np.array(open_image(image)[0].shape) - 1
    for a, ax in enumerate("zyx"):
        rows[ax] = np.clip(rows[ax] + rng.uniform(-2, 2, n), 0, shape[a])
    rows.to_csv(dst_dir / "picks" / f"{workflow}.csv", index=False)


def earlier_picks_wall(name: str, workflow: str) -> float | None:
    """--reuse: the wall time of the run that made the picks, from its row in results/classify.csv."""
    path = HERE / "results" / "classify.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    df = df[(df["case"] == "picks") & (df["workflow"] == workflow) & (df["tomogram"] == name)]
    return float(df["wall_s"].iloc[-1]) if len(df) else None


def study(result_dir: Path, workflow: str, truth_csv: Path, only: list[str] | None = None) -> list[dict]:
    """ARI per descriptor-family set on the matched picks (the choice of DEFAULT_FAMILIES)."""
    from scipy.spatial import cKDTree
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from picket_dask.classify import descriptors as dsc
    from picket_dask.classify.cluster import cluster
    from picket_dask.classify.extract import default_box, map_batches
    from picket_dask.io.omezarr import open_image

    picks = pd.read_csv(result_dir / "picks" / f"{workflow}.csv", comment="#")
    data, vs, _ = open_image(result_dir / f"{result_dir.name}.zarr")
    c = picks[["z", "y", "x"]].to_numpy(float)
    box = default_box(picks["size_vox"].to_numpy(), float(max(vs)), None, data.shape)
    sizes = picks["size_vox"].to_numpy(float)
    parts = []
    map_batches(result_dir / f"{result_dir.name}.zarr", c, box, data.shape, [x[0] for x in data.chunks],
                lambda b, r: (r, dsc.describe(b, -1.0, sizes[r])), parts.append)
    desc = {f: np.zeros((len(c),) + np.asarray(parts[0][1][f]).shape[1:]) for f in parts[0][1]}
    for rows, d in parts:
        for f, v in d.items():
            desc[f][rows] = v
    truth = pd.read_csv(truth_csv)
    d, j = cKDTree(truth[["z", "y", "x"]].to_numpy()).query(c)
    m = d <= 10
    typ = truth["particle_type"].to_numpy()[j]
    F = dsc.FAMILIES
    sets = {f: (f,) for f in F} | {"all": F} | {f"all-{f}": tuple(g for g in F if g != f) for f in F}
    sets |= {f"spectrum+{f}": ("spectrum", f) for f in F if f != "spectrum"}  # the best single family + one
    if only:
        sets = {k: v for k, v in sets.items() if k in only}
    rows = []
    with threadpool_limits(1):
        for name, fams in sets.items():
            x = dsc.whiten(desc, fams)
            fixed = [ari(typ[m], GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=2, random_state=s)
                         .fit(x).predict(x)[m]) for k in (3, 5, 8) for s in (0, 1)]
            cl = cluster(x, None, 0)
            rows.append({"case": "study", "workflow": workflow, "families": name, "dims": x.shape[1], "box": box,
                         "k": cl.k, "ari_types": round(ari(typ[m], cl.labels[m]), 3), "ari_fixed_k": round(float(np.mean(fixed)), 3)})
            print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tomogram", default=str(DEVSET / "small_crowded_s3003.mrc"))
    ap.add_argument("--out", default="/tmp/cls-run")
    ap.add_argument("--workflow", help="default: picket_dask.config.DEFAULT_WORKFLOWS[0]")
    ap.add_argument("--reuse", action="store_true", help="classify the picks already in --out (no run)")
    ap.add_argument("--timing-picks", type=int, default=2000)
    ap.add_argument("--study", action="store_true")
    ap.add_argument("--study-sets", help="comma-separated family sets of the study (default: all of them)")
    a = ap.parse_args()
    os.environ.setdefault("PICKET_DASK_QUIET", "1")
    from picket_dask.config import DEFAULT_WORKFLOWS
    from picket_dask.io.results import read_run

    wf = a.workflow or DEFAULT_WORKFLOWS[0]
    tomo = Path(a.tomogram)
    name = tomo.stem
    truth, context = tomo.with_name(f"{name}_truth.csv"), tomo.with_name(f"{name}_context.csv")
    rdir = Path(a.out) / name
    rows = []
    if a.study:
        for r in study(rdir, wf, truth, a.study_sets.split(",") if a.study_sets else None):
            record("classify", r)
        return
    if not a.reuse:
        if rdir.exists():
            shutil.rmtree(rdir)
        run = measure(run_picks, str(tomo), a.out, wf)
        rows.append({"case": "picks", "workflow": wf, "wall_s": run["wall_s"], "peak_rss_MiB": run["peak_rss_MiB"], "error": run["error"]})
    doc = read_run(rdir)
    n = int(doc["n_picks"][wf])
    t_picks = rows[0]["wall_s"] if rows else earlier_picks_wall(name, wf) or float(doc["timings_s"]["total"])
    res = measure(classify, str(rdir), wf)
    sc = scores(rdir / "classes" / wf, truth, context, doc["shape_zyx"], float(max(doc["voxel_size_A"])))
    rows.append({"case": "classify", "workflow": wf, "n_picks": n, "wall_s": res["wall_s"], "peak_rss_MiB": res["peak_rss_MiB"],
                 "picks_wall_s": t_picks, "classify_over_picks": round(res["wall_s"] / t_picks, 3), **sc,
                 "stages": res.get("stages"), "error": res["error"]})
    if a.timing_picks:
        big = Path(a.out + f"-{a.timing_picks}") / name
        resample_picks(rdir, big, a.timing_picks, wf)
        res2 = measure(classify, str(big), wf)
        rows.append({"case": f"classify {a.timing_picks} picks (resampled)", "workflow": wf, "n_picks": a.timing_picks,
                     "wall_s": res2["wall_s"], "peak_rss_MiB": res2["peak_rss_MiB"], "picks_wall_s": t_picks,
                     "classify_over_picks": round(res2["wall_s"] / t_picks, 3), "k": res2.get("k"),
                     "stages": res2.get("stages"), "error": res2["error"]})
    for r in rows:
        record("classify", {"tomogram": name, **r})
    cols = ["case", "n_picks", "wall_s", "peak_rss_MiB", "classify_over_picks", "k", "ari_types", "precision", "recall",
            "precision_clean", "recall_clean", "d_precision", "d_recall", "junk_picks", "near_context_junk", "near_context_kept"]
    table = pd.DataFrame(rows)
    print(table[[c for c in cols if c in table]].to_string(index=False))
    print(json.dumps({k: v for k, v in rows[-2 if a.timing_picks else -1].items() if k in ("junk_reasons", "stages", "purest_class", "class_types")}, indent=1))


if __name__ == "__main__":
    main()
