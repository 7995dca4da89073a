"""Picks (instance centroids) in the formats the field reads, and readers for evaluation.

Coordinates: voxel indices (z, y, x) of the tomogram's data array, origin at the centre of
voxel 0; Angstrom = voxels x voxel size. Per format:
- CSV: x, y, z (voxels, float), x_A, y_A, z_A, size_vox, id[, score, contrast] (sorted by score).
- PickET YAML: the reference's ``metadata`` + ``Predicted_Particle_Centroid_Coordinates`` with
  integer x, y, z (truncated, as the reference writes them).
- RELION 5 STAR: ``rlnTomoName`` and ``rlnCenteredCoordinate{X,Y,Z}Angst`` = (voxel - size / 2) x
  voxel size, i.e. origin at the tomogram's centre (size / 2 in voxels, RELION's convention),
  plus ``rlnCoordinate{X,Y,Z}`` in voxels for older tools, and ``rlnAutopickFigureOfMerit`` = score.
- copick: points in Angstrom with a 4x4 ``transformation_`` (identity), written through the
  copick API when the ``copick`` extra is installed and a project is given, else the same JSON.
- CZ cryo-ET data portal ndjson: ``{"type": "point", "location": {"x", "y", "z"}[, "score"]}`` in voxels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import PicketError
from .atomic import ensure_dir

FORMATS = ("csv", "yaml", "star", "copick", "ndjson")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # pid: two runs collecting into one folder
    tmp.write_text(text)
    os.replace(tmp, path)


def picks_frame(centroids_zyx: np.ndarray, voxel_size: tuple[float, float, float], sizes=None, ids=None,
                scores=None, contrast=None) -> pd.DataFrame:
    """Table of picks: x, y, z voxels; x_A, y_A, z_A Angstrom; size_vox; id; with ``scores``
    also score and contrast (localize/score.py), sorted by score, best first."""
    c = np.asarray(centroids_zyx, dtype=float).reshape(-1, 3)
    vz, vy, vx = voxel_size
    n = len(c)
    df = pd.DataFrame({"x": c[:, 2], "y": c[:, 1], "z": c[:, 0], "x_A": c[:, 2] * vx, "y_A": c[:, 1] * vy,
                       "z_A": c[:, 0] * vz, "size_vox": np.zeros(n, int) if sizes is None else np.asarray(sizes),
                       "id": np.arange(1, n + 1) if ids is None else np.asarray(ids)})
    if scores is not None:
        df["score"] = np.asarray(scores, float)
        if contrast is not None:
            df["contrast"] = np.asarray(contrast, float)
        df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    return df


def _finite_numeric(df: pd.DataFrame) -> bool:
    """Only int and float columns, every float finite: the fast writers below format these exactly
    as pandas / json / starfile do (NaN and other column types take the library's own path)."""
    return all(df[c].dtype.kind in "iuf" for c in df.columns) and \
        all(np.isfinite(df[c].to_numpy()).all() for c in df.columns if df[c].dtype.kind == "f")


def _rows(df: pd.DataFrame, float_format: str, sep: str, first: str | None = None) -> str:
    """Text lines of ``df``'s values (``float_format`` for float columns, str for integers,
    ``first`` as a constant leading field): what ``to_csv`` writes for finite numbers, built with
    one %-format per row instead of pandas' per-value formatting (~0.2 s per 10^4 rows)."""
    fmt = sep.join(([] if first is None else [first.replace("%", "%%")]) +
                   [float_format if df[c].dtype.kind == "f" else "%d" for c in df.columns]) + "\n"
    return "".join(fmt % row for row in zip(*(df[c].to_numpy().tolist() for c in df.columns)))


def _runs(names: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in ``names`` (a file of several tomograms holds one run each)."""
    starts = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist(), len(names)] if len(names) else []
    return list(zip(starts, starts[1:]))


def _plain(text) -> bool:
    """A CSV field pandas writes as it is (QUOTE_MINIMAL: no separator, quote or line break; not empty)."""
    return isinstance(text, str) and bool(text) and not any(ch in text for ch in ',"\n\r')


def csv_text(df: pd.DataFrame) -> str:
    """The CSV (after its comment line): ``df.to_csv(index=False, float_format="%.3f")``; finite numbers, after
    at most one leading column of names (a run's collected picks: ``tomogram``), formatted directly."""
    plain = all(_plain(c) for c in df.columns)
    lead = len(df.columns) > 0 and df[df.columns[0]].dtype.kind == "O"  # object, or pandas 3's str
    names = df[df.columns[0]].to_numpy() if lead else None
    rest = df.iloc[:, 1:] if lead else df
    if not plain or not _finite_numeric(rest) or os.linesep != "\n" or (lead and not all(_plain(n) for n in names)):
        return df.to_csv(index=False, float_format="%.3f")
    head = ",".join(map(str, df.columns)) + "\n"
    if not lead:
        return head + _rows(df, "%.3f", ",")
    return head + "".join(_rows(rest.iloc[a:b], "%.3f", ",", names[a]) for a, b in _runs(names))


PICKS_COMMENT = "# x,y,z: voxels (origin: centre of voxel 0); *_A: Angstrom"


def write_csv(df: pd.DataFrame, path: Path, comment: str = PICKS_COMMENT) -> Path:
    """``df`` as CSV after one comment line (written atomically)."""
    _atomic_text(path, comment + "\n" + csv_text(df))
    return path


def picket_yaml_text(df: pd.DataFrame, metadata: dict) -> str:
    """The PickET YAML document: the text ``yaml.safe_dump`` gives for {metadata, coordinates}
    (tests/test_outputs.py checks it), with the metadata through libyaml's emitter where PyYAML
    has it and the coordinate list (integers only) formatted directly: the pure-Python emitter
    took ~1 s per 5,000 picks (4 s with busy worker threads)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    head = yaml.dump({"metadata": json.loads(json.dumps(metadata, default=str))}, Dumper=dumper, sort_keys=False)
    key = "Predicted_Particle_Centroid_Coordinates:"
    if len(df) == 0:
        return f"{head}{key} []\n"
    xyz = np.stack([df[c].to_numpy(float) for c in ("x", "y", "z")], axis=1).astype(np.int64)  # int(): truncated
    rows = "".join(f"- x: {x}\n  y: {y}\n  z: {z}\n" for x, y, z in xyz.tolist())
    return f"{head}{key}\n{rows}"


def write_picket_yaml(df: pd.DataFrame, path: Path, metadata: dict) -> Path:
    _atomic_text(path, picket_yaml_text(df, metadata))
    return path


def write_star(df: pd.DataFrame, path: Path, tomo_name: str, shape_zyx: tuple[int, int, int], voxel_size) -> Path:
    """RELION 5 particles STAR of one tomogram's picks (see the module docstring)."""
    return write_star_frame(star_frame(df, tomo_name, shape_zyx, voxel_size), path)


def write_star_frame(star: pd.DataFrame, path: Path) -> Path:
    """Write a particles table (first column ``rlnTomoName``) as a STAR file's ``data_particles`` block,
    atomically: formatted directly where ``star_text`` can, else by starfile (the text ``starfile.write`` writes)."""
    text = star_text(star)
    if text is None:
        from starfile.writer import StarWriter

        text = StarWriter({"particles": star}).to_string()
    _atomic_text(path, text)
    return path


def star_frame(df: pd.DataFrame, tomo_name: str, shape_zyx: tuple[int, int, int], voxel_size) -> pd.DataFrame:
    """The RELION particles table of the picks (see the module docstring)."""
    vz, vy, vx = voxel_size
    nz, ny, nx = shape_zyx
    star = pd.DataFrame({
        "rlnTomoName": [tomo_name] * len(df),
        "rlnCenteredCoordinateXAngst": (df.x - nx / 2) * vx,
        "rlnCenteredCoordinateYAngst": (df.y - ny / 2) * vy,
        "rlnCenteredCoordinateZAngst": (df.z - nz / 2) * vz,
        "rlnCoordinateX": df.x, "rlnCoordinateY": df.y, "rlnCoordinateZ": df.z,
    })
    if "score" in df.columns:
        star["rlnAutopickFigureOfMerit"] = df.score.to_numpy()
    return star


def star_text(star: pd.DataFrame) -> str | None:
    """What ``starfile.write({"particles": star})`` writes (its header line, one loop block, values
    at %.6f, the names quoted as starfile quotes them), for a first column of tomogram names and
    finite numbers after it; None otherwise (starfile then writes it). starfile formats every value
    through DataFrame.map and to_csv: 1.4 s for 58,000 picks."""
    try:
        from starfile.writer import package_info, quote
    except ImportError:  # pragma: no cover - a starfile without these helpers
        return None
    names, rest = star.iloc[:, 0].to_numpy(), star.iloc[:, 1:]
    if not all(isinstance(n, str) and not any(c in n for c in "\t\n\r%") for n in names) or not _finite_numeric(rest):
        return None
    head = [package_info(), "", "", "data_particles", "", "loop_"] + [f"_{c} #{i}" for i, c in enumerate(star.columns, 1)]
    rows = "".join(_rows(rest.iloc[a:b], "%.6f", "\t", str(quote(names[a]))) for a, b in _runs(names))
    return "".join(line + "\n" for line in head) + rows + "\n\n"


def read_star_particles(path: Path) -> pd.DataFrame:
    """The particles table of a STAR file, as ``starfile.read(path)["particles"]`` gives it. Written by hand for
    the files ``star_text`` writes (one ``data_particles`` loop, whitespace-separated rows): starfile parses a
    loop's rows in a Python loop (12 ms per 1,000 picks; a run's collect reads every tomogram's), pandas' C
    parser reads them here; any other layout (several blocks, key-value pairs, comments between rows) goes to
    starfile."""
    import starfile

    cols: list[str] = []
    block, n_head = None, 0
    with open(path) as fh:
        for line in fh:
            text = line.strip()
            if text.startswith("_"):
                cols.append(text.split()[0][1:])
            elif cols and text:  # the first row
                break
            elif text.startswith("data_"):
                if block is not None:
                    break
                block = text
            elif text and not text.startswith("#") and text != "loop_":
                block = "other"
            n_head += 1
    if block != "data_particles" or not cols or cols[0] != "rlnTomoName":
        return starfile.read(path, always_dict=True).get("particles", pd.DataFrame())
    try:
        df = pd.read_csv(path, sep=r"\s+", skiprows=n_head, header=None, names=cols, quotechar='"',
                         dtype={cols[0]: str}, keep_default_na=False, na_values=[], comment=None)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    if df.shape[1] != len(cols) or not all(df[c].dtype.kind in "iuf" for c in cols[1:]):
        return starfile.read(path, always_dict=True).get("particles", pd.DataFrame())
    return df


def copick_points(df: pd.DataFrame) -> list[dict]:
    eye = np.eye(4).tolist()
    scores = df.score.to_numpy(float) if "score" in df.columns else np.ones(len(df))
    return [{"location": {"x": float(r.x_A), "y": float(r.y_A), "z": float(r.z_A)}, "transformation_": eye,
             "instance_id": 0, "score": float(sc)} for r, sc in zip(df.itertuples(), scores)]


def _finite(*columns) -> bool:
    return all(np.isfinite(np.asarray(c, float)).all() for c in columns)


def copick_json_text(df: pd.DataFrame, run_name: str, session_id: str, object_name: str = "particle",
                     user_id: str = "picket") -> str:
    """``json.dumps`` of the copick picks document; the points (finite coordinates and scores) are
    formatted directly with json's float text (repr), 1.4 s -> ~0.1 s for 58,000 picks."""
    doc = {"pickable_object_name": object_name, "user_id": user_id, "session_id": session_id, "run_name": run_name,
           "voxel_spacing": None, "unit": "angstrom", "points": [], "trust_orientation": False}
    scores = df.score.to_numpy(float) if "score" in df.columns else np.ones(len(df))
    xyz = [df[c].to_numpy(float) for c in ("x_A", "y_A", "z_A")]
    if not _finite(*xyz, scores):
        return json.dumps({**doc, "points": copick_points(df)})
    eye = json.dumps(np.eye(4).tolist())
    point = f'{{"location": {{"x": %r, "y": %r, "z": %r}}, "transformation_": {eye}, "instance_id": 0, "score": %r}}'
    points = ", ".join(point % p for p in zip(*(a.tolist() for a in (*xyz, scores))))
    head, tail = json.dumps(doc).split('"points": []')  # keys are json-escaped: this text occurs once
    return f'{head}"points": [{points}]{tail}'


def write_copick_json(df: pd.DataFrame, path: Path, run_name: str, session_id: str, object_name: str = "particle",
                      user_id: str = "picket") -> Path:
    _atomic_text(path, copick_json_text(df, run_name, session_id, object_name, user_id))
    return path


def ndjson_text(df: pd.DataFrame) -> str:
    """One ``json.dumps`` line per pick (location in voxels, score to 4 decimals), the finite
    values formatted directly with json's float text (repr)."""
    xyz = [df[c].to_numpy(float) for c in ("x", "y", "z")]
    has_score = "score" in df.columns
    scores = df.score.to_numpy(float) if has_score else np.zeros(len(df))
    if not _finite(*xyz, scores):
        sc = scores if has_score else [None] * len(df)
        lines = [json.dumps({"type": "point", "location": {"x": float(x), "y": float(y), "z": float(z)},
                             **({} if s is None else {"score": round(float(s), 4)})}) for x, y, z, s in zip(*xyz, sc)]
        return "\n".join(lines) + ("\n" if lines else "")
    if has_score:
        return "".join('{"type": "point", "location": {"x": %r, "y": %r, "z": %r}, "score": %r}\n' % (x, y, z, round(s, 4))
                       for x, y, z, s in zip(*(a.tolist() for a in (*xyz, scores))))
    return "".join('{"type": "point", "location": {"x": %r, "y": %r, "z": %r}}\n' % p
                   for p in zip(*(a.tolist() for a in xyz)))


def write_ndjson(df: pd.DataFrame, path: Path) -> Path:
    _atomic_text(path, ndjson_text(df))
    return path


def relion_name(name: str, pattern: str | None) -> str:
    """The ``rlnTomoName`` of tomogram ``name``: the name itself, or with ``pattern`` (a regular expression with
    one group, matching the whole name) that group: RELION names tomograms after their tilt series, so
    ``rec_(.*)`` gives ``TS_01`` for RELION 5's ``rec_TS_01.mrc`` and ``(.*)_[0-9.]+Apx`` for Warp's
    ``TS_01_10.00Apx.mrc``."""
    if not pattern:
        return name
    import re

    flag = f"--relion-tomo-name {pattern}"
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise PicketError(flag, f"is not a regular expression ({exc})", "give one like 'rec_(.*)'") from None
    if rx.groups != 1:
        raise PicketError(flag, f"has {rx.groups} groups", "give exactly one group, the part that is RELION's name: 'rec_(.*)'")
    m = rx.fullmatch(name)
    if m is None or not m.group(1):
        raise PicketError(flag, f"does not match tomogram {name!r} (the whole name, with a non-empty group)",
                          "change the pattern, or leave this tomogram out")
    return m.group(1)


def write_all(df: pd.DataFrame, out_dir: Path, stem: str, tomo_name: str, shape_zyx, voxel_size, metadata: dict,
              star_name: str | None = None) -> dict[str, str]:
    """Write every format into ``out_dir``; return {format: path}. ``star_name``: the STAR's rlnTomoName
    (default ``tomo_name``, which names the copick run)."""
    ensure_dir(out_dir)
    return {
        "csv": str(write_csv(df, out_dir / f"{stem}.csv")),
        "yaml": str(write_picket_yaml(df, out_dir / f"{stem}_picket.yaml", metadata)),
        "star": str(write_star(df, out_dir / f"{stem}.star", star_name or tomo_name, shape_zyx, voxel_size)),
        "copick": str(write_copick_json(df, out_dir / f"{stem}_copick.json", tomo_name, stem)),
        "ndjson": str(write_ndjson(df, out_dir / f"{stem}.ndjson")),
    }


def _star_points(path: Path, star: pd.DataFrame, voxel_size: float | None, shape_zyx) -> pd.DataFrame:
    """x, y, z voxels (and score) of a RELION particles table: its voxel coordinates, else its centred
    Angstrom ones (RELION 5: origin at the tomogram's centre, size / 2, as star_frame writes them)."""
    if {"rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"} <= set(star.columns):
        df = pd.DataFrame({"x": star["rlnCoordinateX"], "y": star["rlnCoordinateY"], "z": star["rlnCoordinateZ"]})
    elif {f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"} <= set(star.columns):
        if voxel_size is None or shape_zyx is None:
            raise PicketError(path, "has RELION 5 centred coordinates (Angstrom from the tomogram's centre)",
                              "give the tomogram (--tomogram T.mrc, or --shape Z Y X --voxel-size A)")
        nz, ny, nx = (int(n) for n in shape_zyx)
        df = pd.DataFrame({a.lower(): star[f"rlnCenteredCoordinate{a}Angst"] / float(voxel_size) + n / 2
                           for a, n in (("X", nx), ("Y", ny), ("Z", nz))})
    else:
        raise PicketError(path, "has neither rlnCoordinate{X,Y,Z} nor rlnCenteredCoordinate{X,Y,Z}Angst",
                          "give a RELION particles STAR file")
    if "rlnAutopickFigureOfMerit" in star.columns:
        df["score"] = star["rlnAutopickFigureOfMerit"].to_numpy(float)
    return df


def read_points(path: str | Path, voxel_size: float | None = None, shape_zyx=None) -> pd.DataFrame:
    """Read picks or a truth file into a frame with x, y, z in voxels (and ``type`` and ``score`` where given).

    Accepts our CSV (or any CSV with x, y, z columns), PickET YAML, RELION STAR (``rlnCoordinate{X,Y,Z}`` in
    voxels, or RELION 5's ``rlnCenteredCoordinate{X,Y,Z}Angst`` alone: needs ``voxel_size`` and the tomogram's
    ``shape_zyx``), copick JSON (Angstrom: needs ``voxel_size``) and portal ndjson. The score comes from the
    CSV's ``score``, STAR's ``rlnAutopickFigureOfMerit``, and the ndjson's and copick's ``score``.
    """
    path = Path(path)
    if not path.is_file():
        raise PicketError(path, "no such file", "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, comment="#")
        elif suffix in (".yaml", ".yml"):
            doc = yaml.safe_load(path.read_text())
            df = pd.DataFrame(doc["Predicted_Particle_Centroid_Coordinates"] or [], columns=["x", "y", "z"])
        elif suffix == ".star":
            import starfile

            star = starfile.read(path)
            star = star["particles"] if isinstance(star, dict) else star
            df = _star_points(path, star, voxel_size, shape_zyx)
        elif suffix == ".ndjson":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            df = pd.DataFrame([{**r["location"], "type": r.get("object", r.get("type_name")), "score": r.get("score")}
                               for r in rows], columns=["x", "y", "z", "type", "score"])
            df = df.drop(columns=[c for c in ("type", "score") if df[c].isna().all()])
        elif suffix == ".json":
            doc = json.loads(path.read_text())
            if voxel_size is None:
                raise PicketError(path, "copick points are in Angstrom", "pass the voxel size (--voxel-size)")
            df = pd.DataFrame([{**{k: v / voxel_size for k, v in p["location"].items()}, "score": p.get("score")}
                               for p in doc["points"]], columns=["x", "y", "z", "score"])
            if df["score"].isna().all():
                df = df.drop(columns="score")
        else:
            raise PicketError(path, f"unknown picks format '{suffix}'", "give .csv, .yaml, .star, .ndjson or copick .json")
    except PicketError:
        raise
    except Exception as exc:
        raise PicketError(path, f"cannot read points ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                          "check that the file is a picks or truth file") from None
    if not {"x", "y", "z"} <= set(df.columns):
        raise PicketError(path, "has no x, y, z columns", "give a CSV with x, y, z columns in voxels")
    names = star["rlnTomoName"] if suffix == ".star" and "rlnTomoName" in star.columns else df.get("tomogram")
    if names is not None and names.nunique() > 1:  # a run's collected particles (collect.py): one tomogram at a time
        raise PicketError(path, f"holds the picks of {names.nunique()} tomograms", "give one tomogram's picks "
                          "(OUT/NAME/picks/WF.*), or score a whole run with `picket-dask evaluate OUT --truth TRUTH_DIR`")
    if "type" not in df.columns and "particle_type" in df.columns:  # the dev set's and the simulator's truth layout
        df = df.rename(columns={"particle_type": "type"})
    return df
