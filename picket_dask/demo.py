"""The built-in demo: simulate, run the default workflows, evaluate against the truth, preview."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from .config import DEFAULT_WORKFLOWS
from .evaluate import evaluate_files
from .io.atomic import ensure_dir
from .io.picks import read_points
from .evaluate import zyx
from .preview import preview
from .simulate import simulate
from .workflows import run


def demo(out: str | Path = "picket-demo", preset: str = "small", seed: int = 0, workflows=DEFAULT_WORKFLOWS,
         scene: str = "realistic", dose: float | None = None) -> pd.DataFrame:
    """Run the demo into ``out``; print and return the score table. ``dose``: total e/A^2 (realistic scene)."""
    t0 = time.perf_counter()
    out = ensure_dir(out)
    files = simulate(out / "data", preset, seed, scene=scene, dose=dose)
    print(f"[picket-dask] simulated {files['tomogram']} ({time.perf_counter() - t0:.1f} s)")
    print(f"[picket-dask] {_describe(json.loads(files['info'].read_text()))}")
    res = run([files["tomogram"]], out / "results", list(workflows))[0]
    rows = []
    for wf, paths in res.picks.items():
        s = evaluate_files(paths["csv"], files["truth_csv"], res.shape, res.voxel_size, 100.0)
        rows.append({"workflow": wf, "picks": s.n_picks, "truth": s.n_truth, "precision": s.precision,
                     "recall": s.recall, "F1": s.f1, "relative_recall": s.relative_recall,
                     "F1_one_to_one": s.matched_f1})
        f, c, _ = wf.split("-")
        preview(res.image, f"semantic-{f}-{c}", zyx(read_points(paths["csv"])), out / "previews" / f"{wf}.png", title=wf)
    table = pd.DataFrame(rows)
    table.to_csv(out / "scores.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nresults:  {res.run_json.parent}\npreviews: {out / 'previews'}\nscores:   {out / 'scores.csv'}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return table


def _describe(record: dict) -> str:
    """One line on what the simulated tomogram holds (from NAME_simulation.json)."""
    facts, img = record.get("scene_facts"), record.get("imaging", {})
    if not facts:
        return f"{record['scene']} scene"
    lo, hi = facts["slab_z_vox"]
    return (f"{facts['n_particles']} particles in a {facts['ice_thickness_nm']:.0f} nm ice slab (z {lo:.0f}-{hi:.0f} of "
            f"{record['shape_zyx'][0]}, vacuum above and below), {facts['membranes']} membranes, {facts['gold']} gold beads, "
            f"{facts['ice_contamination']} ice blobs, {facts['crowders']} small unannotated proteins; "
            f"tilt series {img['tilts_deg'][0]:.0f}..{img['tilts_deg'][1]:.0f} deg at {img['total_dose_e_per_A2']:.0f} e/A^2, "
            f"SNR {img['snr_0deg']:.2f} at 0 deg")
