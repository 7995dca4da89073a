"""The dev set changed the way users' tomograms differ, in its own layout, for devset_accuracy.py.

    python benchmarks/devset_variants.py [--data ../shared/devset] [--out /tmp/picket-variants]
                                         [--variants bin2,14A,inverted,swap,int8,padded,tilted,...]
    python benchmarks/devset_accuracy.py --data /tmp/picket-variants/bin2 --tag T --workflows ... [-- run options]

Variants (one folder each; truth and context coordinates mapped with the voxels):
- ``bin2``: 2x2x2 means, 20 A voxels (a bin-8-like tomogram of the same data);
- ``14A``: 14 A voxels, scikit-image's anti-aliasing Gaussian ((ratio - 1) / 2 voxels) then scipy's cubic spline
  (corner-aligned grids, as io/grid.py);
- ``inverted``: contrast times -1 (protein bright);
- ``swap``: y and x swapped (the tilt axis along x);
- ``int8``: quantized to int8, MRC mode 0, 40 levels per standard deviation;
- ``padded``: the first 32 columns of x and 24 rows of y set to 0 (a zero-filled margin, as a rotated or
  trimmed reconstruction has; segment/nodata.py's rows ``exp-zero-margins*``); truth kept whole, so
  score the imaged part (x >= 32, y >= 24) apart when comparing with the unpadded tomogram;
- ``tilted``: the volume turned 8 degrees about y around its centre (linear interpolation), as a lamella milled at
  an angle to the tilt axis lies in its reconstruction: the slab's top and bottom rise across x by ~36 voxels;
  the corners the turn brings in are filled with the tomogram's mean (as IMOD's rotatevol fills them);
- ``one-side``: slices 24.. only (the ice reaches the box's first slice: vacuum on one side, as when a
  reconstruction's z range was chosen tight); ``no-vacuum``: slices 28..99 (the slab fills the box: the
  lamella finder must leave it whole). Truth and context outside the kept slices are dropped
  (context objects are kept when their centre is within their radius of the box).
- background variants, which real tomograms carry and the simulators do not (segment/background.py): ``ramp``: a linear
  density gradient across x of 0.5 standard deviations of the tomogram end to end (a lamella thicker at one end, uneven
  illumination); ``ramp1``: 1 SD; ``carbon``: the first 48 columns of x (19 % of the field, all z) 0.6 SD denser, as a
  carbon support film's edge in the view (carbon ~2 g/cm^3 against protein's 1.35 and ice's 0.93: ~2.5x a protein's
  contrast, which is ~0.2 SD per voxel at the dev set's SNR); ``hot``: 0.01 % of the voxels set to +-50 SD (outliers
  a reconstruction was not cleaned of); ``padded-offset``: ``padded`` of the tomogram shifted by +5 SD (a fill of 0 far
  from the data's mean, as in an integer tomogram with an offset). Truth and context unchanged.
Existing folders are kept (delete one to redraw it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEVSET = HERE.parent.parent / "shared" / "devset"
VARIANTS = ("bin2", "14A", "inverted", "swap", "int8", "padded", "tilted", "one-side", "no-vacuum", "ramp", "ramp1", "carbon",
            "hot", "padded-offset")
RAMP_SD = {"ramp": 0.5, "ramp1": 1.0}  # end-to-end amplitude across x, in the tomogram's standard deviations
CARBON_SD, CARBON_COLUMNS = 0.6, 48
HOT_FRACTION, HOT_SD = 1e-4, 50.0
CROPS = {"one-side": (24, None), "no-vacuum": (28, 100)}  # z slices kept (start, stop) by the crop variants
TILT_DEG = 8.0  # the ``tilted`` variant's rotation about y


def _turn_zx(shape, deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation by ``deg`` in the (z, x) plane about a (z, y, x) volume's centre: (matrix R, centre c);
    a point p (z, y, x voxels) of the input lands at R (p - c) + c."""
    a = np.radians(deg)
    rot = np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])
    return rot, (np.asarray(shape, float) - 1) / 2


def _map_csv(src: Path, dst: Path, ratio: float = 1.0, swap: bool = False, turn=None, crop=None,
             voxel_A: float = 10.0) -> None:
    """Copy a truth/context CSV, voxel coordinates onto a grid ``ratio`` x coarser (shared corner), y/x swapped,
    turned (``turn``: _turn_zx's (R, c)) or cropped to slices ``crop`` = (start, stop) (points outside dropped)."""
    t = pd.read_csv(src)
    if crop is not None:
        z0, z1 = crop
        reach = t["radius_nm"] * 10.0 / voxel_A if "object" in t.columns else 0.0  # a context object reaching in
        t = t[(t["z"] >= z0 - 0.5 - reach) & (t["z"] < z1 - 0.5 + reach)].copy()
        t["z"] = t["z"] - z0
    if swap:
        t["x"], t["y"] = t["y"].copy(), t["x"].copy()
    if turn is not None:
        rot, c = turn
        zyx = (t[["z", "y", "x"]].to_numpy(float) - c) @ rot.T + c
        t["z"], t["y"], t["x"] = zyx[:, 0], zyx[:, 1], zyx[:, 2]
    for c in "xyz":
        t[c] = (t[c] + 0.5) / ratio - 0.5
    t.to_csv(dst, index=False)


def variant(data: np.ndarray, voxel_A: float, name: str) -> tuple[np.ndarray, float, float, bool]:
    """(volume, its voxel size, coordinate ratio, y/x swapped) of one variant of a (z, y, x) tomogram."""
    from scipy import ndimage as ndi

    if name == "bin2":
        z, y, x = (s // 2 for s in data.shape)
        return data[:2 * z, :2 * y, :2 * x].reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5)), 2 * voxel_A, 2.0, False
    if name == "14A":
        r = 14.0 / voxel_A
        g = ndi.gaussian_filter(data.astype(np.float64), max(0.0, (r - 1) / 2))
        shape = tuple(int(round(s / r)) for s in data.shape)
        return ndi.affine_transform(g, [r] * 3, offset=0.5 * r - 0.5, output_shape=shape, order=3, mode="reflect"), 14.0, r, False
    if name == "inverted":
        return -data, voxel_A, 1.0, False
    if name == "swap":
        return np.ascontiguousarray(data.transpose(0, 2, 1)), voxel_A, 1.0, True
    if name == "int8":
        return np.clip(np.round((data - data.mean()) / data.std() * 40), -128, 127).astype(np.int8), voxel_A, 1.0, False
    if name in ("padded", "padded-offset"):
        out = data.astype(np.float32) + (5.0 * float(data.std()) if name == "padded-offset" else 0.0)
        out[:, :, :32] = 0.0
        out[:, :24, :] = 0.0
        return out, voxel_A, 1.0, False
    if name in CROPS:
        z0, z1 = CROPS[name]
        return np.ascontiguousarray(data[z0:z1]), voxel_A, 1.0, False
    if name == "tilted":
        rot, c = _turn_zx(data.shape, TILT_DEG)  # output voxel o reads input R^T (o - c) + c
        out = ndi.affine_transform(data.astype(np.float64), rot.T, offset=c - rot.T @ c, order=1, mode="constant",
                                   cval=float(data.mean()))
        return out, voxel_A, 1.0, False
    if name in RAMP_SD:
        x = np.linspace(-0.5, 0.5, data.shape[2], dtype=np.float32)[None, None, :]
        return data + RAMP_SD[name] * float(data.std()) * x, voxel_A, 1.0, False
    if name == "carbon":
        out = data.astype(np.float32).copy()
        out[:, :, :CARBON_COLUMNS] -= CARBON_SD * float(data.std())  # dense is dark, as the dev set's protein
        return out, voxel_A, 1.0, False
    if name == "hot":
        rng = np.random.default_rng(0)
        out = data.astype(np.float32).copy()
        idx = rng.choice(out.size, int(out.size * HOT_FRACTION), replace=False)
        out.flat[idx] = float(data.mean()) + rng.choice([-1.0, 1.0], len(idx)) * HOT_SD * float(data.std())
        return out, voxel_A, 1.0, False
    raise SystemExit(f"unknown variant {name!r}; use some of {', '.join(VARIANTS)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEVSET))
    ap.add_argument("--out", default="/tmp/picket-variants")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    import mrcfile

    for name in a.variants.split(","):
        out = Path(a.out) / name
        if out.exists():
            print(f"{out}: kept")
            continue
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for mrc in sorted(Path(a.data).glob("*.mrc")):
            with mrcfile.open(mrc, permissive=True) as m:
                vol, vs = m.data.astype(np.float32), float(m.voxel_size.x)
            v, new_vs, ratio, swap = variant(vol, vs, name)
            with mrcfile.new(tmp / mrc.name, overwrite=True) as m:
                m.set_data(v if v.dtype == np.int8 else v.astype(np.float32))
                m.voxel_size = new_vs
            for suffix in ("truth", "context"):
                src = mrc.with_name(f"{mrc.stem}_{suffix}.csv")
                if src.exists():
                    _map_csv(src, tmp / src.name, ratio, swap, _turn_zx(vol.shape, TILT_DEG) if name == "tilted" else None,
                             (CROPS[name][0], CROPS[name][1] or vol.shape[0]) if name in CROPS else None, vs)
        tmp.rename(out)
        print(f"{out}: {name}")


if __name__ == "__main__":
    main()
