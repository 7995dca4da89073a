"""Step 2: cc + centroids and watershed + centroids on a 256x512x512 mask with ~100k blobs.

    python benchmarks/step2.py [--shape 256 512 512] [--blobs 100000] [--chunks 128]
"""

import argparse
from pathlib import Path

import numpy as np

from _measure import measure, record


def make_mask_image(wd: Path, shape, n, chunks) -> Path:
    import dask.array as da
    from scipy import ndimage as ndi

    from picket_dask.io.omezarr import write_image, write_labels

    rng = np.random.default_rng(0)
    seeds = np.zeros(shape, bool)
    seeds[tuple(rng.integers(0, shape, size=(n, 3)).T)] = True
    mask = ndi.binary_dilation(seeds, ndi.generate_binary_structure(3, 1), iterations=2)
    sem = mask.astype(np.uint8)
    img = wd / "step2.zarr"
    write_image(da.zeros(shape, np.uint8, chunks=chunks), img, (10.0, 10.0, 10.0), chunks=chunks, n_levels=1, overwrite=True)
    write_labels(img, "semantic-bench", da.from_array(sem, chunks=chunks), (10.0, 10.0, 10.0))
    return img


def case(img, extractor, min_distance):
    from picket_dask.config import LocalizeParams
    from picket_dask.localize.extract import localize

    inst = localize(img, "semantic-bench", extractor, LocalizeParams(min_distance_vox=min_distance), (10.0, 10.0, 10.0))
    return {"instances": len(inst.table), "stages": ";".join(f"{k}={v:.2f}" for k, v in inst.timings.items())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[256, 512, 512])
    ap.add_argument("--blobs", type=int, default=100_000)
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--min-distance", type=int, default=15)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    ap.add_argument("--only", choices=["cc", "ws"])
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    img = make_mask_image(wd, tuple(a.shape), a.blobs, a.chunks)
    for ex in ([a.only] if a.only else ["cc", "ws"]):
        res = measure(case, img, ex, a.min_distance)
        record("step2", {"shape": "x".join(map(str, a.shape)), "blobs": a.blobs, "chunks": a.chunks, "extractor": ex,
                         "min_distance": a.min_distance, **res})
