"""Time of the context stage (gold + membranes, localize/context.detect_context) on the converted image
of a finished `picket-dask run`, in a fresh process per repeat: wall/CPU seconds and peak RSS.

    python benchmarks/context.py RUN_DIR [RUN_DIR ...] [--repeats 3] [--tag NAME]

RUN_DIR is ``<out>/<name>`` of a run (it holds ``<name>.zarr`` and ``run.json``, whose lamella is
reused); the stage rewrites that image's ``labels/context``. Writes benchmarks/results/context.csv.
To compare two code versions on the same machine, run this script from each tree back to back
(PYTHONPATH=<tree>).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _measure import measure, record


def _stage(run_dir: str) -> dict:
    import picket_dask
    from picket_dask.localize.context import detect_context
    from picket_dask.segment.lamella import Lamella
    from picket_dask.io.omezarr import open_image

    rd = Path(run_dir)
    image = rd / f"{rd.name}.zarr"
    doc = json.loads((rd / "run.json").read_text())
    shape = open_image(image)[0].shape
    rep = detect_context(image, Lamella.from_dict(doc["lamella"], shape), tuple(doc["voxel_size_A"]))
    m = rep.get("membranes", {})
    return {"code": str(Path(picket_dask.__file__).parent.parent), "membranes": m.get("membranes"),
            "not_facing": m.get("not_facing"), "masked_fraction": rep.get("masked_fraction")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    for run in a.runs:
        for i in range(a.repeats):
            out = measure(_stage, str(Path(run).resolve()))
            record("context", {"tomogram": Path(run).name, "repeat": i, "tag": a.tag, **out})


if __name__ == "__main__":
    main()
