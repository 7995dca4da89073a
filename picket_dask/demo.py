"""The built-in demo: simulate, run the default workflows, evaluate against the truth, preview."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .config import DEFAULT_WORKFLOWS
from .evaluate import evaluate_files
from .io.picks import read_points
from .evaluate import zyx
from .preview import preview
from .simulate import simulate
from .workflows import run


def demo(out: str | Path = "picket-demo", preset: str = "small", seed: int = 0, workflows=DEFAULT_WORKFLOWS) -> pd.DataFrame:
    """Run the demo into ``out``; print and return the score table."""
    t0 = time.perf_counter()
    out = Path(out)
    files = simulate(out / "data", preset, seed)
    print(f"[picket-dask] simulated {files['tomogram']} ({time.perf_counter() - t0:.1f} s)")
    res = run([files["tomogram"]], out / "results", list(workflows))[0]
    rows = []
    for wf, paths in res.picks.items():
        s = evaluate_files(paths["csv"], files["truth_csv"], res.shape, res.voxel_size, 100.0)
        rows.append({"workflow": wf, "picks": s.n_picks, "truth": s.n_truth, "precision": s.precision,
                     "recall": s.recall, "F1": s.f1, "relative_recall": s.relative_recall})
        f, c, _ = wf.split("-")
        preview(res.image, f"semantic-{f}-{c}", zyx(read_points(paths["csv"])), out / "previews" / f"{wf}.png", title=wf)
    table = pd.DataFrame(rows)
    table.to_csv(out / "scores.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nresults:  {res.run_json.parent}\npreviews: {out / 'previews'}\nscores:   {out / 'scores.csv'}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return table
