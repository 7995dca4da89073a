"""napari layers for a run's outputs: the tomogram, semantic and instance labels, picks, with scale.

``layers(result_dir)`` builds napari LayerDataTuples (data, kwargs, kind) without importing napari,
so they can be checked headless; ``open_in_napari`` (the ``viz`` extra) shows them. The same
folder also opens with ``napari --plugin napari-ome-zarr NAME/NAME.zarr`` (image + labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import PicketError


def layers(result_dir: str | Path, workflows: list[str] | None = None, level: int = 0) -> list[tuple]:
    """LayerDataTuples for one tomogram's result folder (OUT/NAME), scale in Angstrom (z, y, x)."""
    from .io.omezarr import open_image, open_labels
    from .io.picks import read_points

    result_dir = Path(result_dir)
    rj = result_dir / "run.json"
    if not rj.exists():
        raise PicketError(result_dir, "has no run.json", "give a tomogram's folder inside the --out of `picket-dask run`")
    doc = json.loads(rj.read_text())
    image = Path(doc["image"])
    data, scale, _ = open_image(image, level)
    lo, hi = np.percentile(np.asarray(data[data.shape[0] // 2].compute()), [1, 99])
    out: list[tuple] = [(data, {"name": doc["name"], "scale": scale, "contrast_limits": (float(lo), float(hi))}, "image")]
    wfs = workflows or list(doc["picks"])
    for pair in dict.fromkeys("-".join(w.split("-")[:2]) for w in wfs):
        sem, _ = open_labels(image, f"semantic-{pair}")
        out.append((sem, {"name": f"semantic-{pair}", "scale": scale, "opacity": 0.4, "visible": False}, "labels"))
    for wf in wfs:
        inst, _ = open_labels(image, f"instances-{wf}")
        out.append((inst, {"name": f"instances-{wf}", "scale": scale, "opacity": 0.5, "visible": False}, "labels"))
        pts = read_points(doc["picks"][wf]["csv"])[["z", "y", "x"]].to_numpy(float)
        out.append((pts, {"name": f"picks-{wf}", "scale": scale, "size": 10, "face_color": "transparent",
                          "border_color": "cyan", "out_of_slice_display": True}, "points"))
    return out


def open_in_napari(result_dir: str | Path, workflows: list[str] | None = None):
    """Open the layers in a napari viewer (needs the ``viz`` extra) and return the viewer."""
    try:
        import napari
    except ImportError:
        raise PicketError("view", "napari is not installed", "pip install 'picket-dask[viz]' (or pip install napari[all])") from None
    viewer = napari.Viewer()
    for data, kwargs, kind in layers(result_dir, workflows):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer
