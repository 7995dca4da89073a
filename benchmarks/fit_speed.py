"""Fit time of all six segmentations on one fitting sample: the EM before/after a commit, and the
BLAS thread limit, optionally with a busy second process on the machine.

    python benchmarks/fit_speed.py [TOMO.mrc] [--voxels 250000] [--before e800752] [--repeats 2] [--busy]

Variants, alternated in each repeat within one run (same sample, same machine load):
  before      the Gaussian-mixture EM of commit ``--before`` (git show), BLAS threads = all cores
  after-all   this checkout's EM, BLAS threads forced to all cores (PICKET_DASK_FIT_THREADS)
  after       this checkout's EM, threads = the idle cores (the default)
``--busy``: a second process spins on one core for the whole run. Writes benchmarks/results/fit_speed.csv.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _measure import record

ROOT = Path(__file__).resolve().parents[1]
DEVSET = ROOT / ".." / "shared" / "devset"
PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]


def _old_em(rev: str):
    """The gmm_em module of commit ``rev``, imported from a temporary file."""
    src = subprocess.run(["git", "show", f"{rev}:picket_dask/segment/gmm_em.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    # relative imports made absolute: the module is loaded from a temporary file, outside the package
    src = src.replace("from ..", "from picket_dask.").replace("from .", "from picket_dask.segment.")
    path = Path(tempfile.mkdtemp()) / f"gmm_em_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tomogram", nargs="?", default=str(DEVSET / "small_crowded_s3003.mrc"))
    ap.add_argument("--voxels", type=int, default=250_000)
    ap.add_argument("--before", default="e800752")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--variants", default="before,after-all,after")
    a = ap.parse_args()
    import dask
    import dask.array as da
    import mrcfile

    from picket_dask.config import DEFAULT_DIAMETER_A, SegmentParams
    from picket_dask.segment import gmm_em
    from picket_dask.segment.fit_threads import ENV, usable_cores
    from picket_dask.segment.preprocess import preprocess, with_blur_scale
    from picket_dask.segment.semantic import draw_sample, fit_models

    dask.config.set(scheduler="threads")
    with mrcfile.open(a.tomogram, permissive=True) as m:
        vol, voxel = np.asarray(m.data, np.float32), float(m.voxel_size.x)
    params = with_blur_scale(SegmentParams(max_fit_voxels=a.voxels), DEFAULT_DIAMETER_A, (voxel,) * 3)  # the run's derived blur
    scaled, _, _ = preprocess(da.from_array(vol, chunks=128), params.sigma_vox, a.tomogram)
    sample = draw_sample(scaled, params)
    new_em, old_mod = gmm_em.fit_gaussian_mixture, _old_em(a.before)

    import inspect

    accepted = set(inspect.signature(old_mod.fit_gaussian_mixture).parameters)

    def old_em(x, k=2, seed=42, init_labels=None, **kw):
        # the old EM takes only the options it had: from e800752 no init_labels (its own k-means
        # initialisation), no xp, no warm start (init_params: it fits the whole sample from scratch,
        # as that commit did) and no threads
        kw = {key: v for key, v in kw.items() if key in accepted}
        if "init_labels" in accepted:
            kw["init_labels"] = init_labels
        return old_mod.fit_gaussian_mixture(x, k, seed, **kw)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.busy else None
    times: dict[str, list[float]] = {}
    try:
        for r in range(a.repeats):
            for variant in a.variants.split(","):
                gmm_em.fit_gaussian_mixture = old_em if variant == "before" else new_em
                if variant == "after":
                    os.environ.pop(ENV, None)
                else:
                    os.environ[ENV] = str(usable_cores())
                t0 = time.perf_counter()
                segs = fit_models(sample, PAIRS, params)
                total = time.perf_counter() - t0
                times.setdefault(variant, []).append(total)
                per = {f"{s.name}_s": round(s.model.fit_seconds, 2) for s in segs}
                record("fit_speed", {"tomogram": Path(a.tomogram).stem, "fit_voxels": a.voxels, "variant": variant,
                                     "before_rev": a.before, "busy_process": a.busy, "repeat": r,
                                     "load_1min": round(os.getloadavg()[0], 2), "fit_models_s": round(total, 2), **per})
    finally:
        gmm_em.fit_gaussian_mixture = new_em
        if busy is not None:
            busy.kill()
    for v, ts in times.items():
        print(f"{v:>10}: median {statistics.median(ts):.1f} s over {len(ts)} ({', '.join(f'{t:.1f}' for t in ts)})")


if __name__ == "__main__":
    main()
