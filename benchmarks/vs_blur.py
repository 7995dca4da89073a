"""All twelve workflows together vs one Gaussian blur pass (scipy, in memory) over the same volume.

    python benchmarks/vs_blur.py [--shape 128 256 256] [--max-fit-voxels 1000000]
"""

import argparse
import shutil
from pathlib import Path

from _data import synthetic_mrc
from _measure import measure, record


def blur_case(mrc):
    import mrcfile
    from scipy import ndimage as ndi

    vol = mrcfile.read(str(mrc))
    ndi.gaussian_filter(vol, 2.0)
    return {}


def all_case(mrc, out, max_fit):
    from picket_dask.workflows import run

    r = run([mrc], out, ["all"], max_fit_voxels=max_fit, concurrent=1)[0]
    t = r.timings
    return {"fit_s": t.get("segment.fit"), "features_and_labels_s": t.get("segment.features_and_labels"),
            "run_total_s": t.get("total")}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[128, 256, 256])
    ap.add_argument("--max-fit-voxels", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/picket-bench")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    shape = "x".join(map(str, a.shape))
    mrc = synthetic_mrc(wd / f"vsblur_{shape}.mrc", tuple(a.shape))
    b = measure(blur_case, mrc)
    out = wd / "vsblur_out"
    shutil.rmtree(out, ignore_errors=True)
    w = measure(all_case, mrc, out, a.max_fit_voxels)
    record("vs_blur", {"shape": shape, "max_fit_voxels": a.max_fit_voxels, "blur_wall_s": b["wall_s"],
                       "twelve_wall_s": w["wall_s"], "ratio": round(w["wall_s"] / b["wall_s"], 1),
                       "twelve_chunked_only_ratio": round((w["wall_s"] - (w["fit_s"] or 0)) / b["wall_s"], 1),
                       "peak_rss_MiB": w["peak_rss_MiB"], "fit_s": w["fit_s"], "features_and_labels_s": w["features_and_labels_s"]})
