"""copick projects: read a run's tomogram, write picks and segmentations back through the copick API.

Inputs are named ``copick://CONFIG.json?run=RUN[&voxel_spacing=10][&tomo_type=wbp]``; the CLI
builds these from ``--copick CONFIG.json --run RUN``. Needs the ``copick`` package (which pins
zarr < 3: install it in its own environment, ``pip install 'picket-dask[copick]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlparse

import dask.array as da
import numpy as np
import pandas as pd

from ..chunking import RECHUNK
from ..errors import PicketError

SCHEME = "copick://"


@dataclass(frozen=True)
class CopickSource:
    """Where a tomogram lives in a copick project."""

    config: str
    run: str
    voxel_spacing: float | None = None
    tomo_type: str | None = None

    def spec(self) -> str:
        q = f"run={quote(self.run)}"
        if self.voxel_spacing is not None:
            q += f"&voxel_spacing={self.voxel_spacing:g}"
        if self.tomo_type:
            q += f"&tomo_type={quote(self.tomo_type)}"
        return f"{SCHEME}{self.config}?{q}"


def is_copick(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEME)


def parse(spec: str) -> CopickSource:
    """``copick://CONFIG?run=RUN&voxel_spacing=..&tomo_type=..`` -> CopickSource."""
    u = urlparse(spec)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    if "run" not in q:
        raise PicketError(spec, "names no copick run", "write copick://CONFIG.json?run=RUN_NAME (or --copick CONFIG --run RUN)")
    vs = q.get("voxel_spacing")
    try:
        spacing = float(vs) if vs else None
    except ValueError:
        raise PicketError(spec, f"voxel_spacing {vs!r} is not a number", "write voxel_spacing=10.0 (Angstrom) or leave it out") from None
    return CopickSource((u.netloc + u.path), q["run"], spacing, q.get("tomo_type"))


def _root_run(src: CopickSource, check_run: bool = True):
    try:
        import copick
    except ImportError:
        raise PicketError(src.config, "the copick package is not installed", "pip install 'picket-dask[copick]' (copick needs zarr<3)") from None
    try:
        root = copick.from_file(src.config)
    except Exception as exc:
        raise PicketError(src.config, f"not a readable copick configuration ({type(exc).__name__})", "give the project's config.json") from None
    if not check_run:
        return root, None
    run = root.get_run(src.run)
    if run is None:
        names = [r.name for r in root.runs][:10]
        raise PicketError(src.config, f"has no run {src.run!r} (runs: {names})", "pick one of the project's runs")
    return root, run


def runs_with_tomograms(config: str, voxel_spacing: float | None = None, tomo_type: str | None = None) -> tuple[list[str], list[str]]:
    """The project's runs (names, in the project's order) that hold a tomogram (at ``voxel_spacing`` and of
    ``tomo_type`` where given), and those that do not: ``--all-runs`` processes the first and names the second."""
    root, _ = _root_run(CopickSource(config, ""), check_run=False)
    have, lack = [], []
    for run in root.runs:
        spacings = [vs for vs in run.voxel_spacings
                    if voxel_spacing is None or abs(float(vs.voxel_size) - voxel_spacing) < 1e-3]
        ok = any(vs.tomograms if tomo_type is None else vs.get_tomogram(tomo_type) is not None for vs in spacings)
        (have if ok else lack).append(run.name)
    if not have:
        raise PicketError(config, f"has no run with a tomogram{'' if voxel_spacing is None else f' at {voxel_spacing:g} A'}"
                          f"{'' if tomo_type is None else f' of type {tomo_type!r}'} ({len(lack)} runs)",
                          "import tomograms into the project, or check --copick-voxel-spacing / --copick-tomo-type")
    return have, lack


def _voxel_spacing(run, src: CopickSource):
    spacings = run.voxel_spacings
    if not spacings:
        raise PicketError(src.spec(), "the run has no voxel spacings (no tomograms)", "import a tomogram into the run first")
    if src.voxel_spacing is None:
        return spacings[0]
    vs = run.get_voxel_spacing(src.voxel_spacing)
    if vs is None:
        raise PicketError(src.spec(), f"no voxel spacing {src.voxel_spacing} (have {[v.voxel_size for v in spacings]})", "pick one of those")
    return vs


def check_object(spec: str, object_name: str) -> None:
    """Refuse a pickable object the project does not define: the picks could not be written back, and
    a run would find that out only after all its work (its output then removed as half-written)."""
    src = parse(spec)
    _check_object(_root_run(src)[0], src, object_name)


def _check_object(root, src: CopickSource, object_name: str) -> None:
    names = [o.name for o in root.config.pickable_objects]
    if object_name not in names:
        raise PicketError(src.config, f"has no pickable object {object_name!r} (objects: {names})",
                          "pass --copick-object with one of them")


def choose_spacing(spacings: list[float], target_A: float) -> float:
    """Of a run's voxel spacings (Angstrom), the one to pick on: the coarsest at most ``target_A`` (5 %
    tolerance, as io/grid.py's resampling), which resolves the smallest particle without reading a finer
    tomogram than that needs (a bin-1 tomogram beside a bin-4 one has 64x the voxels); the finest when
    every spacing is coarser."""
    from .grid import TOLERANCE

    fine = [v for v in spacings if v <= target_A * (1 + TOLERANCE)]
    return max(fine) if fine else min(spacings)


def with_spacing(spec: str, target_A: float) -> tuple[str, str | None]:
    """``spec`` with its voxel spacing made explicit (``choose_spacing`` when it names none and the run has
    several), and a line for the console saying what was chosen (None when there was no choice)."""
    src = parse(spec)
    if src.voxel_spacing is not None:
        return spec, None
    _, run = _root_run(src)
    have = sorted(float(v.voxel_size) for v in run.voxel_spacings)
    if len(have) < 2:
        return spec, None
    from .grid import WORK_VOXELS_PER_DIAMETER

    pick = choose_spacing(have, target_A)
    chosen = CopickSource(src.config, src.run, pick, src.tomo_type).spec()
    return chosen, (f"{src.run}: voxel spacings {', '.join(f'{v:g}' for v in have)} A: reading {pick:g} A (the coarsest "
                    f"within {target_A:g} A, where the smallest particle spans {WORK_VOXELS_PER_DIAMETER:g} voxels; "
                    "--copick-voxel-spacing chooses)")


def open_copick(spec: str, chunks=128) -> tuple[da.Array, tuple[float, float, float], str]:
    """The run's tomogram (level 0 of its OME-Zarr) lazily, its voxel spacing (z, y, x) and the run's name.

    A reader like ``mrc.open_mrc``: ``tomogram.open_tomogram`` dispatches to it (this module does
    not import tomogram.py, so the dependency runs one way).
    """
    import zarr

    src = parse(spec)
    _, run = _root_run(src)
    vs = _voxel_spacing(run, src)
    tomos = vs.tomograms
    tomo = vs.get_tomogram(src.tomo_type) if src.tomo_type else (tomos[0] if tomos else None)
    if tomo is None:
        raise PicketError(spec, f"no tomogram {src.tomo_type!r} at {vs.voxel_size} A (have {[t.tomo_type for t in tomos]})", "pick one of those")
    group = zarr.open_group(tomo.zarr(), mode="r")
    arr = da.from_zarr(group["0"])
    if chunks:
        arr = arr.rechunk(chunks, method=RECHUNK)
    return arr, (float(vs.voxel_size),) * 3, src.run


def open_segmentation(spec: str, name: str, user_id: str | None, session_id: str | None,
                      voxel_A: float, option: str = "--mask") -> tuple[da.Array, float, str]:
    """The run's segmentation ``name`` (of ``user_id`` / ``session_id`` when given; multilabel: any label) at the
    voxel size nearest ``voxel_A``: its level 0 lazily (z, y, x), its voxel size (Angstrom) and its full name
    ``copick:NAME:USER:SESSION``. Several at that size (users, sessions) are refused: which one is the user's."""
    import zarr

    src = parse(spec)
    _, run = _root_run(src)
    asked = "copick:" + ":".join(p for p in (name, user_id, session_id) if p)
    segs = [s for s in run.get_segmentations(name=name) if (user_id is None or s.user_id == user_id)
            and (session_id is None or str(s.session_id) == session_id)]
    if not segs:
        have = sorted({f"{s.name}:{s.user_id}:{s.session_id}" for s in run.segmentations})[:10]
        raise PicketError(f"{option} {asked}", f"run {src.run!r} has no such segmentation (segmentations: {have})",
                          "segment the run first, or name one of those")
    near = min((abs(float(s.voxel_size) - voxel_A), float(s.voxel_size)) for s in segs)[1]  # the nearest; ties: finer
    at = [s for s in segs if abs(float(s.voxel_size) - near) < 1e-3]
    if len(at) > 1:
        raise PicketError(f"{option} {asked}", f"matches {len(at)} segmentations of run {src.run!r} at {near:g} A "
                          f"({', '.join(sorted(f'{s.user_id}:{s.session_id}' for s in at))})",
                          f"name one: {option} copick:{name}:USER:SESSION")
    seg = at[0]
    arr = da.from_zarr(zarr.open_group(seg.zarr(), mode="r")["0"])
    return arr, float(seg.voxel_size), f"copick:{seg.name}:{seg.user_id}:{seg.session_id}"


def write_picks(spec: str, df: pd.DataFrame, session_id: str, object_name: str = "particle", user_id: str = "picket") -> str:
    """Store picks (Angstrom) as copick picks of ``object_name`` by ``user_id`` in ``session_id``, each with its score
    (copick's ``score``, localize/score.py; copick's default 1.0 where the picks have none); return the file's id."""
    from copick.models import CopickLocation, CopickPoint

    src = parse(spec)
    root, run = _root_run(src)
    _check_object(root, src, object_name)
    picks = run.new_picks(object_name=object_name, session_id=session_id, user_id=user_id, exist_ok=True)
    scores = df["score"].to_numpy(float) if "score" in df else np.ones(len(df))
    picks.points = [CopickPoint(location=CopickLocation(x=float(r.x_A), y=float(r.y_A), z=float(r.z_A)), score=float(s))
                    for r, s in zip(df.itertuples(), scores)]
    picks.store()
    return f"{picks.user_id}_{picks.session_id}_{picks.pickable_object_name}"


def write_segmentation(spec: str, mask: da.Array, voxel_size: float, name: str, session_id: str, user_id: str = "picket") -> str:
    """Store a binary (uint8) segmentation through the copick API as an OME-Zarr (NGFF 0.4)."""
    from ..progress import compute
    from .omezarr import _create, _multiscales, _open_group, _set_ome_attrs

    src = parse(spec)
    _, run = _root_run(src)
    seg = run.new_segmentation(voxel_size=float(voxel_size), name=name, session_id=session_id, is_multilabel=False,
                               user_id=user_id, exist_ok=True)
    group = _open_group(seg.zarr(), "0.4", "w")
    target = _create(group, "0", tuple(mask.shape), tuple(int(c) for c in mask.chunksize), np.uint8, "0.4")
    compute(da.store(mask.astype(np.uint8), target, lock=False, compute=False), label=f"copick segmentation {name}")
    _set_ome_attrs(group, "0.4", "multiscales", [_multiscales((float(voxel_size),) * 3, 1, name, "nearest")])
    return f"{seg.voxel_size}_{seg.user_id}_{seg.session_id}_{seg.name}"
