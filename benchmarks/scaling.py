"""Time and peak memory vs volume size, at fixed 128^3 chunks (target: time ~ voxels, RSS flat).

    python benchmarks/scaling.py [--sizes 128x256x256 200x512x512 256x1024x1024] [--max-fit-voxels 1000000]

Each size: a synthetic MRC (benchmarks/_data.py) converted to OME-Zarr, then gabor-kmeans-ws and
gabor-gmm-cc (one `run`, sharing preprocessing and the sample) in a fresh process.
"""

import argparse
import shutil
from pathlib import Path

from _data import synthetic_mrc
from _measure import measure, record


def convert_case(src, dst):
    from picket_dask.io.tomogram import convert

    convert(src, dst, chunks=128, overwrite=True)


def run_case(image, out, workflows, max_fit):
    from picket_dask.workflows import run

    r = run([image], out, workflows, max_fit_voxels=max_fit, concurrent=1)[0]
    return {"picks": ";".join(f"{k}={v}" for k, v in r.counts.items()),
            "stages": ";".join(f"{k}={v:.1f}" for k, v in r.timings.items() if "." not in k or k.startswith("segment"))}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["128x256x256", "200x512x512", "256x1024x1024"])
    ap.add_argument("--max-fit-voxels", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    for size in a.sizes:
        shape = tuple(int(s) for s in size.split("x"))
        mrc = synthetic_mrc(wd / f"scale_{size}.mrc", shape)
        img = wd / f"scale_{size}.zarr"
        c = measure(convert_case, mrc, img)
        record("scaling", {"shape": size, "voxels": int(shape[0] * shape[1] * shape[2]), "stage": "convert", **c})
        out = wd / f"scale_out_{size}"
        shutil.rmtree(out, ignore_errors=True)
        r = measure(run_case, img, out, ["gabor-kmeans-ws", "gabor-gmm-cc"], a.max_fit_voxels)
        record("scaling", {"shape": size, "voxels": int(shape[0] * shape[1] * shape[2]), "stage": "gabor-kmeans-ws+gabor-gmm-cc",
                           "max_fit_voxels": a.max_fit_voxels, **r})
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(img, ignore_errors=True)
