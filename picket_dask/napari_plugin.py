"""napari reader for a run's result folder: drop ``OUT/NAME`` (or its run.json) on napari, or
``napari OUT/NAME``, and the tomogram, its labels and every workflow's picks open as ``picket-dask
view`` shows them (view.layers: z, y, x in Angstrom).

The contribution is declared in ``picket_dask/napari.yaml`` (npe2's manifest, found through the
``napari.manifest`` entry point in pyproject.toml), so napari discovers it once picket-dask is
installed beside it; nothing here imports napari. Paths that are not a picket-dask result (no
run.json of a run) get None, napari's "not mine", so other readers (napari-ome-zarr for
``NAME.zarr``) keep theirs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .io.results import RUN_JSON


def result_folder(path: str | Path) -> Path | None:
    """The tomogram's result folder (OUT/NAME) that ``path`` names, as the folder or its run.json;
    None when it is not one: no run.json, or one that is not a run's (a batch folder's, unreadable)."""
    p = Path(path)
    folder = p.parent if p.name == RUN_JSON else p
    doc_path = folder / RUN_JSON
    if not doc_path.is_file():
        return None
    try:
        doc = json.loads(doc_path.read_text())
    except (OSError, ValueError):
        return None
    return folder if isinstance(doc, dict) and {"image", "picks"} <= set(doc) else None


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[tuple]] | None:
    """napari's reader hook: a function returning the folder's LayerData tuples, or None."""
    if not isinstance(path, (str, Path)):
        if len(path) != 1:  # several paths: napari stacks them, which means nothing for result folders
            return None
        path = path[0]
    return read_result if result_folder(path) is not None else None


def read_result(path: str | Sequence[str]) -> list[tuple]:
    """The LayerData tuples (data, kwargs, kind) of one result folder (view.layers)."""
    from .view import layers

    if not isinstance(path, (str, Path)):
        path = path[0]
    folder = result_folder(path)
    if folder is None:  # get_reader said yes; the folder changed since
        raise ValueError(f"{path}: not a picket-dask result folder (OUT/NAME with run.json)")
    return layers(folder)
