"""Junk flags, each from a measurable property, with its reason.

Per class (from the class average, aligned to principal axes, and from the members):
- **spans the box** (membrane, sheet, filament): the average's mass along its first principal
  axis through the centre stays above half its peak over >= ``SPAN`` of the box. The box is twice the
  particle diameter (``extract.default_box``), so no protein the picks describe can span it;
  a membrane or a filament longer than that does. Spanning in two directions: "sheet-like".
- **no density above background**: the class's mean density in the central sphere (half the
  particle radius: without CTF correction a particle's fringes cancel its core over its whole
  sphere) of the aligned boxes (the centre the average uses) is not ``Z_DENSITY`` standard errors
  above the local background (the boxes' outer shells): a one-sided test over the members, so it
  needs no threshold on contrast itself.

Per pick:
- **extreme density** (gold, heavy contamination): peak contrast over ``EXTREME`` times the median
  over all picks. Proteins differ little in density (about 1.35 g/cm^3; RNA-rich complexes ~1.6x
  the contrast of protein), gold is ~14x denser: any factor of a few separates them.

A pick is junk when its class is junk or it is an extreme-density outlier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .descriptors import column, radius_grid

SPAN = 0.9
Z_DENSITY = 3.0
EXTREME = 3.0
MIN_TEST = 5  # members a class needs for the density test

RULES = {
    "spans the box": f"class average's mass along a principal axis above half its peak over >= {SPAN:g} of the box "
                     "(box = 2x particle diameter)",
    "no density above background": f"class mean mass in the central sphere < {Z_DENSITY:g} standard errors above the "
                                   "outer-shell background",
    "extreme density": f"pick's peak contrast > {EXTREME:g}x the median over all picks",
}


@dataclass
class Flags:
    class_junk: dict  # k -> reason ('' if not junk)
    pick_junk: np.ndarray
    pick_reason: np.ndarray
    class_stats: dict  # k -> measured properties


def average_mass(avg: np.ndarray, polarity: float) -> np.ndarray:
    """Class average as mass: background (outer-shell median) removed, particles positive."""
    shell = radius_grid(avg.shape[-1]) >= avg.shape[-1] / 2 - 1.5
    return polarity * (avg - np.median(avg[shell]))


def spans(mass: np.ndarray, radius: float = 1.5) -> np.ndarray:
    """Per axis of an aligned average: the fraction of the box over which the mass along that
    axis through the centre (mean over a rod of ``radius`` voxels) stays above half its peak.
    A rod, not a projection: summing a crowded average over whole planes would add up the
    neighbours' pedestal and make every class look flat."""
    box = mass.shape[-1]
    c = box // 2
    g = np.indices(mass.shape) - c
    out = []
    for a in range(3):
        perp = np.sqrt(sum(g[b] ** 2 for b in range(3) if b != a)) <= radius
        w = np.where(perp, mass, 0).sum(axis=tuple(b for b in range(3) if b != a))
        n = perp.sum(axis=tuple(b for b in range(3) if b != a))
        p = w / np.maximum(n, 1)
        out.append(float((p >= 0.5 * p.max()).mean()) if p.max() > 0 else 0.0)
    return np.array(out)


def average_shape(mass: np.ndarray) -> tuple[float, float]:
    """Radius of gyration (voxels) and smallest/largest principal moment of the positive mass."""
    box = mass.shape[-1]
    g = (np.indices(mass.shape, dtype=np.float64) - box // 2).reshape(3, -1)
    w = np.clip(mass, 0, None).reshape(-1) * (radius_grid(box).reshape(-1) <= box / 2 - 1)
    if w.sum() <= 0:
        return 0.0, 1.0
    mu = g @ w / w.sum()
    d = g - mu[:, None]
    ev = np.sort(np.clip(np.linalg.eigvalsh((d * w) @ d.T / w.sum()), 0, None))[::-1]
    return float(np.sqrt(ev.sum())), float(ev[2] / (ev[0] + 1e-12))


def flag(desc: dict, labels: np.ndarray, averages: dict, polarity: float, box: int, central: np.ndarray) -> Flags:
    """``central``: each pick's mean mass (noise units) in the central sphere of its aligned box."""
    class_junk, stats = {}, {}
    for k, avg in averages.items():
        m = labels == k
        mass = average_mass(avg, polarity)
        sp = spans(mass)
        rg, flat = average_shape(mass)
        c = central[m]
        se = c.std(ddof=1) / np.sqrt(len(c)) if len(c) >= MIN_TEST else np.nan
        z = float(c.mean() / se) if se > 0 else np.nan  # NaN: too few members to test
        stats[k] = {"span": sp, "rg_vox": rg, "flatness": flat, "density_z": z}
        reason = ""
        if sp[0] >= SPAN and sp[1] >= SPAN:
            reason = "sheet-like: spans the box in two directions (membrane)"
        elif sp[0] >= SPAN:
            reason = "spans the box: elongated beyond any particle (filament, membrane edge)"
        elif z < Z_DENSITY:  # (NaN compares False: untested classes are not flagged)
            reason = f"no density above background ({z:.1f} standard errors)"
        class_junk[k] = reason
    peak = column(desc, "peak")
    extreme = peak > EXTREME * np.median(peak)
    pick_reason = np.array([class_junk.get(int(k), "") for k in labels], dtype=object)
    pick_reason[extreme] = [f"extreme density (peak {p / np.median(peak):.1f}x the median pick): gold or contamination"
                            for p in peak[extreme]]
    return Flags(class_junk, pick_reason != "", pick_reason, stats)


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if len(a) else float("nan")


def class_table(desc: dict, labels: np.ndarray, averages: dict, flags: Flags, voxel_size, box: int) -> pd.DataFrame:
    """classes.csv: per class, count, size, descriptor summary, junk flag and reason."""
    vmax = float(np.max(voxel_size))
    rows = []
    for k in sorted(averages):
        m = labels == k
        st = flags.class_stats[k]
        rows.append({"class": k, "count": int(m.sum()),
                     "size_vox_median": _median(np.expm1(column(desc, "log_size")[m])),
                     "radius_gyration_A": st["rg_vox"] * vmax,
                     "elongation": st["flatness"],
                     "span": float(st["span"][0]),
                     "density_z": st["density_z"],
                     "peak_contrast": _median(column(desc, "peak")[m]),
                     "n_junk_picks": int(flags.pick_junk[m].sum()),
                     "junk": bool(flags.class_junk[k]), "junk_reason": flags.class_junk[k]})
    return pd.DataFrame(rows)
