"""Synthetic cryo-ET tomograms with ground truth, for the demo, the tests and the benchmarks.

Two scenes (``simulate(..., scene=)``):

- ``realistic`` (default): a vitreous-ice slab in vacuum, slightly tilted, holding particles of
  nine shapes (compact, two-lobed, barrel, hollow shells, rings, Y-shaped, filaments, dimers;
  2.7-14.5 nm radius), lipid vesicles and sheets, 10 nm gold fiducials and crystalline-ice
  contamination on the surfaces, and small unannotated proteins ("crowders") below the truth's
  size range (scene.py); imaged as a dose-symmetric tilt series from -60 to +60 degrees at a
  realistic dose with CTF, radiation damage and shot noise, and reconstructed by weighted
  back-projection, dense matter dark (imaging.py, whose docstring states the physics);
- ``simple``: the first, easy scene (simple.py): high-contrast particles in ice, mild noise.

Files: NAME.mrc (10 A voxels), NAME_truth.csv and NAME_truth.ndjson (x, y, z voxels,
particle_type, radius_nm, the dev set's layout), NAME_context.csv (realistic scene: object, x, y,
z voxels, radius_nm, note: membranes as spheres, gold, ice) and NAME_simulation.json (every
parameter).
Deterministic per seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PicketError
from .imaging import Microscope, tilt_series_wbp
from .scene import CROWDED, SPARSE, Scene, build_scene
from .simple import PARTICLE_TYPES, ParticleType, _paste, _shape_mask, phantom, simulate_volume

__all__ = ["simulate", "simulate_realistic", "write_truth", "write_context", "PRESETS", "SCENES", "VOXEL_SIZE_A",
           "PARTICLE_TYPES", "ParticleType", "phantom", "simulate_volume", "_paste", "_shape_mask"]

VOXEL_SIZE_A = 10.0
SCENES = ("realistic", "simple")

PRESETS = {
    # shape (z, y, x), particles when sparse, particles when crowded (simple scene; the realistic
    # scene fills a volume fraction of its ice instead)
    "tiny": ((48, 96, 96), 10, 24),
    "small": ((64, 192, 192), 28, 70),
    "medium": ((128, 256, 256), 80, 220),
}


def simulate_realistic(shape: tuple[int, int, int], seed: int = 0, crowded: bool = False, noise: float = 1.0,
                       n_particles: int | None = None, dose: float | None = None,
                       voxel_A: float = VOXEL_SIZE_A) -> tuple[np.ndarray, Scene, dict]:
    """A realistic tomogram (z, y, x) float32 (mean 0, std 1, dense dark), its scene and the imaging record."""
    rng = np.random.default_rng(seed)
    scene = build_scene(shape, rng, CROWDED if crowded else SPARSE, voxel_A, n_particles)
    micro = Microscope() if dose is None else Microscope(total_dose=float(dose))
    vol, imaging = tilt_series_wbp(scene.potential, rng, voxel_A, scene.info["ice_thickness_nm"], noise, micro)
    return vol, scene, imaging


def write_truth(truth: pd.DataFrame, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Truth as CSV (x, y, z voxels, particle_type, radius_nm) and as CZ-portal-style ndjson points (voxels)."""
    csv = out_dir / f"{name}_truth.csv"
    truth.to_csv(csv, index=False, float_format="%.2f")
    nd = out_dir / f"{name}_truth.ndjson"
    with open(nd, "w") as fh:
        for row in truth.itertuples():
            fh.write(json.dumps({"type": "point", "location": {"x": round(row.x, 2), "y": round(row.y, 2), "z": round(row.z, 2)},
                                 "object": row.particle_type, "radius_nm": round(row.radius_nm, 2)}) + "\n")
    return csv, nd


def write_context(context: pd.DataFrame, out_dir: Path, name: str) -> Path:
    """Context objects as CSV (object, x, y, z voxels, radius_nm, note), the dev set's layout."""
    path = out_dir / f"{name}_context.csv"
    context.to_csv(path, index=False, float_format="%.2f")
    return path


def simulate(out_dir: str | Path, preset: str = "small", seed: int = 0, crowded: bool = False,
             noise: float = 1.0, shape: tuple[int, int, int] | None = None, n_particles: int | None = None,
             name: str | None = None, *, scene: str = "realistic", dose: float | None = None) -> dict[str, Path]:
    """Write ``<name>.mrc`` (10 A voxels), its truth (CSV, ndjson), context CSV and parameters into ``out_dir``.

    ``noise`` scales the noise: in the realistic scene the shot noise at ``dose`` (total e/A^2 of the
    tilt series, default Microscope.total_dose), in the simple scene the projections' signal std.
    """
    from ..io.mrc import write_mrc

    if preset not in PRESETS and shape is None:
        raise PicketError(preset, "unknown simulation preset", f"use one of {', '.join(PRESETS)}")
    if scene not in SCENES:
        raise PicketError(scene, "unknown simulation scene", f"use one of {', '.join(SCENES)}")
    if noise < 0 or (dose is not None and dose <= 0):
        raise PicketError(f"noise={noise}, dose={dose}", "noise must be >= 0 and dose > 0", "give e.g. --noise 1 --dose 100")
    p_shape, n_sparse, n_crowded = PRESETS.get(preset, PRESETS["small"])
    shape = tuple(shape) if shape is not None else p_shape
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"sim_{preset}_{'crowded' if crowded else 'sparse'}_s{seed}"
    record: dict = {"generator": "picket_dask.simulate", "scene": scene, "seed": seed, "preset": preset,
                    "shape_zyx": list(shape), "voxel_size_A": VOXEL_SIZE_A, "crowded": crowded}
    if scene == "realistic":
        vol, sc, imaging = simulate_realistic(shape, seed, crowded, noise, n_particles, dose)
        truth, context = sc.truth, sc.context
        record.update({"scene_facts": sc.info, "imaging": imaging,
                       "counts_per_type": truth["particle_type"].value_counts().sort_index().to_dict()})
    else:
        if n_particles is None:
            scale = np.prod(shape) / np.prod(p_shape)
            n_particles = int(round((n_crowded if crowded else n_sparse) * scale))
        vol, t = simulate_volume(shape, n_particles, seed, crowded, noise)
        truth = pd.DataFrame({"x": t["x"], "y": t["y"], "z": t["z"], "particle_type": t["type"],
                              "radius_nm": t["radius_A"] / 10.0})
        context = None  # its vesicle and gold are not recorded: no context file
        record["imaging"] = {"noise_factor": noise, "contrast": "dense matter dark"}
    mrc = out_dir / f"{name}.mrc"
    tmp = out_dir / f".{name}.mrc.tmp{os.getpid()}"
    write_mrc(tmp, vol, VOXEL_SIZE_A)
    csv, nd = write_truth(truth, out_dir, name)
    files = {"tomogram": mrc, "truth_csv": csv, "truth_ndjson": nd}
    if context is not None:
        files["context_csv"] = write_context(context, out_dir, name)
    files["info"] = out_dir / f"{name}_simulation.json"
    files["info"].write_text(json.dumps(record, indent=1, default=float))
    tmp.replace(mrc)
    return files
