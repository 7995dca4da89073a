"""A tomogram's result folder OUT/NAME and its run.json.

The paths run.json records (the OME-Zarr image, every picks file, the classes folders) are
relative to the folder that holds it, so results can be moved, shared or opened from any working directory;
``read_run`` resolves them against that folder (and still reads run.json files written with
absolute paths or paths relative to where ``run`` was started).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import PicketError

RUN_JSON = "run.json"


def relative_to(path: str | Path, folder: str | Path) -> str:
    """``path`` written relative to ``folder`` (both taken from the current directory if relative)."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def resolve_in(path: str | Path, folder: str | Path) -> Path:
    """A path from run.json as a usable path: relative ones are taken from ``folder``. An older
    run.json's path relative to the directory ``run`` was started in is used as it is when it
    exists there and not in ``folder``."""
    p = Path(path)
    if p.is_absolute():
        return p
    inside = Path(folder) / p
    return p if not inside.exists() and p.exists() else inside


def write_run(folder: str | Path, doc: dict) -> Path:
    """Write ``doc`` as ``folder/run.json`` (atomically), its image and picks paths relative to ``folder``."""
    folder = Path(folder)
    doc = dict(doc)
    if doc.get("image"):
        doc["image"] = relative_to(doc["image"], folder)
    doc["picks"] = {wf: {fmt: relative_to(p, folder) for fmt, p in paths.items()} for wf, paths in doc.get("picks", {}).items()}
    if doc.get("classes"):  # workflow -> classes folder, or why there is none
        doc["classes"] = {wf: relative_to(v, folder) if Path(v).exists() else v for wf, v in doc["classes"].items()}
    out = folder / RUN_JSON
    tmp = folder / f".{RUN_JSON}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(out)
    return out


def run_folders(out: str | Path) -> list[Path]:
    """The tomogram folders (OUT/NAME holding a run.json) of a run's output folder, sorted by name;
    ``out`` itself when it is one tomogram's folder."""
    out = Path(out)
    if (out / RUN_JSON).is_file():
        return [out]
    return sorted(rj.parent for rj in out.glob(f"*/{RUN_JSON}"))


def batch_runs(out: str | Path) -> tuple[list[Path], list[dict]]:
    """The tomogram folders of a run's output folder ``out`` and their run.json documents (``read_run``), for the
    commands that work on a whole batch (collect, report); one line when ``out`` is one tomogram's folder or holds
    none."""
    out = Path(out)
    if (out / RUN_JSON).is_file():
        raise PicketError(out, "is one tomogram's folder", f"give the run's --out folder that holds it ({out.parent})")
    folders = run_folders(out)
    docs = [read_run(f) for f in folders]
    if not docs:
        raise PicketError(out, "holds no tomogram folders with a run.json", "give the --out folder of `picket-dask run`")
    return folders, docs


def read_run(folder: str | Path) -> dict:
    """``folder/run.json`` with its image and picks paths resolved against ``folder``."""
    folder = Path(folder)
    rj = folder / RUN_JSON
    if not rj.is_file():
        raise PicketError(folder, "has no run.json", "give a tomogram's folder inside the --out of `picket-dask run` (OUT/NAME)")
    try:
        doc = json.loads(rj.read_text())
    except ValueError as exc:
        raise PicketError(rj, f"is not valid JSON ({exc})", "run `picket-dask run` again for this tomogram") from None
    if doc.get("image"):
        doc["image"] = str(resolve_in(doc["image"], folder))
    doc["picks"] = {wf: {fmt: str(resolve_in(p, folder)) for fmt, p in paths.items()} for wf, paths in doc.get("picks", {}).items()}
    if doc.get("classes"):
        doc["classes"] = {wf: str(folder / v) if (folder / v).exists() else v for wf, v in doc["classes"].items()}
    return doc
