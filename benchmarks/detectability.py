"""How many of a tomogram's true particles stand out of its noise at all: a blob detector's view.

    python benchmarks/detectability.py [--data ../shared/devset] [--sigmas 1 1.5 2 3 4 6] [--tag NAME]

For every tomogram of a folder in the dev set's layout (NAME.mrc + NAME_truth.csv, x y z voxels,
particle_type), independent of picket-dask's pipeline: the scale-normalised Laplacian of Gaussian
(sigma^2 LoG, sigmas in voxels, the particles' polarity positive) is taken at each scale, maximised
over the 3x3x3 neighbourhood (a one-voxel tolerance on the truth centre), and turned into a robust z
against the same statistic at random positions (median, 1.4826 x MAD). A particle's statistic is its
best z over the scales; the same maximum over scales is taken at the random positions, so both sides
are searched alike. Reported per particle type: the median statistic and the share of particles above
the random positions' 99th and 99.9th percentiles.

What it is for: an optimistic ceiling on recall that any detector of compact density can reach
(there are millions of positions in a tomogram, so even the 99.9th percentile lets thousands of noise
positions through), to read beside devset_accuracy.py's recall by type: particle types below it are
lost to the noise, not to the pipeline. Random positions: uniform inside the truth's bounding box
(z from the lowest to the highest particle, y and x 10 voxels in from the faces), where the sample
is, and more than 5 nm from every true particle (its radius) and every context object (membranes,
gold, ice blobs of NAME_context.csv): the statistic of the ice itself, unannotated small proteins
included. Polarity: the particles' mean blurred density against the random positions' (at the middle
sigma). Whole-volume filters (scipy), so for dev-set-sized tomograms (~10^7 voxels), not large ones.
Writes benchmarks/results/detectability.csv (one row per tomogram x type, plus ``all``).
"""

import argparse
import json
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from _measure import record

HERE = Path(__file__).resolve().parent
DEVSET = HERE.parent.parent / "shared" / "devset"
MARGIN_VOX = 10
CLEAR_NM = 5.0  # random positions this far from every true particle and context object


def random_positions(truth_zyx: np.ndarray, shape, n: int, seed: int) -> np.ndarray:
    """(n, 3) integer voxel positions uniform in the truth's z range and y, x MARGIN_VOX in from the faces."""
    rng = np.random.default_rng(seed)
    lo = np.array([truth_zyx[:, 0].min(), MARGIN_VOX, MARGIN_VOX])
    hi = np.array([truth_zyx[:, 0].max(), shape[1] - 1 - MARGIN_VOX, shape[2] - 1 - MARGIN_VOX])
    return np.round(rng.uniform(lo, hi, size=(n, 3))).astype(int)


def away_from_objects(points: np.ndarray, truth: pd.DataFrame, context: pd.DataFrame | None, voxel_A: float) -> np.ndarray:
    """Mask of ``points`` ((n, 3) z y x voxels) clear of every true particle (its radius + CLEAR_NM) and
    every context object (membrane surfaces, |(|p - c| - r)|, and balls, |p - c| - r, farther than CLEAR_NM)."""
    nm = 10.0 / voxel_A  # voxels per nm
    keep = np.ones(len(points), bool)
    t = truth[["z", "y", "x"]].to_numpy(float)
    r = truth.radius_nm.to_numpy(float) * nm if "radius_nm" in truth else np.full(len(t), 5 * nm)
    tree = cKDTree(points)
    for near in tree.query_ball_point(t, r + CLEAR_NM * nm):
        keep[near] = False
    if context is not None:
        for row in context.itertuples():
            d = np.linalg.norm(points - np.array([row.z, row.y, row.x]), axis=1) - row.radius_nm * nm
            keep &= (np.abs(d) if row.object in ("vesicle", "sheet") else d) > CLEAR_NM * nm
    return keep


def blob_z(volume: np.ndarray, sigmas, truth: np.ndarray, rand: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Best robust z over ``sigmas`` at the ``truth`` and ``rand`` voxels ((n, 3) int, z y x), and the polarity
    used (+1: particles brighter than the ice)."""
    mid = sigmas[len(sigmas) // 2]
    g = ndi.gaussian_filter(volume, mid)
    polarity = 1 if np.median(g[tuple(truth.T)]) >= np.median(g[tuple(rand.T)]) else -1
    best_t = np.full(len(truth), -np.inf)
    best_r = np.full(len(rand), -np.inf)
    for s in sigmas:
        b = -polarity * s**2 * ndi.gaussian_laplace(volume, s)  # a blob of the particles' polarity is positive
        b = ndi.maximum_filter(b, size=3)
        null = b[tuple(rand.T)]
        med = np.median(null)
        sd = 1.4826 * np.median(np.abs(null - med)) or 1.0
        best_t = np.maximum(best_t, (b[tuple(truth.T)] - med) / sd)
        best_r = np.maximum(best_r, (null - med) / sd)
    return best_t, best_r, polarity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEVSET))
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0], help="voxels")
    ap.add_argument("--random", type=int, default=400000, help="random positions drawn for the null (those near objects are dropped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    tables = []
    for truth_csv in sorted(Path(a.data).glob("*_truth.csv")):
        name = truth_csv.name[: -len("_truth.csv")]
        with mrcfile.open(Path(a.data) / f"{name}.mrc", permissive=True) as m:
            vol = np.asarray(m.data, np.float32)
            voxel_A = float(m.voxel_size.x) or 10.0
        t = pd.read_csv(truth_csv)
        zyx = np.clip(np.round(t[["z", "y", "x"]].to_numpy(float)).astype(int), 0, np.array(vol.shape) - 1)
        ctx_csv = Path(a.data) / f"{name}_context.csv"
        rand = random_positions(zyx, vol.shape, a.random, a.seed)
        rand = rand[away_from_objects(rand, t, pd.read_csv(ctx_csv) if ctx_csv.exists() else None, voxel_A)]
        zt, zr, pol = blob_z(vol, a.sigmas, zyx, rand)
        q99, q999 = np.quantile(zr, [0.99, 0.999])
        t["z"] = zt
        groups = [(str(k), g) for k, g in t.groupby("particle_type")] + [("all", t)]
        for ptype, g in groups:
            row = {"tomogram": name, "particle_type": ptype, "n": len(g),
                   "radius_nm": round(float(g.radius_nm.median()), 2) if "radius_nm" in g else None,
                   "median_z": round(float(np.median(g.z)), 2), "above_q99": round(float(np.mean(g.z > q99)), 3),
                   "above_q999": round(float(np.mean(g.z > q999)), 3), "null_q99": round(float(q99), 2),
                   "null_q999": round(float(q999), 2), "null_positions": len(rand), "polarity": pol, "sigmas_vox": json.dumps(a.sigmas), "tag": a.tag}
            record("detectability", row)
            tables.append(row)
    d = pd.DataFrame(tables)
    print(d[["tomogram", "particle_type", "n", "radius_nm", "median_z", "above_q99", "above_q999"]].to_string(index=False))
    print("wrote benchmarks/results/detectability.csv")


if __name__ == "__main__":
    main()
