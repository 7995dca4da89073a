"""MRC tomograms (.mrc, .rec, .map): header checks and a lazy, chunked, picklable reader.

``da.from_array`` on an ``np.memmap`` copies the whole file into memory in current dask, so
the reader below opens a fresh memmap for each block it is asked for and returns a copy of only
that block; it pickles as (path, dtype, shape, offset), so any worker can read any block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np

from ..errors import PicketError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")


@dataclass(frozen=True)
class MrcBlockReader:
    """Array-like view of an MRC file's data block; indexing reads only what is asked for."""

    path: str
    file_dtype: np.dtype
    shape: tuple[int, int, int]
    offset: int

    @property
    def dtype(self) -> np.dtype:
        """The data type in native byte order (what blocks are returned as)."""
        return self.file_dtype.newbyteorder("=")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        mm = np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset, shape=self.shape)
        try:
            return np.array(mm[key], dtype=self.dtype)
        finally:
            del mm


def read_header(path: str | Path) -> tuple[MrcBlockReader, tuple[float, float, float]]:
    """Validate an MRC file and return its block reader and voxel size (z, y, x) in Angstrom.

    A voxel size of 0 in the header is returned as 0; callers decide whether to ask for one.
    """
    path = Path(path)
    if not path.is_file():
        raise PicketError(path, "no such file", "check the path")
    try:
        with mrcfile.mmap(str(path), mode="r", permissive=False) as mrc:
            shape = tuple(int(s) for s in mrc.data.shape)
            dtype = mrc.data.dtype
            offset = int(mrc.header.nbytes + mrc.extended_header.nbytes)
            vs = mrc.voxel_size
            voxel = (float(vs.z), float(vs.y), float(vs.x))
            is_stack = mrc.is_image_stack()
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PicketError(path, f"not a readable MRC file ({msg})", "give an MRC/REC tomogram or an OME-Zarr image") from None
    if len(shape) != 3 or is_stack or min(shape) < 2:
        raise PicketError(path, f"data has shape {shape}, not a 3-D volume", "give a 3-D tomogram (z, y, x), not an image or a stack")
    if np.dtype(dtype).kind == "c":
        raise PicketError(path, "complex-valued MRC", "give a real-valued tomogram")
    return MrcBlockReader(str(path), np.dtype(dtype), shape, offset), voxel


def open_mrc(path: str | Path, chunks: int | tuple = 128) -> tuple[da.Array, tuple[float, float, float]]:
    """Lazy dask array (z, y, x) of an MRC file and its header voxel size (z, y, x) in Angstrom."""
    reader, voxel = read_header(path)
    arr = da.from_array(reader, chunks=chunks, meta=np.empty((0, 0, 0), dtype=reader.dtype),
                        name=f"mrc-{Path(path).name}-{Path(path).stat().st_mtime_ns}", asarray=False)
    return arr, voxel


def write_mrc(path: str | Path, data: np.ndarray, voxel_size_A: float | tuple[float, float, float], overwrite: bool = True) -> None:
    """Write a (z, y, x) array to an MRC file with the voxel size in Angstrom (small volumes only)."""
    with mrcfile.new(str(path), overwrite=overwrite) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        if np.isscalar(voxel_size_A):
            mrc.voxel_size = float(voxel_size_A)
        else:
            z, y, x = voxel_size_A
            mrc.voxel_size = (float(x), float(y), float(z))
