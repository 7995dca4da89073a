"""OME-Zarr images and label images (NGFF 0.4 on zarr v2 by default, 0.5 on zarr v3 as an option).

Written with zarr and dask directly rather than ``ome_zarr.writer``: we need a mean-downsampled
pyramid written level by level with bounded memory, blosc-lz4 + bitshuffle, a finiteness
check in the level-0 pass, and a write-to-temporary-then-rename; the files are read back with
``ome_zarr.reader`` in the tests.
"""

from __future__ import annotations

import re

import json
import os
import uuid
from pathlib import Path
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import zarr

from ..chunking import RECHUNK, WRITE_EMPTY_CHUNKS, ZARR3
from ..errors import PicketError
from .atomic import atomic_path, remove

AXES = [{"name": ax, "type": "space", "unit": "angstrom"} for ax in ("z", "y", "x")]
NGFF_VERSIONS = ("0.4", "0.5")


def _compressor(ngff: str):
    """blosc-lz4 level 5 with bitshuffle. A tomogram's noisy floats hardly compress (zstd level 5: 0.88
    of the bytes, lz4: 0.90), and every stage reads the image again: per 128^3 float32 chunk lz4
    encodes in 8 ms instead of zstd's 50 and decodes in 5 ms instead of 7 (converting the tiled
    200x512x512 dev tomogram: 3.9 -> 3.5 s, 199 -> 205 MB)."""
    if ngff == "0.4" or not ZARR3:
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


def _open_group(path, ngff: str, mode: str = "w") -> zarr.Group:
    """A zarr group at a path (or any zarr store, e.g. copick's) in the format NGFF ``ngff`` uses."""
    store = str(path) if isinstance(path, (str, Path)) else path
    if ZARR3:
        return zarr.open_group(store, mode=mode, zarr_format=2 if ngff == "0.4" else 3)
    if ngff != "0.4":
        raise PicketError(f"NGFF {ngff}", f"needs zarr >= 3 (installed: {zarr.__version__})", "use NGFF 0.4 or upgrade zarr")
    return zarr.open_group(store, mode=mode)


def _create(group: zarr.Group, name: str, shape, chunks, dtype, ngff: str) -> zarr.Array:
    if not ZARR3:
        return group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, compressor=_compressor(ngff),
                                    fill_value=0, dimension_separator="/", overwrite=True, **WRITE_EMPTY_CHUNKS)
    kwargs: dict[str, Any] = dict(shape=shape, chunks=chunks, dtype=dtype, compressors=_compressor(ngff), fill_value=0,
                                  config=WRITE_EMPTY_CHUNKS)
    if ngff == "0.4":
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return group.create_array(name, **kwargs)


def _multiscales(voxel_size: tuple[float, float, float], n_levels: int, name: str, method: str,
                 origin_A=(0.0, 0.0, 0.0)) -> dict:
    """NGFF multiscales: per level its scale and translation (Angstrom). ``origin_A``: where voxel 0's
    centre lies in the source tomogram's frame (io/grid.py: non-zero on a resampled working grid)."""
    origin_A = tuple(float(o) for o in (origin_A or (0.0, 0.0, 0.0)))
    datasets = []
    for level in range(n_levels):
        f = 2**level
        # a mean over f voxels is centred (f - 1) / 2 voxels after the first one
        datasets.append({
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(v * f) for v in voxel_size]},
                {"type": "translation", "translation": [o + float(v * (f - 1) / 2) for o, v in zip(origin_A, voxel_size)]},
            ],
        })
    return {"name": name, "axes": AXES, "datasets": datasets, "type": method}


def _set_ome_attrs(group: zarr.Group, ngff: str, key: str, value: Any, extra: dict | None = None) -> None:
    attrs: dict[str, Any] = {}
    if ngff == "0.4":
        if isinstance(value, list):
            for v in value:
                if isinstance(v, dict):
                    v.setdefault("version", ngff)
        elif isinstance(value, dict):
            value.setdefault("version", ngff)
        attrs[key] = value
    else:
        attrs["ome"] = {"version": ngff, key: value}
    if extra:
        attrs["picket_dask"] = json.loads(json.dumps(extra, default=_json_default))
    group.attrs.update(attrs)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def even_chunks(arr: da.Array) -> da.Array:
    """Rechunk so every chunk but the last along each axis has an even length (for 2x coarsening)."""
    chunks = tuple(max(2, c - c % 2) for c in (arr.chunksize))
    return arr.rechunk(chunks, method=RECHUNK) if any(any(b % 2 for b in bc[:-1]) for bc in arr.chunks) else arr


def downsample2(arr: da.Array, chunks: tuple[int, int, int]) -> da.Array:
    """The next pyramid level: mean over 2x2x2 voxels (float32), an odd last voxel dropped."""
    return da.coarsen(np.mean, even_chunks(arr).astype(np.float32), {0: 2, 1: 2, 2: 2}, trim_excess=True).rechunk(chunks, method=RECHUNK)


def write_image(
    arr: da.Array,
    path: str | Path,
    voxel_size: tuple[float, float, float],
    chunks: int | tuple[int, int, int] = 128,
    n_levels: int = 3,
    ngff: str = "0.4",
    overwrite: bool = False,
    name: str | None = None,
    extra: dict | None = None,
    check_finite: bool = True,
) -> Path:
    """Stream a (z, y, x) dask array into an OME-Zarr image with a mean pyramid; return the path.

    voxel_size is (z, y, x) in Angstrom. Values are checked to be finite in the same pass; on any
    failure nothing is left at ``path``.
    """
    if ngff not in NGFF_VERSIONS:
        raise PicketError(ngff, "unknown NGFF version", f"use one of {', '.join(NGFF_VERSIONS)}")
    path = Path(path)
    chunks = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)
    chunks = tuple(min(c, s) for c, s in zip(chunks, arr.shape))
    from ..progress import compute

    with atomic_path(path, overwrite) as tmp:
        group = _open_group(tmp, ngff)
        # one level at a time, each from the stored level above: a pyramid built in one graph keeps
        # level-0 blocks alive until their coarsened parents are done (1 GiB MRC, benchmarks/convert_1gib.py:
        # one graph 0.77-1.7 GB peak RSS in 4.5 s; level by level 0.49 GB in 11.4 s)
        source = arr.rechunk(chunks, method=RECHUNK)
        n_written = 0
        for level in range(n_levels):
            if level and min(source.shape) < 2:
                break
            lv = source if level == 0 else downsample2(source, chunks)
            target = _create(group, str(level), lv.shape, chunks, lv.dtype, ngff)
            stored = da.store(lv, target, lock=False, compute=False)
            if level == 0 and check_finite and arr.dtype.kind == "f":
                _, ok = compute(stored, da.isfinite(lv).all(), label=f"writing {path.name}")
                if not bool(ok):
                    raise PicketError(extra.get("input", path) if extra else path, "contains NaN or infinite values",
                                      "clean the tomogram (e.g. replace NaNs with the mean) before picking")
            else:
                compute(stored, label=f"writing {path.name} level {level}")
            source = da.from_zarr(target)
            n_written += 1
        origin = ((extra or {}).get("working_grid") or {}).get("translation_A")
        _set_ome_attrs(group, ngff, "multiscales", [_multiscales(voxel_size, n_written, name or path.stem, "mean", origin)], extra)
    return path


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(spec) -> bool:
    """Whether an input names a remote (or fsspec) location, ``s3://bucket/TS_01.zarr``, ``https://...``, ``file://...``
    (a copick spec is not one: copick_io reads those)."""
    return isinstance(spec, str) and bool(URL.match(spec)) and not spec.startswith("copick://")


def open_image(path: str | Path, level: int = 0) -> tuple[da.Array, tuple[float, float, float], dict]:
    """Lazy (z, y, x) array of one pyramid level, its voxel size (z, y, x) in Angstrom, and the group's attrs.
    ``path``: a folder, or a URL zarr reads through fsspec (s3://, gs://, https://; for a public S3 bucket such as
    the CZ cryo-ET data portal's, set ``FSSPEC_S3_ANON=true``: fsspec's own configuration, which dask's workers
    inherit)."""
    path = path.rstrip("/") if is_url(path) else Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        why = f" ({type(exc).__name__}: {exc})" if is_url(path) else ""
        raise PicketError(path, f"not a readable OME-Zarr image{why}",
                          "give an OME-Zarr image written by `picket-dask convert` or an MRC file"
                          + (" (a public S3 bucket: FSSPEC_S3_ANON=true)" if str(path).startswith("s3://") else "")) from None
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales")
    if not ms:
        raise PicketError(path, "zarr group has no OME multiscales metadata", "convert the tomogram with `picket-dask convert`")
    ds = ms[0]["datasets"][level]
    scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
    axes = ms[0].get("axes", ["z", "y", "x"])
    zarr_arr = group[ds["path"]]
    lead = zarr_arr.shape[:-3]
    if zarr_arr.ndim < 3 or any(n != 1 for n in lead):  # (t, c, z, y, x) with one time point and channel is a tomogram
        names = [a["name"] if isinstance(a, dict) else a for a in axes]
        raise PicketError(path, f"image has {zarr_arr.ndim} dimensions {names} of sizes {list(zarr_arr.shape)}",
                          "give a 3-D (z, y, x) tomogram (axes before z, y, x may only have size 1)")
    arr = da.from_zarr(zarr_arr)
    if lead:
        arr = arr[(0,) * len(lead)]
    return arr, space_scale_A(axes, scale, path), attrs


# NGFF units (UDUNITS-2 names) in Angstrom
UNIT_A = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "picometer": 1e-2, "millimeter": 1e7, "meter": 1e10}


def space_scale_A(axes: list, scale: list, path) -> tuple[float, float, float]:
    """The last three axes' scale (z, y, x) in Angstrom from their NGFF ``unit``: picket-dask and the CZ portal
    write angstrom, other writers often nanometer or micrometer. An axis without a unit is taken as Angstrom."""
    out = []
    for a, v in zip(list(axes)[-3:], list(scale)[-3:]):
        unit = str(a.get("unit") or "angstrom").lower() if isinstance(a, dict) else "angstrom"
        if unit not in UNIT_A:
            name = a.get("name", "?") if isinstance(a, dict) else a
            raise PicketError(path, f"axis {name} has the unit {unit!r}, not a length picket-dask knows",
                              f"use one of {', '.join(UNIT_A)} (NGFF's names), or convert the MRC with `picket-dask convert`")
        out.append(float(v) * UNIT_A[unit])
    return tuple(out)


def ngff_version(path: str | Path) -> str:
    """'0.4' for a zarr v2 group, '0.5' for zarr v3."""
    return "0.5" if (Path(path) / "zarr.json").exists() else "0.4"


def _labels_group(image_path: Path, ngff: str) -> Path:
    labels_dir = image_path / "labels"
    if not labels_dir.exists():
        _set_ome_attrs(_open_group(labels_dir, ngff, "w"), ngff, "labels", [])
    return labels_dir


def create_labels(image_path: str | Path, name: str, shape, chunks, dtype) -> tuple[Path, zarr.Array]:
    """Start a label image: a temporary group under ``<image>/labels`` and its level-0 array."""
    image_path = Path(image_path)
    ngff = ngff_version(image_path)
    tmp = _labels_group(image_path, ngff) / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    group = _open_group(tmp, ngff)
    chunks = tuple(min(int(c), int(s)) for c, s in zip(chunks, shape))
    return tmp, _create(group, "0", tuple(int(s) for s in shape), chunks, dtype, ngff)


def commit_labels(image_path: str | Path, name: str, tmp: Path, voxel_size: tuple[float, float, float],
                  extra: dict | None = None, colors: list[dict] | None = None) -> Path:
    """Finish a label image started by ``create_labels``: metadata, then rename into place."""
    image_path = Path(image_path)
    ngff = ngff_version(image_path)
    group = _open_group(tmp, ngff, "a")
    origin = (read_attrs(image_path).get("working_grid") or {}).get("translation_A")  # overlay the image's grid
    _set_ome_attrs(group, ngff, "multiscales", [_multiscales(voxel_size, 1, name, "nearest", origin)], extra)
    image_label: dict[str, Any] = {"source": {"image": "../../"}}
    if colors:
        image_label["colors"] = colors
    _set_ome_attrs(group, ngff, "image-label", image_label)
    out = image_path / "labels" / name
    if out.exists():
        remove(out)
    os.replace(tmp, out)
    g = zarr.open_group(str(image_path / "labels"), mode="a")
    attrs = dict(g.attrs)
    current = attrs.get("ome", attrs).get("labels", [])
    if name not in current:
        _set_ome_attrs(g, ngff, "labels", current + [name])
    return out


def write_labels(image_path: str | Path, name: str, arr: da.Array, voxel_size: tuple[float, float, float],
                 extra: dict | None = None, colors: list[dict] | None = None) -> Path:
    """Store a (z, y, x) label array as ``<image>/labels/<name>`` (NGFF image-label), atomically."""
    from ..progress import compute

    tmp, target = create_labels(image_path, name, arr.shape, arr.chunksize, arr.dtype)
    try:
        compute(da.store(arr.rechunk(target.chunks, method=RECHUNK), target, lock=False, compute=False), label=f"writing labels/{name}")
        return commit_labels(image_path, name, tmp, voxel_size, extra, colors)
    except BaseException:
        remove(tmp)
        raise


def open_labels(image_path: str | Path, name: str) -> tuple[da.Array, dict]:
    """Lazy label array of ``<image>/labels/<name>`` and its picket_dask metadata."""
    path = Path(image_path) / "labels" / name
    if not path.exists():
        raise PicketError(path, "no such label image", "run the segmentation first or check the workflow name")
    group = zarr.open_group(str(path), mode="r")
    return da.from_zarr(group["0"]), dict(group.attrs).get("picket_dask", {})


def read_attrs(path: str | Path) -> dict:
    """The picket_dask provenance block of an OME-Zarr group ({} if none)."""
    try:
        return dict(zarr.open_group(str(path), mode="r").attrs).get("picket_dask", {})
    except Exception:
        return {}
