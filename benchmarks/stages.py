"""Stage table of `picket-dask run` on one tomogram: convert, preprocess, sample, fit,
features+labels, cc, ws, centroids, other, total (wall seconds from run.json `timings_s`) and the
run's peak RSS, for `--workflows all` and for the default workflows.

    python benchmarks/stages.py [TOMO.mrc] [--large] [--device cpu|gpu] [--repeats 1] [--max-fit-voxels N]
        [--cases all,default] [--cluster threads]

Default tomogram: the crowded dev-set one (128x256x256, 10 A). ``--large``: a 200x512x512
tomogram made by tiling the dev-set tomogram (2x2 in y, x; mirrored in z up to 200 slices), kept
in /tmp. ``cc``/``ws``/``centroids`` sum over the workflows; ``other`` is the rest of the total
(mask, lamella, context, scores, relabel, writing picks). Writes benchmarks/results/stages.csv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _measure import measure, record

DEVSET = Path(__file__).resolve().parents[1] / ".." / "shared" / "devset"
COLUMNS = ("convert", "preprocess", "sample", "fit", "features+labels", "cc", "ws", "centroids", "other", "total")


def tiled_tomogram(src: Path, shape=(200, 512, 512)) -> Path:
    """A larger tomogram from the dev-set one: tiled in y and x, mirrored in z (written once)."""
    import mrcfile
    import numpy as np

    out = Path(tempfile.gettempdir()) / f"{src.stem}_tiled_{'x'.join(map(str, shape))}.mrc"
    if out.exists():
        return out
    with mrcfile.open(src, permissive=True) as m:
        vol, vs = np.asarray(m.data, np.float32), float(m.voxel_size.x)
    reps = [-(-s // v) for s, v in zip(shape, vol.shape)]
    big = np.pad(vol, [(0, (r - 1) * v) for r, v in zip(reps, vol.shape)], mode="symmetric")
    big = np.ascontiguousarray(big[:shape[0], :shape[1], :shape[2]])
    with mrcfile.new(str(out) + ".tmp", overwrite=True) as m:
        m.set_data(big)
        m.voxel_size = vs
    Path(str(out) + ".tmp").replace(out)
    return out


def _run(tomo: str, out: str, workflows: list[str], overrides: dict) -> dict:
    """One `run` in this (fresh) process; the run.json stage table."""
    import picket_dask as pk

    res = pk.run([tomo], out, workflows, **overrides)
    t = json.loads((Path(out) / res[0].name / "run.json").read_text())["timings_s"]
    sums = {k: sum(v for key, v in t.items() if key.endswith(f".{k}")) for k in ("cc", "ws", "centroids")}
    row = {"convert": t.get("convert", 0.0), "preprocess": t.get("segment.preprocess", 0.0),
           "sample": t.get("segment.sample", 0.0), "fit": t.get("segment.fit", 0.0),
           "features+labels": t.get("segment.features_and_labels", 0.0), **sums, "total": t["total"]}
    row["other"] = row["total"] - sum(v for k, v in row.items() if k != "total")
    return {k: round(v, 2) for k, v in row.items()}


def _run_on(cluster: str, gpu: bool, *args) -> dict:
    """_run inside get_client(cluster, gpu) (threads without gpu: dask's threaded scheduler)."""
    from picket_dask.cluster import get_client

    with get_client(cluster, gpu=gpu, quiet=True):
        return _run(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tomogram", nargs="?", default=str(DEVSET / "small_crowded_s3003.mrc"))
    ap.add_argument("--large", action="store_true", help="tile the tomogram to 200x512x512 first")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cases", default="all,default", help="comma list of: all (twelve workflows), default")
    ap.add_argument("--max-fit-voxels", type=int, default=None, help="default: the package default")
    ap.add_argument("--cluster", default="threads", help="threads (default) or local")
    ap.add_argument("--label", default="", help="free text stored with the rows (e.g. a commit)")
    ap.add_argument("--background", choices=("auto", "off"), default=None, help="default: the package default")
    a = ap.parse_args()
    from picket_dask.config import DEFAULT_WORKFLOWS, SegmentParams

    tomo = Path(a.tomogram)
    if a.large:
        tomo = tiled_tomogram(tomo)
    overrides = {}
    if a.max_fit_voxels:
        overrides["max_fit_voxels"] = a.max_fit_voxels
    if a.background:
        overrides["background"] = a.background
    if a.device == "gpu":
        overrides["device"] = "gpu"
    fit_voxels = a.max_fit_voxels or SegmentParams().max_fit_voxels
    for case in a.cases.split(","):
        workflows = ["all"] if case == "all" else list(DEFAULT_WORKFLOWS)
        rows = []
        for r in range(a.repeats):
            with tempfile.TemporaryDirectory(prefix="picket-stages-") as out:
                m = measure(_run_on, a.cluster, a.device == "gpu", str(tomo), out, workflows, overrides)
            if m.get("error"):
                raise SystemExit(f"stages: {case} failed: {m['error']}")
            rows.append(m)
            record("stages", {"tomogram": tomo.stem, "case": case, "device": a.device, "fit_voxels": fit_voxels,
                              "repeat": r, "label": a.label, **{k: m[k] for k in COLUMNS},
                              "wall_s": m["wall_s"], "peak_rss_MiB": m["peak_rss_MiB"]})
        med = {k: statistics.median(row[k] for row in rows) for k in (*COLUMNS, "peak_rss_MiB")}
        print(f"\n{tomo.stem} {case} ({a.device}, fit sample {fit_voxels:,}, median of {len(rows)})")
        print(" | ".join(f"{k:>9}" for k in (*COLUMNS, "peak RSS MiB")))
        print(" | ".join(f"{med[k]:>9.1f}" for k in (*COLUMNS, "peak_rss_MiB")), flush=True)


if __name__ == "__main__":
    main()
