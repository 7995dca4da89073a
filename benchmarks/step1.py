"""Step 1 (semantic segmentation) per feature mode x clusterer: wall time and peak RSS.

    python benchmarks/step1.py [--shape 128 256 256] [--max-fit-voxels 1000000] [--big 256 512 512]

Simulates a tomogram of --shape (tilt series + WBP), converts it to OME-Zarr, then runs each of
the six segmentations alone in a fresh process (the fit sample included), and all six in one
pass. --big repeats gabor-kmeans on a larger phantom to show memory does not grow with volume.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np

from _measure import measure, record

PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]


def seg_case(image, pairs, max_fit, chunks):
    from picket_dask.config import SegmentParams
    from picket_dask.io.tomogram import open_tomogram
    from picket_dask.segment.semantic import segment_tomogram

    t = open_tomogram(image, chunks)
    segs, tim = segment_tomogram(image, t.data, t.voxel_size, pairs, SegmentParams(max_fit_voxels=max_fit))
    return {"stages": ";".join(f"{k}={v:.2f}" for k, v in tim.items()),
            "particle_fraction": ";".join(f"{s.name}={min(s.counts.values()) / sum(s.counts.values()):.3f}" for s in segs)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[128, 256, 256])
    ap.add_argument("--max-fit-voxels", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--big", nargs=3, type=int, default=None)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    ap.add_argument("--only", default=None, help="comma-separated pairs like gabor-kmeans")
    a = ap.parse_args()
    from picket_dask.io.tomogram import convert
    from picket_dask.simulate import simulate

    wd = Path(a.workdir)
    files = simulate(wd, shape=tuple(a.shape), seed=1, name="step1")
    image = convert(files["tomogram"], wd / "step1.zarr", chunks=a.chunks, overwrite=True)
    pairs = PAIRS if not a.only else [tuple(p.split("-")) for p in a.only.split(",")]
    for pair in pairs:
        res = measure(seg_case, image, [pair], a.max_fit_voxels, a.chunks)
        record("step1", {"shape": "x".join(map(str, a.shape)), "segmentation": "-".join(pair), "max_fit_voxels": a.max_fit_voxels, **res})
    if not a.only:
        res = measure(seg_case, image, PAIRS, a.max_fit_voxels, a.chunks)
        record("step1", {"shape": "x".join(map(str, a.shape)), "segmentation": "all six, one pass", "max_fit_voxels": a.max_fit_voxels, **res})
    if a.big:
        from picket_dask.io.mrc import write_mrc
        from picket_dask.simulate import phantom

        dens, _ = phantom(tuple(a.big), int(np.prod(a.big) / 2e5), 2, membrane=False, gold=False)
        dens += np.random.default_rng(0).normal(0, 0.5, dens.shape).astype(np.float32)
        write_mrc(wd / "big_phantom.mrc", dens, 10.0)
        del dens
        big = convert(wd / "big_phantom.mrc", wd / "big_phantom.zarr", chunks=a.chunks, overwrite=True)
        for shape_name, img in (("x".join(map(str, a.shape)), image), ("x".join(map(str, a.big)), big)):
            res = measure(seg_case, img, [("gabor", "kmeans")], a.max_fit_voxels, a.chunks)
            record("step1_memory", {"shape": shape_name, "segmentation": "gabor-kmeans", **res})
    shutil.rmtree(wd / "step1.zarr", ignore_errors=True)
