"""PNG previews: central XY and XZ slices of the tomogram (each the mean of SLAB_VOX slices) with the
segmentation and picks overlaid (the image blurred in-plane by one voxel), the lamella's surfaces drawn on the XZ slice and the context mask in blue."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SLAB_VOX = 5  # slices averaged for each panel's image


def preview(image_path: str | Path, semantic_name: str | None, picks_zyx: np.ndarray | None, out_png: str | Path,
            title: str = "", slab_vox: int = 5) -> Path:
    """Write a two-panel PNG (XY at the central z, XZ at the central y); picks within ``slab_vox`` shown.
    ``picks_zyx``: (n, 3) in the source tomogram's voxels (the picks files' x, y, z), drawn on the image's grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io.atomic import ensure_parent
    from .io.omezarr import open_image, open_labels

    out_png = ensure_parent(out_png)
    data, vs, _ = open_image(image_path)
    if picks_zyx is not None and len(picks_zyx):
        from .io.grid import image_grid

        picks_zyx = image_grid(image_path, vs, data.shape).to_work(picks_zyx)
    lamella = None
    if semantic_name:
        from .segment.lamella import Lamella

        lamella = Lamella.from_dict(open_labels(image_path, semantic_name)[1].get("lamella"), data.shape)
    zc, yc = data.shape[0] // 2, data.shape[1] // 2
    # each panel the mean of SLAB_VOX slices around the cut (IMOD's slab thickness), sqrt(5) less noise at the same
    # positions, so faint particles show; the labels and picks stay those of the central slice and its +-slab_vox
    h = SLAB_VOX // 2
    from scipy.ndimage import gaussian_filter  # and in-plane a Gaussian of one voxel: the noise is finer than particles

    xy = gaussian_filter(np.asarray(data[max(zc - h, 0):zc + h + 1].mean(axis=0).compute(), float), 1.0)
    xz = gaussian_filter(np.asarray(data[:, max(yc - h, 0):yc + h + 1].mean(axis=1).compute(), float), 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [1, 1]})
    for ax, img, lab_slice, (row_axis, col_axis, cut_axis, cut) in (
        (axes[0], xy, (zc, slice(None), slice(None)), (1, 2, 0, zc)),
        (axes[1], xz, (slice(None), yc, slice(None)), (0, 2, 1, yc)),
    ):
        lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                  aspect=vs[row_axis] / vs[col_axis])
        if semantic_name:
            labels, _ = open_labels(image_path, semantic_name)
            lab = np.asarray(labels[lab_slice].compute())
            overlay = np.ma.masked_where(lab != 1, lab)
            ax.imshow(overlay, cmap="autumn", alpha=0.35, interpolation="nearest", aspect=vs[row_axis] / vs[col_axis])
        if (Path(image_path) / "labels" / "context").exists():
            ctx, _ = open_labels(image_path, "context")
            c = np.asarray(ctx[lab_slice].compute())
            ax.imshow(np.ma.masked_where(c == 0, c), cmap="winter", alpha=0.45, interpolation="nearest",
                      aspect=vs[row_axis] / vs[col_axis])
        if cut_axis == 1 and lamella is not None and lamella.found:
            x = np.arange(data.shape[2])
            for extract, style in ((False, "--"), (True, ":")):
                lo, hi = lamella.surfaces(np.full(x.shape, yc), x, extract)
                ax.plot(x, lo, style, color="lime", lw=1.2)
                ax.plot(x, hi, style, color="lime", lw=1.2, label="lamella (fit: dashed, picks: dotted)" if extract else None)
            ax.legend(loc="upper right", fontsize=7)
        if picks_zyx is not None and len(picks_zyx):
            p = np.asarray(picks_zyx)
            near = np.abs(p[:, cut_axis] - cut) <= slab_vox
            ax.scatter(p[near, col_axis], p[near, row_axis], s=40, facecolors="none", edgecolors="cyan", linewidths=1.2)
        ax.set_title(("XY at z=%d" % zc) if cut_axis == 0 else ("XZ at y=%d" % yc))
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)" if cut_axis == 0 else "z (voxels)")
    fig.suptitle(title or Path(image_path).name)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
