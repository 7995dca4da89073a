"""The working grid: when a tomogram is resampled before picking, how, and how coordinates map back.

Why: PickET's features are defined in voxels (5x5x5 neighbourhoods, a blur of a few voxels), so
their physical scale follows the voxel size, and so does what they can tell apart. picket-dask
picks on WORK_VOXELS_PER_DIAMETER voxels per smallest diameter of the size prior (10 A for the 60 A
default): the 5-voxel neighbourhood fits inside the smallest particle and the blur matched to it
(segment/preprocess.blur_sigma_vox, its radius / sqrt(3)) is 1.73 voxels, near the 2 voxels PickET
was designed with. A coarser tomogram (beyond TOLERANCE: header rounding) is interpolated up to
that grid. On coarse voxels the neighbourhood is wider than the smallest particles and neighbours
segment as one blob; past d_min / (2 sqrt 3) (17.3 A) the matched blur is even clipped at 1 voxel.
Measured (README "Working grid"): the dev set binned to 14 A and to 20 A regains its 10 A F1.
Finer tomograms keep their grid: the matched blur widens with them (up to 4 voxels), and
resampling them down was measured and not kept. The working grid is at most MAX_UPSAMPLE (2x) finer than the
source per axis.

How: cubic B-spline interpolation (scipy.ndimage's, order 3, the boundary mirrored about the volume's
faces), chunk by chunk: each output chunk is computed from the source region it maps to plus
SPLINE_HALO source voxels per face, one interpolation matrix per axis (the spline is separable). The spline prefilter is a recursive filter whose influence
decays as 0.268^d with distance d, so with a 16-voxel halo every chunk equals the whole-volume
interpolation to float32 rounding (tests/test_grid.py). Trilinear interpolation smooths as a
function of the sample's phase; cubic splines keep the noise's texture far closer to the source's.

Coordinates: the two grids share the volume's corner. Voxel j of a grid with voxel size w covers
[j w, (j + 1) w) from the corner, so with ``r = work voxel / source voxel`` a work voxel j sits at
source voxel (j + 0.5) r - 0.5. Picks are written in the *source* tomogram's voxels (what RELION,
IMOD and copick expect); the OME-Zarr image and its labels are on the working grid, with its voxel
size and a translation of 0.5 (w - v) A (OME-NGFF coordinateTransformations), so napari overlays them.
Options given in voxels (z bounds, peak spacing, sizes, blur) refer to the source tomogram's voxels
and are converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from ..chunking import block_boxes, from_block_tasks, haloed_box
from ..config import SIGMA_RANGE_VOX

WORK_VOXELS_PER_DIAMETER = 6.0  # the smallest particle's diameter in working voxels when resampled
SPLINE_HALO = 16  # source voxels per face: the cubic spline prefilter's influence 0.268^16 ~ 7e-10
RESAMPLE_MODES = ("auto", "off")
TOLERANCE = 0.05  # voxels at most 5 % coarser than the working grid keep their own (headers round voxel sizes)
# At most this much finer than the source per axis (8x the voxels): every measured gain lies within it (20 A -> 10 A).
# Interpolation adds no detail, so a particle under 3 source voxels stays unresolved on any grid, while the
# volume grows with the cube (a 100 A overview at the 60 A default would be 1,000x the voxels).
MAX_UPSAMPLE = 2.0


@dataclass(frozen=True)
class Grid:
    """Source and working grids: voxel sizes (z, y, x) in Angstrom, shapes (z, y, x)."""

    source_voxel_A: tuple[float, float, float]
    source_shape: tuple[int, int, int]
    voxel_A: tuple[float, float, float]
    shape: tuple[int, int, int]
    reason: str = field(default="", compare=False)  # why; two grids are equal when their geometry is

    @property
    def resampled(self) -> bool:
        return tuple(self.voxel_A) != tuple(self.source_voxel_A) or tuple(self.shape) != tuple(self.source_shape)

    @property
    def ratio(self) -> np.ndarray:
        """Working voxel / source voxel per axis (z, y, x): < 1 when the working grid is finer."""
        return np.asarray(self.voxel_A, float) / np.asarray(self.source_voxel_A, float)

    @property
    def translation_A(self) -> tuple[float, float, float]:
        """Where working voxel 0's centre lies from source voxel 0's centre, Angstrom (z, y, x)."""
        return tuple(float(0.5 * (w - v)) for w, v in zip(self.voxel_A, self.source_voxel_A))

    def to_source(self, zyx: np.ndarray) -> np.ndarray:
        """Working-grid voxel coordinates (n, 3) -> source voxel coordinates."""
        if not self.resampled:
            return np.asarray(zyx, float)
        return (np.asarray(zyx, float).reshape(-1, 3) + 0.5) * self.ratio - 0.5

    def to_work(self, zyx: np.ndarray) -> np.ndarray:
        """Source voxel coordinates (n, 3) -> working-grid voxel coordinates."""
        if not self.resampled:
            return np.asarray(zyx, float)
        return (np.asarray(zyx, float).reshape(-1, 3) + 0.5) / self.ratio - 0.5

    def as_dict(self) -> dict:
        return {"resampled": self.resampled, "source_voxel_size_A": list(self.source_voxel_A),
                "source_shape_zyx": list(self.source_shape), "voxel_size_A": list(self.voxel_A),
                "shape_zyx": list(self.shape), "translation_A": list(self.translation_A), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict | None, voxel_A=None, shape=None) -> "Grid":
        """The grid recorded in an image's attributes; without a record, the identity on (voxel_A, shape)."""
        if not d:
            return identity(voxel_A, shape)
        return cls(tuple(map(float, d["source_voxel_size_A"])), tuple(map(int, d["source_shape_zyx"])),
                   tuple(map(float, d["voxel_size_A"])), tuple(map(int, d["shape_zyx"])), d.get("reason", ""))


def image_grid(image, voxel_A, shape) -> Grid:
    """The working grid an OME-Zarr image was written on (its ``working_grid`` record; else the identity
    on its own ``voxel_A`` and ``shape``): maps the picks' source voxels onto the image's."""
    from .omezarr import read_attrs

    return Grid.from_dict(read_attrs(image).get("working_grid"), voxel_A, shape)


def identity(voxel_A, shape, reason: str = "") -> Grid:
    v = tuple(float(x) for x in voxel_A)
    s = tuple(int(x) for x in shape)
    return Grid(v, s, v, s, reason)


def working_grid(voxel_A, shape, diameter_A: tuple[float, float] | None, mode: str = "auto") -> Grid:
    """The grid to pick on: the source's, or finer when its voxels are too coarse for the smallest
    particle of the size prior (module docstring). ``voxel_A`` (z, y, x) Angstrom; ``shape`` (z, y, x)."""
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample mode {mode!r}: use one of {RESAMPLE_MODES}")
    v = float(np.max(voxel_A))
    if mode == "off":
        return identity(voxel_A, shape, "off")
    if diameter_A is None:
        return identity(voxel_A, shape, "no size prior: the source grid")
    d_min = float(diameter_A[0])
    w = d_min / WORK_VOXELS_PER_DIAMETER
    if v <= w * (1 + TOLERANCE):
        return identity(voxel_A, shape, f"{v:g} A voxels resolve the smallest particle ({d_min:g} A; "
                                        f"resampled above {w * (1 + TOLERANCE):.1f} A)")
    clip = 0.5 * d_min / np.sqrt(3.0) / SIGMA_RANGE_VOX[0]  # where the matched blur reaches 1 voxel
    capped = v / MAX_UPSAMPLE > w
    w = max(w, v / MAX_UPSAMPLE)
    work = tuple(float(w) for _ in range(3))
    new_shape = tuple(max(1, int(round(n * float(s) / w))) for n, s in zip(shape, voxel_A))
    reason = (f"{v:g} A voxels are coarser than {d_min / WORK_VOXELS_PER_DIAMETER:g} A, 6 voxels per smallest particle "
              f"diameter ({d_min:g} A)"
              + (f", and than {clip:.1f} A, where the blur matched to it is one voxel" if v > clip else "")
              + f": resampled to {w:g} A, {np.prod(new_shape) / np.prod(shape):.1f}x the voxels"
              + (f" (at most {MAX_UPSAMPLE:g}x finer per axis: particles under {3 * v:g} A, 3 of its voxels, are not "
                 "resolved by this tomogram; check --voxel-size and --particle-diameter-A)" if capped else "")
              + " (--resample off keeps the grid)")
    return Grid(tuple(float(x) for x in voxel_A), tuple(int(x) for x in shape), work, new_shape, reason)


def _axis_matrix(n_in: int, n_out: int, ratio: float, offset: float) -> np.ndarray:
    """(n_out, n_in) float32: output sample i = sum_j M[i, j] x[j] of scipy's cubic B-spline interpolation
    (prefilter included, mirrored about the faces) of n_in samples at positions i x ratio + offset."""
    from scipy import ndimage as ndi

    eye = np.eye(n_in)  # the interpolation of each unit impulse (along axis 1 the knots are kept exactly)
    return ndi.affine_transform(eye, [ratio, 1.0], offset=[offset, 0.0], output_shape=(n_out, n_in),
                                order=3, mode="reflect", prefilter=True).astype(np.float32)


def _resample_block(src: np.ndarray, ratio: np.ndarray, offset: np.ndarray, out_shape) -> np.ndarray:
    """scipy.ndimage.affine_transform(src, ratio, offset, order=3, mode='reflect') of a block, axis by axis.

    By hand: a tensor-product B-spline is separable (prefilter and weights per axis), so the 3-D
    interpolation is one (out x in) matrix per axis applied in turn, three BLAS products; scipy's 3-D
    routine evaluates 64 weights per output voxel (a 200x512x512 output: 13.6 -> ~1 s in the conversion)."""
    x = np.asarray(src, np.float32)
    m = [_axis_matrix(n, o, float(r), float(f)) for n, o, r, f in zip(x.shape, out_shape, ratio, offset)]
    x = np.tensordot(m[0], x, axes=(1, 0))   # (o0, n1, n2)
    x = np.matmul(m[1], x)                   # (o0, o1, n2)
    return np.ascontiguousarray(np.matmul(x, m[2].T), dtype=np.float32)


def _regrid(data: da.Array, out_shape, ratio: np.ndarray, halo: int, block_fn, dtype, chunks: int) -> da.Array:
    """Lazy ``block_fn(region, ratio, offset, out_chunk_shape)`` per output chunk of ``out_shape``, output
    voxel j sampling ``data`` at (j + 0.5) ratio - 0.5; ``region``: the input voxels the chunk's samples
    reach (one either side, for the interpolation's support) plus ``halo``, clipped to the volume."""
    out_chunks = da.core.normalize_chunks((chunks,) * 3, tuple(out_shape))
    tasks = {}
    for b, origin, shape in block_boxes(out_chunks):
        first = (np.asarray(origin) + 0.5) * ratio - 0.5
        last = (np.asarray(origin) + np.asarray(shape) - 0.5) * ratio - 0.5
        start = np.floor(first).astype(int) - 1
        lo, hi = haloed_box(data.shape, start, np.ceil(last).astype(int) + 2 - start, halo)
        # at a volume face the region ends where the volume does, so mirroring there is the whole volume's
        region = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        tasks[b] = dask.delayed(block_fn)(region, ratio, first - lo, shape)
    return from_block_tasks(tasks, out_chunks, dtype)


def resample(data: da.Array, grid: Grid, chunks: int = 128, halo: int = SPLINE_HALO) -> da.Array:
    """Lazy float32 (z, y, x) ``data`` (on ``grid``'s source grid) interpolated onto its working grid
    (cubic B-spline, mirrored about the faces), one task per output chunk from its haloed source region."""
    if not grid.resampled:
        return data
    return _regrid(data, grid.shape, grid.ratio, halo, _resample_block, np.float32, chunks)


def resample_whole(data: np.ndarray, grid: Grid) -> np.ndarray:
    """The same interpolation by scipy's 3-D routine on a whole in-memory volume (the reference the
    chunked one equals)."""
    from scipy import ndimage as ndi

    if not grid.resampled:
        return np.asarray(data, np.float32)
    return ndi.affine_transform(np.asarray(data, np.float64), grid.ratio, offset=0.5 * grid.ratio - 0.5,
                                output_shape=grid.shape, order=3, mode="reflect", prefilter=True).astype(np.float32)


def _length(v, scale: float):
    return None if v is None else v * scale


def _slices(bounds, grid: "Grid", inclusive: bool = False):
    """z slice bounds of the source -> the working grid's, covering the same part of the volume
    (slice k spans [k, k + 1) voxel edges from the corner: edges scale by 1 / ratio). ``inclusive``:
    the upper bound is the last slice kept (z_extract, the reference's rule), else one past it (z_fit)."""
    if bounds is None:
        return None
    r = float(grid.ratio[0])
    lo, hi = bounds
    lo = None if lo is None else max(0, int(np.floor(lo / r + 1e-9)))
    if hi is not None:
        hi = int(np.ceil((hi + 1) / r - 1e-9)) - 1 if inclusive else int(np.ceil(hi / r - 1e-9))
    return lo, hi


def work_params(grid: Grid, segment, localize):
    """Step 1 and step 2 parameters with every option given in the source tomogram's voxels (z bounds,
    blur, peak spacing, halo, instance sizes) converted to working voxels; unchanged when not resampled."""
    if not grid.resampled:
        return segment, localize
    s = 1.0 / float(np.max(grid.ratio))  # working voxels per source voxel
    seg = segment.model_copy(update={"z_fit": _slices(segment.z_fit, grid), "sigma_vox": _length(segment.sigma_vox, s)})
    md = localize.min_distance_vox
    loc = localize.model_copy(update={
        "z_extract": _slices(localize.z_extract, grid, inclusive=True),
        "min_distance_vox": None if md is None else max(1, int(round(md * s))),
        "halo_vox": None if localize.halo_vox is None else int(np.ceil(localize.halo_vox * s)),
        "min_size_vox": int(round(localize.min_size_vox * s**3)),
        "max_size_vox": None if localize.max_size_vox is None else max(1, int(round(localize.max_size_vox * s**3)))})
    return seg, loc


def _nearest_block(region: np.ndarray, inv_ratio: np.ndarray, offset: np.ndarray, out_shape) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.affine_transform(np.asarray(region), inv_ratio, offset=offset, output_shape=tuple(out_shape),
                                order=0, mode="nearest", prefilter=False)


def labels_to_source(labels: da.Array, grid: Grid, chunks: int = 128) -> da.Array:
    """Lazy labels on the working grid sampled at the source voxels' centres (nearest working voxel):
    a label image voxel-for-voxel with the tomogram, for tools that expect one (copick write-back)."""
    if not grid.resampled:
        return labels
    return _regrid(labels, grid.source_shape, 1.0 / grid.ratio, 0, _nearest_block, labels.dtype, chunks)
