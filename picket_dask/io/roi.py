"""A user's region of interest: picks only where a mask of the tomogram is nonzero (``--mask``).

Where a user knows where the particles of interest are (the cytoplasm of a segmented cell, one
organelle, a region drawn in napari or IMOD, a MemBrain or Amira label image), picks outside it are
dropped: a pick stays when the mask is nonzero at its centre (the voxel nearest it), so a particle
on the region's edge is picked whole or not at all. The mask is an MRC/REC file, an OME-Zarr image or
a TIFF stack (napari saves a labels layer as one; pages are z) of the tomogram's shape (z, y, x), any
dtype; MRC and OME-Zarr masks are read only at the picks' centres and once, by chunks, to count their
voxels, a TIFF whole (one byte per voxel for a uint8 mask). ``--mask`` names a file (for one tomogram)
or a folder holding ``NAME_mask.{mrc,rec,zarr,tif,tiff}`` or ``NAME.{...}`` for each tomogram NAME.
For copick runs, ``--mask copick:NAME[:USER[:SESSION]]`` is each run's segmentation NAME (a cell,
organelle or membrane segmentation made by another tool of the project), at its own voxel size: the
picks' centres are mapped to its voxels through Angstrom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import PicketError

SUFFIXES = (".mrc", ".rec", ".zarr", ".tif", ".tiff")
TIFF = (".tif", ".tiff")
COPICK = "copick:"  # --mask copick:NAME[:USER[:SESSION]]: a segmentation of each copick run


@dataclass(frozen=True)
class RegionMask:
    """A user's mask: ``data`` (lazy, (z, y, x), nonzero inside), ``scale`` (mask voxels per tomogram voxel
    along z, y, x: 1 for a file of the tomogram's shape) and ``source`` (its path, or its copick name)."""

    data: da.Array
    scale: tuple[float, float, float]
    source: str
    voxel_size_A: float | None = None  # its own voxel size where it has one of its own (a copick segmentation)

    def inside(self, zyx: np.ndarray) -> np.ndarray:
        """(n,) bool for points in the tomogram's voxels (z, y, x). Grids of other voxel sizes share the volume's
        corner (a binned tomogram's and its segmentation's voxels tile the same box, as io/grid.py's): a point at
        voxel i lies at (i + 0.5) x scale - 0.5 of the mask's voxels."""
        zyx = np.asarray(zyx, float).reshape(-1, 3)
        if all(s == 1.0 for s in self.scale):
            return inside(self.data, zyx)
        return inside(self.data, (zyx + 0.5) * np.asarray(self.scale) - 0.5)


FOLDER_SUFFIX = {"--mask": "_mask", "--exclude": "_exclude"}  # a folder's NAME_mask.mrc, NAME_exclude.mrc


def load_mask(spec: str, tomogram, name: str, shape_zyx: tuple[int, int, int], voxel_A: float,
              chunks: int = 128, option: str = "--mask") -> RegionMask:
    """The mask ``spec`` of tomogram ``name`` (input ``tomogram``, ``shape_zyx`` voxels of ``voxel_A``
    Angstrom) given to ``option`` (``--mask``: where picks may be; ``--exclude``: where they may not): a file
    or folder (find_mask, open_mask), or a copick run's segmentation."""
    from .tomogram import source_id

    if str(spec).startswith(COPICK):
        return _copick_mask(str(spec), tomogram, shape_zyx, voxel_A, option)
    where = find_mask(spec, tomogram, name, option)
    return RegionMask(open_mask(where, shape_zyx, tomogram, chunks, option), (1.0, 1.0, 1.0), source_id(where))


def parse_copick_mask(spec: str, option: str = "--mask") -> tuple[str, str | None, str | None]:
    """``copick:NAME[:USER[:SESSION]]`` -> (name, user or None, session or None)."""
    parts = spec[len(COPICK):].split(":")
    if not parts[0] or len(parts) > 3 or not all(parts):
        raise PicketError(f"{option} {spec}", "is not copick:NAME, copick:NAME:USER or copick:NAME:USER:SESSION",
                          f"name the run's segmentation, e.g. {option} copick:cytoplasm or copick:membrane:membrain-seg:0")
    return parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)


def _copick_mask(spec: str, tomogram, shape_zyx, voxel_A: float, option: str) -> RegionMask:
    from .copick_io import is_copick, open_segmentation

    name, user, session = parse_copick_mask(spec, option)
    if not is_copick(tomogram):
        raise PicketError(f"{option} {spec}", f"names a copick segmentation, but {tomogram} is not a copick run",
                          "pick the run with --copick CONFIG --run RUN, or give a mask file")
    data, seg_A, source = open_segmentation(tomogram, name, user, session, voxel_A, option)
    scale = float(voxel_A) / seg_A
    want = np.asarray(shape_zyx, float) * scale
    if np.any(np.abs(np.asarray(data.shape) - want) > 1 + 1e-6):  # a segmentation of another tomogram
        raise PicketError(f"{option} {spec}", f"{source} has shape {tuple(data.shape)} (z, y, x) at {seg_A:g} A, not the "
                          f"tomogram's extent ({tuple(int(n) for n in shape_zyx)} at {voxel_A:g} A)",
                          "name a segmentation of this run's tomogram")
    return RegionMask(data, (scale,) * 3, source, seg_A)


def find_mask(spec: str | Path, tomogram, name: str, option: str = "--mask") -> Path:
    """The mask file of tomogram ``name`` (input ``tomogram``): ``spec`` itself when a file (or an OME-Zarr
    image), else the first of NAME_mask.*, NAME.* (``--exclude``: NAME_exclude.*, NAME.*) in the folder ``spec``
    that is not the tomogram itself."""
    from .tomogram import is_zarr, source_id

    spec, tail = Path(spec), FOLDER_SUFFIX[option]
    if not spec.exists():
        raise PicketError(f"{option} {spec}", "no such file or folder", f"give a mask file, or a folder of NAME{tail}.mrc files")
    if spec.is_file() or is_zarr(spec):
        return spec
    for stem in (f"{name}{tail}", name):
        for suffix in SUFFIXES:
            cand = spec / f"{stem}{suffix}"
            if cand.exists() and source_id(cand) != source_id(tomogram):
                return cand
    raise PicketError(f"{option} {spec}", f"holds no mask for tomogram {name!r}",
                      f"put {name}{tail}.mrc there (or .rec, .zarr, .tif), or leave this tomogram out of the run")


def open_mask(path: Path, shape_zyx: tuple[int, int, int], tomogram, chunks: int = 128, option: str = "--mask") -> da.Array:
    """The mask (lazy, (z, y, x), its own dtype), refused unless its shape is the tomogram's."""
    from .tomogram import open_tomogram

    if path.suffix.lower() in TIFF:
        data = da.from_array(_read_tiff(path, option), chunks=chunks)
    else:
        data = open_tomogram(path, chunks, voxel_size=1.0).data  # the voxel size is the tomogram's: not read from the mask
    if tuple(data.shape) != tuple(shape_zyx):
        raise PicketError(f"{option} {path}", f"has shape {tuple(data.shape)} (z, y, x), not the shape of {tomogram} "
                          f"{tuple(shape_zyx)}", "give a mask voxel for voxel on the tomogram (bin or crop it alike)")
    return data


def _read_tiff(path: Path, option: str = "--mask") -> np.ndarray:
    """A TIFF stack as (z, y, x): memory-mapped where its pages are stored uncompressed in one piece, else
    read (compressed pages, as napari writes labels). A single page is one slice."""
    import tifffile

    try:
        try:
            arr = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous
            arr = tifffile.imread(path)
    except Exception as exc:  # not a TIFF, truncated: one line
        raise PicketError(f"{option} {path}", f"cannot be read as a TIFF stack ({type(exc).__name__}: {exc})",
                          "save the mask as a TIFF stack, MRC or OME-Zarr") from None
    arr = np.asarray(arr) if arr.ndim == 3 else arr.reshape((1, *arr.shape)) if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise PicketError(f"{option} {path}", f"has {arr.ndim} dimensions", "give one 3-D (z, y, x) stack, one channel")
    return arr


def _local(x):
    """Compute ``x`` in this process (dask's threaded scheduler), not on the cluster: a mask is read where its
    file is, and a TIFF's array (held here) would otherwise travel inside the task graph."""
    import dask

    return dask.compute(x, scheduler="threads")[0]


def voxels_inside(mask: da.Array) -> int:
    """Number of nonzero voxels (read by chunks)."""
    return int(_local((mask != 0).sum()))


def inside(mask: da.Array, zyx: np.ndarray) -> np.ndarray:
    """(n,) bool: whether the mask is nonzero at each point (z, y, x voxels of the mask, fractional: the
    nearest voxel; points outside the volume are outside)."""
    pts = np.rint(np.asarray(zyx, float).reshape(-1, 3)).astype(np.int64)
    ok = np.all((pts >= 0) & (pts < np.asarray(mask.shape)), axis=1)
    out = np.zeros(len(pts), bool)
    if ok.any():
        p = pts[ok]
        out[ok] = np.asarray(_local(mask.vindex[p[:, 0], p[:, 1], p[:, 2]])) != 0
    return out
