"""MRC tomograms (.mrc, .rec, .map): header checks and a lazy, chunked, picklable reader.

``da.from_array`` on an ``np.memmap`` copies the whole file into memory in current dask, so the
reader below reads each block it is asked for with plain positioned reads (one per contiguous
run of voxels) into a fresh array; it pickles as (path, dtype, shape, offset), so any worker can
read any block. Not a memmap per block either: a 128^3 block of a 2048-wide file touches 64 MiB
of mapped pages, which count in the worker's RSS and got workers with a 512 MiB limit restarted.

Axes: the data array is (z, y, x) as the header's MAPC / MAPR / MAPS say (columns X, rows Y, sections Z in
nearly every tomogram); a file that stores other map axes along them is turned lazily to (z, y, x).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np

from ..errors import PicketError

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
# Files whose header space group 0 (MRC2014: an image stack) is believed: tilt series (.st, aligned .ali) and
# particle stacks (.mrcs). A .mrc/.rec/.map with space group 0 is read as the volume it holds: many writers have
# put 0 on volumes too (SUSAN until 2022, its issue #3; Scipion reads "some mrc volumes as stacks", its issue #1),
# and the space group is all that tells a stack from a volume.
STACK_SUFFIXES = (".mrcs", ".st", ".ali")
# A box narrower than the file is read one plane at a time as the contiguous span of its rows when a
# file row is at most this long: the span holds nx / box-width times the box's bytes, but one read per
# plane instead of one per row, and the GIL released while it reads. Reading every 128^3 box, one thread:
# a 200x512x512 float32 file 1.05-1.38 -> 0.10-0.11 s; 32x2048x2048 (16x the bytes read) 3.7 -> 0.8 s.
# Longer rows: one read per row.
SPAN_ROW_BYTES = 16384


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
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != 3 or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            # anything but a box (dask only asks for boxes): read the box around it, then index
            box = tuple(slice(None) for _ in range(3))
            return self[box][key]
        (z0, z1, _), (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape))
        out = np.empty((max(0, z1 - z0), max(0, y1 - y0), max(0, x1 - x0)), dtype=self.file_dtype)
        if out.size == 0:
            return out.astype(self.dtype)
        nz, ny, nx = self.shape
        item = self.file_dtype.itemsize
        full_rows = x0 == 0 and x1 == nx
        # rows no longer than SPAN_ROW_BYTES: one read per plane of the whole span from (y0, x0) to (y1 - 1, x1),
        # then the box copied out of it; longer rows: one read per row of the box
        span = not full_rows and nx * item <= SPAN_ROW_BYTES
        buf = np.empty(((y1 - y0), nx), dtype=self.file_dtype) if span else None
        span_bytes = ((y1 - y0 - 1) * nx + (x1 - x0)) * item
        with open(self.path, "rb", buffering=0) as fh:
            for z in range(z0, z1):
                if full_rows:  # one contiguous read per plane
                    _read_at(fh, self.offset + ((z * ny + y0) * nx) * item, memoryview(out[z - z0]).cast("B"))
                elif span:
                    _read_at(fh, self.offset + ((z * ny + y0) * nx + x0) * item, memoryview(buf).cast("B")[:span_bytes])
                    out[z - z0] = buf[:, :x1 - x0]
                else:
                    for y in range(y0, y1):
                        _read_at(fh, self.offset + ((z * ny + y) * nx + x0) * item, memoryview(out[z - z0, y - y0]).cast("B"))
        return out.astype(self.dtype, copy=False)


def _read_at(fh, offset: int, view: memoryview) -> None:
    """Fill ``view`` from byte ``offset`` of the open file ``fh`` (a short file: PicketError)."""
    fh.seek(offset)
    if fh.readinto(view) != len(view):
        raise PicketError(fh.name, "ends before its header says the data does", "the file is truncated: copy it again")


def read_header(path: str | Path) -> tuple[MrcBlockReader, tuple[float, float, float], tuple[int, int, int]]:
    """Validate an MRC file and return its block reader (storage order: sections, rows, columns), voxel
    size (z, y, x) in Angstrom, and the axes permutation that turns storage order into (z, y, x).

    A voxel size of 0 in the header is returned as 0; callers decide whether to ask for one. The
    permutation follows the header's MAPC / MAPR / MAPS (which of X, Y, Z the columns, rows and sections
    hold); (0, 1, 2) for the usual 1, 2, 3 and for headers that do not give a permutation of them.
    """
    path = Path(path)
    if not path.is_file():
        raise PicketError(path, "no such file", "check the path")
    try:
        with warnings.catch_warnings(), mrcfile.mmap(str(path), mode="r", permissive=False) as mrc:
            warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile's voxel size of an empty axis (0 / 0): refused below
            shape = tuple(int(s) for s in mrc.data.shape)
            dtype = mrc.data.dtype
            offset = int(mrc.header.nbytes + mrc.extended_header.nbytes)
            vs = mrc.voxel_size
            voxel = (float(vs.z), float(vs.y), float(vs.x))
            is_stack = mrc.is_image_stack() and path.suffix.lower() in STACK_SUFFIXES
            mapping = (int(mrc.header.maps), int(mrc.header.mapr), int(mrc.header.mapc))  # storage axes 0, 1, 2
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PicketError(path, f"not a readable MRC file ({msg})", "give an MRC/REC tomogram or an OME-Zarr image") from None
    if is_stack:
        raise PicketError(path, f"is an image stack of {shape[0]} images (a tilt series?), not a tomogram",
                          "give the reconstructed tomogram (z, y, x)")
    if len(shape) == 3 and min(shape) == 0:
        raise PicketError(path, f"holds no voxels (shape {shape})", "its header gives an axis of size 0: give a 3-D tomogram (z, y, x)")
    if len(shape) != 3 or min(shape) < 2:
        raise PicketError(path, f"data has shape {shape}, not a 3-D volume", "give a 3-D tomogram (z, y, x), not an image or a stack")
    if np.dtype(dtype).kind == "c":
        raise PicketError(path, "complex-valued MRC", "give a real-valued tomogram")
    # (z, y, x) axis k is the storage axis that holds map axis 3 - k (Z = 3, Y = 2, X = 1)
    perm = tuple(mapping.index(a) for a in (3, 2, 1)) if sorted(mapping) == [1, 2, 3] else (0, 1, 2)
    return MrcBlockReader(str(path), np.dtype(dtype), shape, offset), voxel, perm


def open_mrc(path: str | Path, chunks: int | tuple = 128) -> tuple[da.Array, tuple[float, float, float]]:
    """Lazy dask array (z, y, x) of an MRC file and its header voxel size (z, y, x) in Angstrom."""
    reader, voxel, perm = read_header(path)
    arr = da.from_array(reader, chunks=chunks, meta=np.empty((0, 0, 0), dtype=reader.dtype),
                        name=f"mrc-{Path(path).name}-{Path(path).stat().st_mtime_ns}", asarray=False)
    if perm != (0, 1, 2):  # sections are not Z (MAPS != 3): the data array is turned to (z, y, x)
        arr = arr.transpose(perm)
    return arr, voxel


def write_mrc(path: str | Path, data: np.ndarray, voxel_size_A: float | tuple[float, float, float], overwrite: bool = True) -> None:
    """Write a (z, y, x) array to an MRC file with the voxel size in Angstrom (small volumes only).

    Data with NaN or inf is written as given, silently: mrcfile's header statistics would warn
    (twice, with numpy's "invalid value"), and reading such a file reports it once, as an error.
    """
    with mrcfile.new(str(path), overwrite=overwrite) as mrc:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc.set_data(np.ascontiguousarray(data))
        if np.isscalar(voxel_size_A):
            mrc.voxel_size = float(voxel_size_A)
        else:
            z, y, x = voxel_size_A
            mrc.voxel_size = (float(x), float(y), float(z))
