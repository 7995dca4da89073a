"""Open a tomogram from MRC, OME-Zarr or copick as a lazy (z, y, x) dask array with its voxel size.

The format modules (mrc.py, omezarr.py, copick_io.py) are readers that know nothing of this one:
imports run one way, from here to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np

from ..chunking import RECHUNK
from ..errors import PicketError
from .copick_io import is_copick, open_copick, parse
from .mrc import MRC_SUFFIXES, open_mrc
from .omezarr import is_url, open_image, write_image

if TYPE_CHECKING:
    from .grid import Grid


@dataclass
class Tomogram:
    """A lazy tomogram: data (z, y, x), voxel size (z, y, x) in Angstrom, where it came from."""

    data: da.Array
    voxel_size: tuple[float, float, float]
    source: str
    name: str
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)


def is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / ".zattrs").exists() or (path / "zarr.json").exists()


def tomogram_name(path: str | Path) -> str:
    """The tomogram's name: its file name without suffixes like .mrc, .rec, .zarr (a copick run: its name; a URL:
    its last path segment's)."""
    if is_copick(path):
        return parse(str(path)).run
    if is_url(path):
        from urllib.parse import urlparse

        path = urlparse(path).path.rstrip("/") or "tomogram"
    name = Path(path).name
    for suffix in (".zarr", *MRC_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def resolve_voxel_size(header: tuple[float, float, float], override: float | None, source: object) -> tuple[float, float, float]:
    """The voxel size to use: ``override`` if given, else the header's; refuse missing or zero sizes."""
    if override is not None:
        if not np.isfinite(override) or override <= 0:
            raise PicketError(source, f"voxel size {override} is not positive", "pass a positive --voxel-size in Angstrom")
        return (float(override),) * 3
    if not all(np.isfinite(v) and v > 0 for v in header):
        raise PicketError(source, f"voxel size missing or zero in the header ({header})", "pass --voxel-size in Angstrom (e.g. --voxel-size 10)")
    return tuple(float(v) for v in header)


def open_tomogram(path: str | Path, chunks: int | tuple = 128, voxel_size: float | None = None) -> Tomogram:
    """Open an MRC/REC file, an OME-Zarr image (a folder or a URL: s3://, https://, ...) or a copick run
    (copick://CONFIG?run=RUN) lazily."""
    if is_copick(path):
        arr, vs, run = open_copick(str(path), chunks)
        return Tomogram(arr, vs, str(path), run)
    if is_url(path):  # OME-Zarr only: MRC files are memory-mapped, which needs a local file
        if not path.rstrip("/").lower().endswith(".zarr"):
            raise PicketError(path, "is a URL but not of an OME-Zarr image (.zarr)",
                              "give an OME-Zarr image's URL, or download the MRC file and give its path")
        arr, vs, attrs = open_image(path)
        arr = arr.rechunk(chunks, method=RECHUNK) if chunks else arr
        return Tomogram(arr, resolve_voxel_size(vs, voxel_size, path), path.rstrip("/"), tomogram_name(path), attrs)
    path = Path(path)
    if not path.exists():
        raise PicketError(path, "no such file or folder", "check the path")
    if is_zarr(path):
        arr, vs, attrs = open_image(path)
        arr = arr.rechunk(chunks, method=RECHUNK) if chunks else arr
        return Tomogram(arr, resolve_voxel_size(vs, voxel_size, path), str(path), tomogram_name(path), attrs)
    if path.suffix.lower() not in MRC_SUFFIXES:
        raise PicketError(path, f"unknown tomogram format '{path.suffix}'", f"give an MRC file ({', '.join(MRC_SUFFIXES)}) or an OME-Zarr image (.zarr)")
    arr, vs = open_mrc(path, chunks)
    return Tomogram(arr, resolve_voxel_size(vs, voxel_size, path), str(path), tomogram_name(path))


def source_id(path) -> str:
    """A stable identifier of an input: the resolved path, or the copick spec or URL as given."""
    if is_url(path):
        return path.rstrip("/")
    return str(path) if is_copick(path) else str(Path(path).resolve())


def source_stamp(path) -> dict:
    """Size and modification time of an input file (empty for folders and copick), to notice a changed input."""
    p = None if is_copick(path) or is_url(path) else Path(path)
    if p is None or not p.is_file():
        return {}
    st = p.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def convert(
    src: str | Path,
    dst: str | Path,
    chunks: int = 128,
    voxel_size: float | None = None,
    overwrite: bool = False,
    ngff: str = "0.4",
    n_levels: int = 3,
    grid: "Grid | None" = None,
) -> Path:
    """Stream an MRC (or OME-Zarr) tomogram into an OME-Zarr image with a 3-level mean pyramid.

    ``grid`` (io/grid.py): the working grid to resample onto (None or the identity: the tomogram's own);
    it is recorded as ``working_grid`` in the image's attributes. Memory stays bounded by a few chunks
    per worker thread; NaN/inf values abort the conversion and leave nothing at ``dst``.
    """
    from ..provenance import environment
    from .grid import resample

    tomo = open_tomogram(src, chunks, voxel_size)
    if tomo.data.dtype.kind not in "fiu":
        raise PicketError(src, f"unsupported data type {tomo.data.dtype}", "give a real-valued tomogram")
    extra = {"input": source_id(src), "input_stamp": source_stamp(src), "voxel_size_A": list(tomo.voxel_size), **environment()}
    data, vs = tomo.data, tomo.voxel_size
    if grid is not None and grid.resampled:
        data, vs = resample(data, grid, chunks), grid.voxel_A
        extra.update(voxel_size_A=list(vs), working_grid=grid.as_dict())
    return write_image(data, dst, vs, chunks=chunks, n_levels=n_levels, ngff=ngff,
                       overwrite=overwrite, name=tomo.name, extra=extra)
