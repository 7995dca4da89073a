"""napari layers for a run's outputs: the tomogram, semantic and instance labels, picks, with scale.

``layers(result_dir)`` builds napari LayerDataTuples (data, kwargs, kind) without importing napari,
so they can be checked headless; ``open_in_napari`` (the ``viz`` extra) shows them. What opens:

- the tomogram, axes z, y, x in Angstrom (the scale bar shows Angstrom);
- the first workflow's particles (its instance labels), visible; every other label layer hidden
  (the semantic labels, the context mask where one was written, the user's ``--mask``);
- each workflow's picks as rings on every z slice their particle spans, each ring the particle's
  cross-section there (a sphere of the instance's volume), so a pick is seen wherever its
  particle is, not only on the slice nearest its centroid. One point per pick and slice, which
  works the same on every napari >= 0.5 without per-version projection settings (napari 0.9
  dropped ``out_of_slice_display``; its ``projection_mode`` needs a thick dims slice). Each ring carries
  its pick's id, score and contrast as point features (napari shows them on hover, and colours by them).

The same folder also opens with ``napari --plugin napari-ome-zarr NAME/NAME.zarr`` (image + labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PicketError
from .io.roi import COPICK, load_mask
from .progress import warn

AXES = ("z", "y", "x")
UNITS = ("angstrom",) * 3
# semantic labels: 1 particle (amber), 255 border voxels (translucent grey); None is napari's
# default entry for any other value (without one napari warns that missing keys are transparent)
SEMANTIC_COLORMAP = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.78, 0.0, 1.0), 255: (0.31, 0.31, 0.31, 0.5)}
PICK_COLORS = ("cyan", "magenta", "yellow", "lime", "orange", "dodgerblue")
DEFAULT_DIAMETER_VOX = 10.0  # picks files without instance sizes (size_vox 0)


def pick_rings(picks: pd.DataFrame, voxel_size, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring positions (n, 3) (z, y, x voxels), diameters (n,) in y voxels and pick ids (n,): one ring
    per pick and z slice its particle spans, the particle taken as a sphere of its instance's volume
    (``size_vox`` voxels) and each ring its cross-section on that slice."""
    vz, vy, vx = (float(v) for v in voxel_size)
    z0, y0, x0 = (picks[c].to_numpy(float) for c in ("z", "y", "x"))
    ids = picks["id"].to_numpy() if "id" in picks else np.arange(1, len(picks) + 1)
    vol = picks["size_vox"].to_numpy(float) if "size_vox" in picks else np.zeros(len(picks))
    r_A = np.where(vol > 0, np.cbrt(3 * vol * vz * vy * vx / (4 * np.pi)), DEFAULT_DIAMETER_VOX * vy / 2)
    rz = r_A / vz
    lo = np.clip(np.ceil(z0 - rz), 0, shape[0] - 1).astype(int)
    hi = np.clip(np.floor(z0 + rz), 0, shape[0] - 1).astype(int)
    near = np.clip(np.round(z0), 0, shape[0] - 1).astype(int)
    lo, hi = np.minimum(lo, near), np.maximum(hi, near)  # a particle thinner than a slice: its nearest one
    n = hi - lo + 1
    pick = np.repeat(np.arange(len(picks)), n)
    z = lo[pick] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    dz_A = (z - z0[pick]) * vz
    diam = 2 * np.sqrt(np.maximum(r_A[pick] ** 2 - dz_A**2, 0)) / vy
    rings = np.column_stack([z.astype(float), y0[pick], x0[pick]])
    return rings, np.maximum(diam, 1.0), ids[pick]


def layers(result_dir: str | Path, workflows: list[str] | None = None, level: int = 0) -> list[tuple]:
    """LayerDataTuples (data, kwargs, kind) for one tomogram's result folder (OUT/NAME); plain arrays
    and keyword arguments of napari's ``add_image`` / ``add_labels`` / ``add_points``, scale in Angstrom."""
    from .io.grid import image_grid
    from .io.omezarr import open_image, open_labels
    from .io.picks import read_points
    from .io.results import read_run

    doc = read_run(result_dir)  # paths resolved against the folder: it may have been moved
    image = Path(doc["image"])
    data, scale, _ = open_image(image, level)
    # the image and labels on their (working) grid, placed where they lie in the tomogram's frame (io/grid.py:
    # only the recorded translation is read here); level L's mean voxels are centred (2^L - 1) / 2 voxels in
    f = 2**level
    origin = image_grid(image, scale, data.shape).translation_A
    translate = tuple(t + v * (f - 1) / (2 * f) for t, v in zip(origin, scale))
    common = {"scale": scale, "translate": translate, "axis_labels": AXES, "units": UNITS}
    lo, hi = np.percentile(np.asarray(data[data.shape[0] // 2].compute()), [1, 99])
    out: list[tuple] = [(data, {"name": doc["name"], "contrast_limits": (float(lo), float(hi)), **common}, "image")]
    wfs = workflows or list(doc["picks"])
    for pair in dict.fromkeys("-".join(w.split("-")[:2]) for w in wfs):
        sem, _ = open_labels(image, f"semantic-{pair}")
        out.append((sem, {"name": f"semantic-{pair}", "opacity": 0.4, "visible": False,
                          "colormap": dict(SEMANTIC_COLORMAP), **common}, "labels"))
    if (image / "labels" / "context").exists():  # gold, extreme density and membranes masked before instances
        ctx, _ = open_labels(image, "context")
        out.append((ctx, {"name": "context", "opacity": 0.4, "visible": False, **common}, "labels"))
    for i, wf in enumerate(wfs):
        inst, _ = open_labels(image, f"instances-{wf}")
        out.append((inst, {"name": f"instances-{wf}", "opacity": 0.5, "visible": i == 0, **common}, "labels"))
    shape = tuple(int(n) for n in doc["shape_zyx"])  # picks: the source tomogram's voxels and voxel size (run.json)
    vs = tuple(float(v) for v in doc["voxel_size_A"])
    for key, option in (("mask", "--mask"), ("exclude", "--exclude")):  # the user's regions, placed in Angstrom
        where = (doc.get(key) or {}).get("path")
        if not where or not (where.startswith(COPICK) or Path(where).exists()):
            continue
        try:
            roi = load_mask(where, doc["tomogram"], doc["name"], shape, vs[0], option=option)
        except PicketError as exc:  # a copick project moved, copick not installed here: the rest still shows
            warn(f"view: the {key} is left out ({exc})")
            continue
        inside = (roi.data != 0).astype(np.uint8)  # labels need integers: 1 inside
        out.append((inside, {"name": key, "opacity": 0.3, "visible": False, "axis_labels": AXES, "units": UNITS,
                             "scale": tuple(v / s for v, s in zip(vs, roi.scale)),  # its voxels tile the same box:
                             "translate": tuple(0.5 * (v / s - v) for v, s in zip(vs, roi.scale))}, "labels"))
    for i, wf in enumerate(wfs):
        picks = read_points(doc["picks"][wf]["csv"])
        rings, diam, ids = pick_rings(picks, vs, shape)
        features = {"pick": ids}  # per ring; with the pick's score and contrast, shown on hover and for colouring by
        if "id" in picks:
            row = pd.Index(picks["id"]).get_indexer(ids)
            features.update({c: picks[c].to_numpy()[row] for c in ("score", "contrast") if c in picks})
        out.append((rings, {"name": f"picks-{wf}", "size": diam, "symbol": "disc", "face_color": "transparent",
                            "border_color": PICK_COLORS[i % len(PICK_COLORS)], "border_width": 0.12,
                            "border_width_is_relative": True, "features": features, "visible": True,
                            "scale": vs, "axis_labels": AXES, "units": UNITS}, "points"))
    return out


def _version(v: str) -> tuple[int, ...]:
    import re

    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])


def open_in_napari(result_dir: str | Path, workflows: list[str] | None = None):
    """Open the layers in a napari viewer (needs the ``viz`` extra) and return the viewer."""
    from .errors import PicketError

    try:
        import napari
    except ImportError:
        raise PicketError("view", "napari is not installed", "pip install 'picket-dask[viz]' (or pip install napari[all])") from None
    specs = layers(result_dir, workflows)
    viewer = napari.Viewer()
    for data, kwargs, kind in specs:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.axis_labels = AXES
    viewer.scale_bar.visible = True
    if _version(napari.__version__) < (0, 7, 1):  # later versions take the unit from the layers (and deprecate this)
        viewer.scale_bar.unit = UNITS[0]
    return viewer
