"""Junk flags, each from a measurable property and with its reason (provisional)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RULES = {}


@dataclass
class Flags:
    class_junk: dict  # k -> reason ('' if not junk)
    pick_junk: np.ndarray
    pick_reason: np.ndarray


def flag(desc: dict, labels: np.ndarray, averages: dict, polarity: float, box: int) -> Flags:
    class_junk = {k: "" for k in averages}
    pick_junk = np.array([bool(class_junk[int(k)]) for k in labels])
    pick_reason = np.array([class_junk[int(k)] for k in labels], dtype=object)
    return Flags(class_junk, pick_junk, pick_reason)


def class_table(desc: dict, labels: np.ndarray, averages: dict, flags: Flags, voxel_size, box: int) -> pd.DataFrame:
    rows = []
    for k in sorted(averages):
        m = labels == k
        con = desc["contrast"][m]
        ine = desc["inertia"][m]
        rows.append({"class": k, "count": int(m.sum()),
                     "size_vox_median": float(np.expm1(np.median(con[:, 3]))) if m.any() else np.nan,
                     "radius_gyration_A": float(np.median(ine[:, 0]) * float(np.max(voxel_size))) if m.any() else np.nan,
                     "elongation": float(np.median(ine[:, 2])) if m.any() else np.nan,
                     "peak_contrast": float(np.median(con[:, 0])) if m.any() else np.nan,
                     "central_contrast": float(np.median(con[:, 1])) if m.any() else np.nan,
                     "face_mass": float(np.median(con[:, 2])) if m.any() else np.nan,
                     "junk": bool(flags.class_junk[k]), "junk_reason": flags.class_junk[k]})
    return pd.DataFrame(rows)
