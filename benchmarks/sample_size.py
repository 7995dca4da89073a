"""How much the labels change with the fitting sample size: agreement with the 1M-voxel fit.

For each tomogram, every (features, clusterer) pair is fitted on samples of 100k, 250k, 500k and
1M voxels (the pipeline's own seeded draw: inside the found lamella, at the default blur, as
`run` does), and each model labels the same held-out evaluation set (drawn the same way with
another seed; 1M voxels give the agreement to +-0.01 %). Labels are oriented by the default rule
(the larger cluster of the evaluation set is background), so agreement = fraction of evaluation
voxels whose particle / background label equals the 1M fit's. ``--replicate-seed S`` also fits the
largest size on a second sample (seed S): how much two fits of the reference size agree with each
other is the floor that no smaller sample can be asked to beat (row seed = S). Writes
benchmarks/results/sample_size.csv.

    python benchmarks/sample_size.py [TOMO.mrc ...] [--sizes 100000,250000,500000,1000000] [--eval 1000000]
                                     [--replicate-seed 7] [--lamella auto|off] [--sigma-vox S]
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
    ap.add_argument("--replicate-seed", type=int, default=None, help="fit the largest size again on a sample of this seed")
    ap.add_argument("--lamella", choices=("auto", "off"), default="auto", help="draw fit and evaluation voxels inside the slab")
    ap.add_argument("--sigma-vox", type=float, default=None, help="blur (default: the package default for the voxel size)")
    a = ap.parse_args()
    import dask
    import dask.array as da
    import mrcfile

    from picket_dask.config import DEFAULT_DIAMETER_A, SegmentParams
    from picket_dask.segment.features import fft_features_from_neighborhoods
    from picket_dask.segment.lamella import detect_lamella
    from picket_dask.segment.preprocess import blur_sigma_vox, preprocess
    from picket_dask.segment.semantic import draw_sample, fit_models

    dask.config.set(scheduler="threads")
    sizes = [int(s) for s in a.sizes.split(",")]
    ref_size = max(sizes)
    fits = [(n, SegmentParams().seed) for n in sorted(sizes, reverse=True)]  # the reference (largest) first
    if a.replicate_seed is not None:
        fits.append((ref_size, a.replicate_seed))
    for path in a.tomograms:
        name = Path(path).stem
        with mrcfile.open(path, permissive=True) as m:
            vol, voxel = np.asarray(m.data, np.float32), float(m.voxel_size.x)
        sigma = a.sigma_vox or blur_sigma_vox(DEFAULT_DIAMETER_A, voxel)
        scaled, _, _ = preprocess(da.from_array(vol, chunks=128), sigma, path)
        scaled = scaled.persist()
        lamella = detect_lamella(scaled, sigma_vox=sigma) if a.lamella == "auto" else None
        ev = draw_sample(scaled, SegmentParams(max_fit_voxels=a.eval, seed=20261127), None, lamella)
        eval_nb = ev.neighborhoods
        eval_fft = fft_features_from_neighborhoods(eval_nb)
        labels, fit_s = {}, {}
        for n, seed in fits:
            params = SegmentParams(max_fit_voxels=n, seed=seed, sigma_vox=sigma)
            sample = draw_sample(scaled, params, None, lamella)
            t0 = time.perf_counter()
            segs = fit_models(sample, PAIRS, params, release=True)
            total = time.perf_counter() - t0
            for s in segs:
                labels[(s.name, n, seed)] = oriented_labels(s, eval_nb, eval_fft)
                fit_s[(s.name, n, seed)] = s.model.fit_seconds
            print(f"{name} n={n} seed={seed}: fit_models {total:.1f} s", flush=True)
        for s_name in [f"{f}-{c}" for f, c in PAIRS]:
            ref = labels[(s_name, *fits[0])]
            for n, seed in fits:
                agree = float((labels[(s_name, n, seed)] == ref).mean())
                record("sample_size", {"tomogram": name, "segmentation": s_name, "fit_voxels": n, "reference_voxels": ref_size,
                                       "eval_voxels": len(ref), "agreement": round(agree, 6),
                                       "particle_fraction": round(float(labels[(s_name, n, seed)].mean()), 5),
                                       "fit_s": round(fit_s[(s_name, n, seed)], 2), "seed": seed, "sigma_vox": sigma,
                                       "lamella": a.lamella})

if __name__ == "__main__":
    main()
