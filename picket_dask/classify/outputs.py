"""What classify writes into ``RUN_DIR/NAME/classes/WF/`` (all into a temporary folder first):

| file | what |
|---|---|
| picks.csv | the workflow's picks (every column kept) + class (1..K, 0 = skipped at a face), class_confidence, junk, junk_reason |
| classes.csv | per class: count, size, descriptor summary, junk, junk_reason |
| averages/class_NN.mrc | class averages (aligned to principal axes), voxel size of the tomogram |
| gallery.png | central slices of each average with its count and junk reason |
| picks.star | RELION 5 picks (rlnAutopickFigureOfMerit = score) with rlnClassNumber and rlnMaxValueProbDistribution (the confidence) |
| copick/class_NN.json | copick picks, one pickable object (``class_NN``) per class |
| picks_clean.csv / .star | with --drop-junk: the picks without the junk ones (same columns as the workflow's) |
| subvolumes.mrcs / .star | with --export-subvolumes: the boxes as an MRC volume stack + rlnImageName, rlnTomoName, centred coordinates |
| report.json | parameters, box, K and BIC, edge handling, junk rules, timings |
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.picks import star_frame, write_copick_json, write_csv
from ..io.picks import write_star_frame as write_star


def class_object(k: int) -> str:
    return f"class_{k:02d}"


def write_picks_tables(out: Path, picks: pd.DataFrame, tomo_name: str, shape, voxel_size, workflow: str,
                       drop_junk: bool, star_name: str | None = None) -> dict[str, str]:
    """picks.csv, picks.star (rlnClassNumber; rlnTomoName ``star_name``, default ``tomo_name``), copick per class
    (run ``tomo_name``), and the cleaned picks."""
    paths = {"picks": str(write_csv(picks, out / "picks.csv"))}
    star_name = star_name or tomo_name
    star = star_frame(picks, star_name, shape, voxel_size)
    star["rlnClassNumber"] = picks["class"].to_numpy()
    star["rlnMaxValueProbDistribution"] = picks["class_confidence"].to_numpy()
    paths["star"] = str(write_star(star, out / "picks.star"))
    (out / "copick").mkdir()
    for k in sorted(int(c) for c in picks["class"].unique() if c > 0):
        sub = picks[picks["class"] == k]
        write_copick_json(sub, out / "copick" / f"{class_object(k)}.json", tomo_name, workflow, class_object(k))
    paths["copick"] = str(out / "copick")
    if drop_junk:
        clean = picks.loc[~picks["junk"].to_numpy(bool)].drop(columns=["class", "class_confidence", "junk", "junk_reason"])
        paths["clean"] = str(write_csv(clean, out / "picks_clean.csv"))
        paths["clean_star"] = str(write_star(star_frame(clean, star_name, shape, voxel_size), out / "picks_clean.star"))
    return paths


def write_averages(out: Path, averages: dict[int, np.ndarray], voxel_size) -> dict[int, str]:
    from ..io.mrc import write_mrc

    (out / "averages").mkdir()
    paths = {}
    for k, avg in averages.items():
        p = out / "averages" / f"{class_object(k)}.mrc"
        write_mrc(p, avg.astype(np.float32), voxel_size)
        paths[k] = str(p)
    return paths


def gallery(out_png: Path, averages: dict[int, np.ndarray], classes: pd.DataFrame, voxel_size, title: str = "") -> Path:
    """One row per class: central z, y and x slices of its average, with count and junk reason.
    Shown with particles dark (as in the tomogram), each class on its own grey scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(averages)
    fig, axes = plt.subplots(max(1, len(ks)), 3, figsize=(6.6, 2.2 * max(1, len(ks)) + 0.4), squeeze=False)
    info = classes.set_index("class")
    for row, k in zip(axes, ks):
        a = averages[k]
        c = a.shape[0] // 2
        lo, hi = np.percentile(a, [1, 99])
        for ax, sl, name in zip(row, (a[c], a[:, c], a[:, :, c]), ("xy (z centre)", "xz", "yz")):
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == ks[0]:
                ax.set_title(name, fontsize=8)
        r = info.loc[k]
        junk = bool(r["junk"])
        row[0].set_ylabel(f"class {k}\n{int(r['count'])} picks" + ("\nJUNK" if junk else ""), fontsize=8,
                          color="firebrick" if junk else "black")
        if junk:
            row[1].set_xlabel("\n".join(textwrap.wrap(str(r["junk_reason"]), 48)), fontsize=7, color="firebrick")
    box_A = averages[ks[0]].shape[0] * float(np.max(voxel_size)) if ks else 0
    fig.suptitle(f"{title}  (box {box_A:.0f} A)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


class StackWriter:
    """Boxes into an MRC volume stack (n, b, b, b) memory-mapped on disk, filled batch by batch."""

    def __init__(self, path: Path, n: int, box: int, voxel_size) -> None:
        import mrcfile

        self.path = path
        self.mrc = mrcfile.new_mmap(str(path), shape=(n, box, box, box), mrc_mode=2, overwrite=True)
        vz, vy, vx = voxel_size
        self.mrc.voxel_size = (vx, vy, vz)

    def put(self, index: np.ndarray, boxes: np.ndarray) -> None:
        self.mrc.data[index] = boxes

    def close(self) -> None:
        self.mrc.update_header_stats()
        self.mrc.close()


def subvolume_star(picks: pd.DataFrame, stack_name: str, tomo_name: str, shape, voxel_size, box: int,
                   box_voxel_size=None) -> pd.DataFrame:
    """STAR rows of the exported boxes: the picks' coordinates in the tomogram (``shape``, ``voxel_size``)
    and the boxes' own pixel size (``box_voxel_size``: the image they were cut from, when resampled)."""
    star = star_frame(picks, tomo_name, shape, voxel_size)
    star.insert(0, "rlnImageName", [f"{i + 1:06d}@{stack_name}" for i in range(len(picks))])
    star["rlnClassNumber"] = picks["class"].to_numpy()
    star["rlnImageSize"] = box
    star["rlnImagePixelSize"] = float(np.max(voxel_size if box_voxel_size is None else box_voxel_size))
    return star
