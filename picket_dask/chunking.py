"""Helpers over a dask array's chunk grid: block origins, neighbours, halo-safe rechunking."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import dask.array as da
import numpy as np
import zarr

# Every rechunk here merges or splits neighbouring blocks: the task-based method keeps that a few
# blocks in memory at a time. distributed's default for such graphs (p2p shuffle) buffers shards in
# the worker: with a 1 GiB worker it paused the worker during conversion (benchmarks/larger_than_memory.py).
RECHUNK = "tasks"


def block_starts(chunks: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    """Start index of every block along each axis."""
    return [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(np.int64) for c in chunks]


def block_ids(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    """Block indices in C order."""
    return list(itertools.product(*[range(len(c)) for c in chunks]))


def block_boxes(chunks: tuple[tuple[int, ...], ...]):
    """(block id, origin (z, y, x), shape (z, y, x)) of every block, in C order; ints."""
    starts = block_starts(chunks)
    for b in block_ids(chunks):
        yield b, tuple(int(starts[a][b[a]]) for a in range(3)), tuple(int(chunks[a][b[a]]) for a in range(3))


def haloed_box(volume_shape, origin, shape, halo: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of a block grown by ``halo`` voxels per face, clipped to the volume."""
    lo = np.maximum(np.asarray(origin) - halo, 0)
    hi = np.minimum(np.asarray(origin) + np.asarray(shape) + halo, volume_shape)
    return lo, hi


@dataclass(frozen=True)
class HaloedBlock:
    """One block of a chunk grid and the box grown around it by a halo (clipped to the volume); voxels, (z, y, x)."""

    index: int  # position in C order
    block: tuple[int, ...]  # block id
    origin: np.ndarray  # first voxel the block owns
    shape: np.ndarray  # voxels it owns
    lo: np.ndarray  # first voxel of the haloed box
    slices: tuple[slice, ...]  # the haloed box in the volume

    @property
    def end(self) -> np.ndarray:
        """One past the last voxel the block owns."""
        return self.origin + self.shape

    @property
    def interior(self) -> tuple[slice, ...]:
        """The owned voxels within the haloed box."""
        return tuple(slice(int(o - a), int(o - a + n)) for o, a, n in zip(self.origin, self.lo, self.shape))


def haloed_blocks(chunks: tuple[tuple[int, ...], ...], halo: int):
    """Every block of ``chunks`` with its box grown by ``halo`` voxels per face, clipped (``HaloedBlock``), in C order:
    the loop of every chunked filter that reads a block and its neighbours' margin itself."""
    volume_shape = tuple(int(sum(c)) for c in chunks)
    for i, (b, origin, shape) in enumerate(block_boxes(chunks)):
        lo, hi = haloed_box(volume_shape, origin, shape, halo)
        yield HaloedBlock(i, b, np.asarray(origin), np.asarray(shape), lo,
                          tuple(slice(int(a), int(c)) for a, c in zip(lo, hi)))


def axis_depths(chunks: tuple[tuple[int, ...], ...], depth: int) -> tuple[int, ...]:
    """Halo per axis for a filter that reaches ``depth`` voxels: ``depth`` along an axis of several chunks, 0
    along one held in a single chunk (after ``at_least``, any axis shorter than the halo). There the block is
    the whole axis, so the filter's own boundary mode (reflect, constant) sees what dask's padding would give,
    and dask refuses a halo deeper than the array (a thin slab cut from a tomogram)."""
    return tuple(int(depth) if len(c) > 1 else 0 for c in chunks)


def reflect_faces(block: np.ndarray, depth: tuple[int, ...], location: tuple[int, ...], numblocks: tuple[int, ...]) -> np.ndarray:
    """``block`` (any leading axes, then z, y, x) mirrored by ``depth`` voxels across each of its faces that is
    a face of the volume (block ``location`` of ``numblocks`` per spatial axis): numpy's 'symmetric' padding,
    which is dask's and scipy's 'reflect' (the edge voxel repeated)."""
    lead = block.ndim - 3
    pads = [(0, 0)] * lead + [(d if loc == 0 else 0, d if loc == n - 1 else 0)
                              for d, loc, n in zip(depth, location[-3:], numblocks[-3:])]
    return np.pad(block, pads, mode="symmetric") if any(a or b for a, b in pads) else block


def overlap_none(x: da.Array, depth: tuple[int, ...]) -> da.Array:
    """``x``'s blocks grown by ``depth`` voxels per spatial axis (the last three) from their neighbours only
    (dask's boundary 'none': nothing added at the volume's faces; ``reflect_faces`` adds it in the task)."""
    lead = x.ndim - 3
    return da.overlap.overlap(x, depth={a: (int(depth[a - lead]) if a >= lead else 0) for a in range(x.ndim)},
                              boundary="none")


def map_reflected(x: da.Array, fn, depth: tuple[int, ...], *args, trim: bool = False, **kwargs) -> da.Array:
    """``fn(block, *args)`` on every block of ``x`` grown by ``depth`` voxels per spatial axis (the last three),
    from its neighbours inside the volume and by mirror reflection across the volume's faces: the blocks of
    ``da.overlap.overlap(x, depth, boundary='reflect')``; ``trim``: the halo is cut from ``fn``'s result
    (map_overlap's default). ``kwargs`` go to map_blocks (dtype, chunks, new_axis, ...).

    By hand because dask's reflect boundary cuts every face region of every block into its own slicing
    and concatenation tasks: 3,185 tasks for a 32-chunk volume against 465 with boundary 'none' and the
    padding done here in the task. The context stage's two such overlaps made the defaults' run on
    200x512x512 6,311 tasks instead of 4,515; under a LocalCluster on 2 cores the 1,796 tasks cost ~2.6 s of
    the workers' CPU (their slicing and copies) and ~0.7 s of the client's, where the scheduler runs
    (benchmarks/HISTORY.md, thirteenth session)."""
    depth = tuple(int(d) for d in depth)
    numblocks = x.numblocks

    def run(block, *a, block_info=None):
        b = reflect_faces(block, depth, block_info[0]["chunk-location"], numblocks)
        out = fn(b, *a)
        if trim:
            out = out[(Ellipsis,) + tuple(slice(d, out.shape[i - 3] - d) for i, d in enumerate(depth))]
        return out

    kwargs.setdefault("chunks", x.chunks)
    return overlap_none(x, depth).map_blocks(run, *args, **kwargs)


def at_least(arr: da.Array, size: int) -> da.Array:
    """Rechunk so that every chunk is at least ``size`` long (a small last chunk joins its neighbour)."""
    new = []
    for n, c in zip(arr.shape, arr.chunks):
        c = list(c)
        if n <= size or len(c) == 1:
            new.append((n,))
            continue
        while len(c) > 1 and min(c) < size:
            i = int(np.argmin(c))
            j = i - 1 if i == len(c) - 1 or (i > 0 and c[i - 1] <= c[i + 1]) else i + 1
            c[min(i, j)] = c[i] + c[j]
            del c[max(i, j)]
        new.append(tuple(c))
    new = tuple(new)
    return arr if new == arr.chunks else arr.rechunk(new, method=RECHUNK)


def from_block_tasks(tasks: dict, chunks: tuple[tuple[int, ...], ...], dtype, leading: tuple[int, ...] = ()):
    """One dask array from one delayed task per block: ``tasks[block_id]`` returns an array of shape
    ``leading + block shape``; the blocks are joined along the last three axes."""
    grid = tuple(len(c) for c in chunks)
    nested = np.empty(grid, dtype=object)
    for b in block_ids(chunks):
        shape = leading + tuple(int(chunks[a][b[a]]) for a in range(3))
        nested[b] = da.from_delayed(tasks[b], shape=shape, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))
    blocks = nested.tolist()
    for _ in leading:  # da.block needs one nesting level per dimension; leading axes hold one block
        blocks = [blocks]
    return da.block(blocks)


def _block_counts(block: np.ndarray, minlength: int) -> np.ndarray:
    return np.bincount(np.asarray(block).ravel(), minlength=minlength)[:minlength].reshape(1, 1, 1, minlength)


def value_counts(arr: da.Array, minlength: int = 256) -> da.Array:
    """Occurrences (minlength,) int64 of each value 0..minlength-1 of a 3-D non-negative integer array.

    One bincount per block, then a sum: ``da.bincount(arr.ravel())`` would first rechunk the
    volume into rows (a shuffle of every block, which paused 1 GiB workers on a 4 GiB tomogram).
    """
    nb = arr.numblocks
    per_block = arr.map_blocks(_block_counts, minlength, new_axis=3, dtype=np.int64,
                               chunks=((1,) * nb[0], (1,) * nb[1], (1,) * nb[2], (minlength,)))
    return per_block.sum(axis=(0, 1, 2))


# Every chunk is written, empty (all fill value) or not. zarr 3 by default first compares each chunk with the
# fill value and skips writing it when equal, and that comparison costs more than writing: 7 ms per 128^3
# float32 chunk (a byte-wise comparison of void views), 11 ms per uint8 and 19 ms per uint32 chunk, where
# blosc-lz4 writes an all-zero label chunk in ~1 ms. It took ~4.6 s of CPU in a default run on the tiled
# 200x512x512 tomogram (py-spy, 2026-11-28). zarr 2 writes every chunk by default.
WRITE_EMPTY_CHUNKS = {"write_empty_chunks": True}
ZARR3 = int(zarr.__version__.split(".")[0]) >= 3  # zarr 2 is supported for NGFF 0.4 (copick needs zarr<3)


def open_for_writing(path: str | os.PathLike):
    """The existing zarr array at ``path``, opened to be written in place (every chunk written)."""
    if ZARR3:
        arr = zarr.open_array(str(path), mode="r+")  # (zarr 3.1's open_array ignores a config for an existing array)
        return arr.with_config(WRITE_EMPTY_CHUNKS) if hasattr(arr, "with_config") else arr
    return zarr.open_array(str(path), mode="r+", **WRITE_EMPTY_CHUNKS)


def scratch_array(path: str, shape, dtype, chunks, fast_codec: bool = False):
    """An empty zarr array at ``path`` (overwritten) for an intermediate that later passes read
    back chunk + halo at a time: uncompressed (compression would cost more to read than it saves
    on densities), or with ``fast_codec`` blosc-lz4 at level 1 without shuffle, for label images,
    mostly zeros and runs (a 128^3 uint32 block: 2 ms to encode or decode, 1/29 of the bytes;
    writing it uncompressed took 33 ms, with zstd-5 + bitshuffle, the stored label images' codec until 2026-11-28, 36 ms)."""
    import numcodecs

    codec = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.NOSHUFFLE) if fast_codec else None
    if ZARR3:
        codecs = None if codec is None else zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")
        return zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks, compressors=codecs, overwrite=True,
                                 config=WRITE_EMPTY_CHUNKS)
    return zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks, compressor=codec, **WRITE_EMPTY_CHUNKS)


def stored(arr: da.Array, path: str, label: str = "storing an intermediate", fast_codec: bool = False) -> da.Array:
    """``arr`` computed once into a zarr array at ``path`` (the caller removes it; ``fast_codec``:
    see scratch_array) and read back lazily: later passes read it instead of recomputing it
    (memory stays one chunk per task)."""
    from .progress import compute

    chunks = tuple(int(max(c)) for c in arr.chunks)
    target = scratch_array(path, arr.shape, arr.dtype, chunks, fast_codec)
    compute(da.store(arr.rechunk(chunks, method=RECHUNK), target, lock=False, compute=False), label=label)
    return da.from_zarr(target)
