"""Held-out realistic scenes at several voxel sizes, in the dev set's layout, for devset_accuracy.py.

    python benchmarks/heldout_scenes.py [--out /tmp/picket-heldout] [--voxels 7,10,14] [--seed 301] [--dose 100]
    python benchmarks/devset_accuracy.py --data /tmp/picket-heldout --tag T --workflows ... [-- run options]

The dev set has two tomograms, both at 10 A. A change that depends on a physical scale (the blur,
the size prior) must also hold at other voxel sizes and on scenes nobody looked at: this writes,
per voxel size, one sparse and one crowded scene of picket-dask's own realistic simulator
(simulate.simulate_realistic: ice slab in vacuum, membranes, gold, contamination, crowders, tilt
series at a realistic dose) with the same physical content (particle sizes in nm), seeds
``--seed``, ``--seed`` + 1, ... in order; ``--dose``: total e/A^2 of each tilt series (default: the simulator's
100; 10 gives about the dev set's SNR, whose particles are ~3x fainter against the ice: at 100 the untilted
image's SNR is 0.38 sparse / 1.0 crowded against the dev set's 0.05 / 0.1). Files: NAME.mrc (its voxel size in the header),
NAME_truth.csv, NAME_context.csv. Existing files are kept (delete the folder to redraw).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SHAPE = (128, 256, 256)  # z, y, x voxels: the dev set's shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/picket-heldout")
    ap.add_argument("--voxels", default="10,14,7", help="voxel sizes in Angstrom, comma-separated")
    ap.add_argument("--seed", type=int, default=301, help="seed of the first scene (then +1 per scene)")
    ap.add_argument("--dose", type=float, default=None, help="total dose in e/A^2 (default: the simulator's)")
    a = ap.parse_args()
    from picket_dask.io.mrc import write_mrc
    from picket_dask.simulate import simulate_realistic, write_context, write_truth

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = a.seed
    for vox in (float(v) for v in a.voxels.split(",")):
        for crowded in (False, True):
            name = f"held_{'crowded' if crowded else 'sparse'}_{vox:g}A_s{seed}"
            if not (out / f"{name}.mrc").exists():
                t = time.perf_counter()
                vol, scene, img = simulate_realistic(SHAPE, seed, crowded, voxel_A=vox, dose=a.dose)
                write_truth(scene.truth, out, name)
                write_context(scene.context, out, name)
                write_mrc(out / f"{name}.mrc", vol, vox)  # last: a folder with the MRC is complete
                print(f"{name}: {len(scene.truth)} particles, SNR at 0 degrees {img['snr_0deg']:.3f}, "
                      f"{time.perf_counter() - t:.1f} s")
            seed += 1
    print(f"scenes in {out}")


if __name__ == "__main__":
    main()
