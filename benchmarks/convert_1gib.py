"""Convert a 1 GiB float32 MRC to OME-Zarr; print seconds and peak RSS (target < 1 GiB).

    python benchmarks/convert_1gib.py [--shape 256 1024 1024] [--workdir /tmp/picket-bench]
"""

import argparse
import shutil
from pathlib import Path

import numpy as np

from _measure import measure, record


def make_mrc(path: Path, shape) -> None:
    """Write a large MRC slab by slab (never the whole volume in memory)."""
    import mrcfile

    with mrcfile.new_mmap(str(path), shape=tuple(shape), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        rng = np.random.default_rng(0)
        for z in range(0, shape[0], 16):
            mrc.data[z:z + 16] = rng.normal(size=(min(16, shape[0] - z),) + tuple(shape[1:])).astype(np.float32)


def convert_case(src, dst, chunks):
    from picket_dask.io.tomogram import convert

    convert(src, dst, chunks=chunks, overwrite=True)
    return {}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[256, 1024, 1024])
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    src = wd / "big.mrc"
    if not src.exists() or src.stat().st_size < np.prod(a.shape) * 4:
        make_mrc(src, a.shape)
    res = measure(convert_case, src, wd / "big.zarr", a.chunks)
    record("convert", {"shape": "x".join(map(str, a.shape)), "mrc_GiB": round(src.stat().st_size / 2**30, 3),
                       "chunks": a.chunks, **res})
    shutil.rmtree(wd / "big.zarr", ignore_errors=True)
