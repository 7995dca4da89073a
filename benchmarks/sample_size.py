"""How much the labels change with the fitting sample size: agreement with the 1M-voxel fit.

For each tomogram, every (features, clusterer) pair is fitted on samples of 100k, 250k, 500k and
1M voxels (the pipeline's own seeded draw over the interior voxels, z_fit unset), and each model
labels the same held-out evaluation set of interior voxels (a different seed; 1M voxels give the
agreement to +-0.01 %). Labels are oriented by the default rule (the larger cluster of the
evaluation set is background), so agreement = fraction of evaluation voxels whose particle /
background label equals the 1M fit's. Writes benchmarks/results/sample_size.csv.

    python benchmarks/sample_size.py [TOMO.mrc ...] [--sizes 100000,250000,500000,1000000] [--eval 1000000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _measure import record

DEVSET = Path(__file__).resolve().parents[1] / ".." / "shared" / "devset"
PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]


def oriented_labels(seg, eval_nb: np.ndarray, eval_fft: np.ndarray) -> np.ndarray:
    """Particle (1) / background (0) labels of evaluation voxels under ``seg``'s model: the larger cluster is background."""
    from picket_dask.segment.clustering import predict

    out = np.empty(len(eval_nb), np.uint8)
    for i in range(0, len(eval_nb), 65536):
        x = eval_fft[i:i + 65536] if seg.features == "ffts" else eval_nb[i:i + 65536].astype(np.float64)
        out[i:i + 65536] = predict(seg.model.decision, x)
    return out if out.mean() <= 0.5 else 1 - out  # the larger cluster is background


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tomograms", nargs="*", default=[str(DEVSET / "small_crowded_s3003.mrc"), str(DEVSET / "small_sparse_s3001.mrc")])
    ap.add_argument("--sizes", default="100000,250000,500000,1000000")
    ap.add_argument("--eval", type=int, default=1_000_000, help="evaluation voxels")
    a = ap.parse_args()
    import dask
    import dask.array as da
    import mrcfile

    from picket_dask.config import SegmentParams
    from picket_dask.segment.features import fft_features_from_neighborhoods
    from picket_dask.segment.neighborhoods import gather_neighborhoods, sample_voxels
    from picket_dask.segment.preprocess import preprocess
    from picket_dask.segment.semantic import draw_sample, fit_models

    dask.config.set(scheduler="threads")
    sizes = [int(s) for s in a.sizes.split(",")]
    ref_size = max(sizes)
    for path in a.tomograms:
        name = Path(path).stem
        vol = mrcfile.read(path).astype(np.float32)
        scaled, _, _ = preprocess(da.from_array(vol, chunks=128), 2.0, path)
        scaled = scaled.persist()
        ecoords = sample_voxels(vol.shape, None, a.eval, seed=20261127)
        eval_nb = gather_neighborhoods(scaled, ecoords)
        eval_fft = fft_features_from_neighborhoods(eval_nb)
        labels, fit_s = {}, {}
        for n in sorted(sizes, reverse=True):  # the reference (largest) first
            params = SegmentParams(max_fit_voxels=n)
            sample = draw_sample(scaled, params)
            t0 = time.perf_counter()
            segs = fit_models(sample, PAIRS, params, release=True)
            total = time.perf_counter() - t0
            for s in segs:
                labels[(s.name, n)] = oriented_labels(s, eval_nb, eval_fft)
                fit_s[(s.name, n)] = s.model.fit_seconds
            print(f"{name} n={n}: fit_models {total:.1f} s", flush=True)
        for s_name in [f"{f}-{c}" for f, c in PAIRS]:
            ref = labels[(s_name, ref_size)]
            for n in sizes:
                agree = float((labels[(s_name, n)] == ref).mean())
                record("sample_size", {"tomogram": name, "segmentation": s_name, "fit_voxels": n, "reference_voxels": ref_size,
                                       "eval_voxels": len(ref), "agreement": round(agree, 6),
                                       "particle_fraction": round(float(labels[(s_name, n)].mean()), 5),
                                       "fit_s": round(fit_s[(s_name, n)], 2)})


if __name__ == "__main__":
    main()
