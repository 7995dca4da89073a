"""Fit schedule: time and label agreement of the coarse-to-fine fit against the exact fit.

For each tomogram the pipeline's own fitting sample is drawn once (preprocess, lamella, the seeded
draw inside the slab, ``--voxels`` voxels), then all six (features, clusterer) pairs are fitted
(or the ``--pairs`` given) with ``fit_schedule`` exact and coarse-to-fine, alternating in each repeat (same sample, same
machine load). Each model labels one held-out evaluation set of voxels inside the slab (another
seed), oriented as the pipeline's default rule does (the larger cluster is background: cluster ids
are arbitrary, the coarse k-means may number them the other way); agreement = share of evaluation
voxels whose particle/background label equals the exact fit's.
Per pair: fit seconds (median over repeats), EM iterations, agreement; the process's peak RSS.

    python benchmarks/fit_schedule.py [TOMO.mrc ...] [--voxels 1000000] [--eval 500000] [--repeats 2]
                                      [--pairs gabor-gmm]

Writes benchmarks/results/fit_schedule.csv.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from _measure import record
from sample_size import oriented_labels

DEVSET = Path(__file__).resolve().parents[1] / ".." / "shared" / "devset"
PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]
SCHEDULES = ("exact", "coarse-to-fine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tomograms", nargs="*", default=[str(DEVSET / "small_crowded_s3003.mrc"), str(DEVSET / "small_sparse_s3001.mrc")])
    ap.add_argument("--voxels", type=int, default=1_000_000, help="fitting sample size")
    ap.add_argument("--eval", type=int, default=500_000, help="evaluation voxels")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pairs", default=",".join(f"{f}-{c}" for f, c in PAIRS),
                    help="comma list of features-clusterer pairs fitted together (e.g. gabor-gmm: the defaults)")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    import dask
    import dask.array as da
    import mrcfile

    from picket_dask.config import SegmentParams
    from picket_dask.segment.features import fft_features_from_neighborhoods
    from picket_dask.segment.lamella import detect_lamella
    from picket_dask.segment.neighborhoods import gather_neighborhoods
    from picket_dask.segment.preprocess import preprocess
    from picket_dask.segment.semantic import draw_sample, fit_models, sample_in_lamella

    dask.config.set(scheduler="threads")
    for path in a.tomograms:
        name = Path(path).stem
        vol = mrcfile.read(path).astype(np.float32)
        scaled, _, _ = preprocess(da.from_array(vol, chunks=128), 2.0, path)
        scaled = scaled.persist()
        lamella = detect_lamella(scaled)
        sample = draw_sample(scaled, SegmentParams(max_fit_voxels=a.voxels), None, lamella)
        eval_nb = gather_neighborhoods(scaled, sample_in_lamella(vol.shape, lamella, a.eval, seed=20261127))
        eval_fft = fft_features_from_neighborhoods(eval_nb)
        pairs = [tuple(p.split("-")) for p in a.pairs.split(",")]
        secs = {}
        labels, iters = {}, {}
        for r in range(a.repeats):
            for sched in (SCHEDULES if r % 2 == 0 else SCHEDULES[::-1]):
                params = SegmentParams(max_fit_voxels=a.voxels, fit_schedule=sched)
                t0 = time.perf_counter()
                segs = fit_models(copy.copy(sample), pairs, params)
                total = time.perf_counter() - t0
                secs.setdefault((sched, "all"), []).append(total)
                for s in segs:
                    secs.setdefault((sched, s.name), []).append(s.model.fit_seconds)
                    labels[(sched, s.name)] = oriented_labels(s, eval_nb, eval_fft)
                    p = s.model.params
                    iters[(sched, s.name)] = (p.get("n_iter"), (p.get("coarse") or {}).get("n_iter"))
                print(f"{name} repeat {r} {sched}: {len(pairs)} fits {total:.1f} s", flush=True)
        for s_name in ["all"] + [f"{f}-{c}" for f, c in pairs]:
            row = {"tomogram": name, "segmentation": s_name, "pairs": a.pairs, "fit_voxels": a.voxels, "eval_voxels": len(eval_nb),
                   "repeats": a.repeats, "label": a.label}
            for sched in SCHEDULES:
                row[f"{sched}_s"] = round(statistics.median(secs[(sched, s_name)]), 2)
            if s_name != "all":
                ref, new = labels[("exact", s_name)], labels[("coarse-to-fine", s_name)]
                row["agreement"] = round(float((ref == new).mean()), 6)
                row["particle_share_exact"] = round(float(ref.mean()), 5)
                row["exact_iter"], _ = iters[("exact", s_name)]
                row["fine_iter"], row["coarse_iter"] = iters[("coarse-to-fine", s_name)]
            row["speedup"] = round(row["exact_s"] / max(row["coarse-to-fine_s"], 1e-9), 2)
            row["peak_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            record("fit_schedule", row)


if __name__ == "__main__":
    main()
