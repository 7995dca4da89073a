"""Where the sample is: the ice slab (lamella) between two fitted surfaces, found automatically.

A tomogram of a lamella or a thin ice film holds vitreous ice (with particles, crowders and
membranes in it) between two surfaces and vacuum above and below. After the method's blur, the
ice carries structure and the vacuum only smooth reconstruction noise, so the local standard
deviation of the blurred volume is higher in the ice. Detection:

1. Tile statistics: the std of the blurred volume over (1 slice x T x T) tiles, a chunked
   reduction (``da.coarsen``) giving a small (z, ny/T, nx/T) grid; its log, smoothed a little.
2. Two levels: a 1-D two-component Gaussian mixture on the log stds of the whole grid. When its
   components are not clearly apart (separation < ``MIN_SEPARATION`` pooled standard deviations)
   or the low one is not at the top/bottom of the box, there is no vacuum: the slab fills the box
   and nothing changes downstream.
3. The surfaces lie where the profile has risen a quarter of the way from the vacuum's level to
   the ice's; the extraction mask is the surfaces plus a margin. The fitting sample and the
   orientation counts use the core: per side, the surface moved in to the step fit's edge when that
   ramp is no longer than a voxel's feature footprint (blur reach 2 sigma + neighbourhood half-width:
   the features there still see the vacuum); a longer ramp is no blurred surface but a denser
   layer inside the ice (the profile keeps rising), and the core keeps the ice up to that surface.
   Per tile column, the same step fit gives surface heights; a plane z = a + b y + c x is fitted
   to each surface with a robust (Huber) regression, so a tilted or wedge-shaped lamella
   (different top and bottom planes) is followed and a gold bead or a membrane on the surface
   does not pull it.

Why by hand: scikit-image and scipy have no lamella/slab finder; the parts (coarsen, mixture,
robust regression) are library calls.

Coordinates: voxels, (z, y, x); a surface is z(y, x) in slices, inclusive bounds of the ice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from ..backend import asarray_like, to_host

TILE_VOX = 32  # tile edge in y and x, voxels: enough voxels per tile for a stable std, fine enough to follow a tilt
MIN_STEP = 0.12  # ice must have >= 13 % more local std than vacuum (log units) ...
MIN_STEP_NOISE = 2.0  # ... and the step must stand this many robust noise SDs above the profile's wiggles
RISE_FRACTION = 0.25  # a surface is where the local std has risen this share of the way from vacuum to ice
MARGIN_FRACTION = 0.1  # extraction reaches this share of the ice thickness beyond each found surface
MIN_TILE_DATA = 0.5  # a tile needs this share of voxels with data (not a constant fill) to have a local std


@dataclass
class Lamella:
    """The ice slab: lower and upper surfaces as planes z = a + b*y + c*x (voxels), or the whole box."""

    shape: tuple[int, int, int]
    found: bool
    lower: tuple[float, float, float] = (0.0, 0.0, 0.0)
    upper: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reason: str = ""
    levels: dict = field(default_factory=dict)
    pad: float = 0.0  # voxels the extraction mask reaches beyond each surface (``extract=True``)
    core: tuple[float, float] = (0.0, 0.0)  # slices the fitting core lies inside the lower / upper surface (core_insets)

    @classmethod
    def whole_box(cls, shape, reason: str) -> "Lamella":
        return cls(tuple(int(s) for s in shape), False, (0.0, 0.0, 0.0), (float(shape[0] - 1), 0.0, 0.0), reason)

    @classmethod
    def from_dict(cls, d: dict | None, shape) -> "Lamella":
        """Rebuild from ``as_dict`` output (label metadata); None or {} means the whole box."""
        if not d or not d.get("found"):
            return cls.whole_box(shape, (d or {}).get("reason", "no lamella recorded"))
        return cls(tuple(int(s) for s in shape), True, tuple(d["lower"]), tuple(d["upper"]), d.get("reason", ""),
                   d.get("levels", {}), float(d.get("pad", 0.0)), tuple(d.get("core", (0.0, 0.0))))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["lower"], d["upper"] = list(self.lower), list(self.upper)
        d["z_range"] = list(self.z_range())  # the fitting core
        d["z_range_extract"] = list(self.z_range(extract=True))
        d["ice_fraction"] = round(self.fraction_inside(), 4)
        return d

    def surfaces(self, y: np.ndarray, x: np.ndarray, extract: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper surface heights (slices) at (y, x) voxel positions (broadcast);
        ``extract``: moved out by ``pad`` (the extraction region), else moved in by ``core`` (the
        fitting core: the surfaces less the ramps their blur explains)."""
        out_lo, out_hi = (self.pad, self.pad) if extract else (-self.core[0], -self.core[1])
        lo = self.lower[0] + self.lower[1] * y + self.lower[2] * x - out_lo
        hi = self.upper[0] + self.upper[1] * y + self.upper[2] * x + out_hi
        return lo, hi

    def inside_block(self, origin, shape, extract: bool = False) -> np.ndarray:
        """Boolean block (z, y, x) of ``shape`` at ``origin``: True inside the slab (all True if not found)."""
        if not self.found:
            return np.ones(tuple(shape), bool)
        z = np.arange(origin[0], origin[0] + shape[0])[:, None, None]
        y = np.arange(origin[1], origin[1] + shape[1])[None, :, None]
        x = np.arange(origin[2], origin[2] + shape[2])[None, None, :]
        lo, hi = self.surfaces(y, x, extract)
        return (z >= lo) & (z <= hi)

    def inside_points(self, zyx: np.ndarray, extract: bool = False) -> np.ndarray:
        """Boolean per (n, 3) point (z, y, x voxels): inside the slab."""
        if not self.found:
            return np.ones(len(zyx), bool)
        lo, hi = self.surfaces(zyx[:, 1], zyx[:, 2], extract)
        return (zyx[:, 0] >= lo) & (zyx[:, 0] <= hi)

    def mask(self, chunks, extract: bool = False, binning: int = 1) -> da.Array:
        """Lazy boolean mask of the slab with the given chunks (computed per block from the planes).

        ``binning`` f > 1: the mask on the grid binned by f (each axis // f, trailing remainders
        dropped), True where all f^3 voxels of the cube are inside: the same as coarsening the
        full mask with ``all``, computed per binned block from the planes."""
        shape = tuple(s // binning for s in self.shape)
        if not self.found:
            return da.ones(shape, chunks=chunks, dtype=bool)

        def block(block_info=None):
            info = block_info[None]
            origin = [r[0] * binning for r in info["array-location"]]
            z, y, x = info["chunk-shape"]
            full = self.inside_block(origin, (z * binning, y * binning, x * binning), extract)
            return full if binning == 1 else full.reshape(z, binning, y, binning, x, binning).all(axis=(1, 3, 5))

        return da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.empty((0, 0, 0), bool))

    def z_range(self, extract: bool = False) -> tuple[int, int]:
        """[lo, hi) slices that contain the whole slab."""
        ny, nx = self.shape[1], self.shape[2]
        y = np.array([0, 0, ny - 1, ny - 1])
        x = np.array([0, nx - 1, 0, nx - 1])
        lo, hi = self.surfaces(y, x, extract)
        return max(0, int(np.floor(lo.min()))), min(self.shape[0], int(np.ceil(hi.max())) + 1)

    def fraction_inside(self) -> float:
        """Share of the box's voxels inside the slab (from the planes, on a coarse grid)."""
        if not self.found:
            return 1.0
        ny, nx = self.shape[1], self.shape[2]
        y, x = np.meshgrid(np.linspace(0, ny - 1, 32), np.linspace(0, nx - 1, 32), indexing="ij")
        lo, hi = self.surfaces(y, x)
        thick = np.clip(np.minimum(hi, self.shape[0] - 1) - np.maximum(lo, 0) + 1, 0, None)
        return float(thick.mean() / self.shape[0])


def tile_log_std(volume: da.Array, tile: int = TILE_VOX, no_data: da.Array | None = None) -> np.ndarray:
    """(z, ny//tile, nx//tile) log standard deviation of ``volume`` over 1 x tile x tile tiles (chunked).

    With a ``no_data`` mask (boolean, same shape: segment/nodata.py), the moments are taken over the
    voxels with data only, and a tile with less than MIN_TILE_DATA of them is NaN (unknown, neither
    vacuum nor ice: a constant fill has no local std at all and would pass for the deepest vacuum).
    """
    from ..progress import compute

    v = volume.astype(np.float32)
    axes = {1: tile, 2: tile}
    if no_data is None:
        m = da.coarsen(np.mean, v, axes, trim_excess=True)
        m2 = da.coarsen(np.mean, v * v, axes, trim_excess=True)
        m, m2 = compute(m, m2, label="lamella: tile statistics")
        m, m2 = to_host(m).astype(np.float64), to_host(m2).astype(np.float64)  # cupy chunks give device arrays
        share = None
    else:
        w = (~no_data.rechunk(v.chunks)).astype(np.float32)
        w = w.map_blocks(asarray_like, v, dtype=np.float32)  # the mask is host data; on the GPU path v is cupy
        s0, s1, s2 = (da.coarsen(np.sum, a, axes, trim_excess=True) for a in (w, v * w, v * v * w))
        s0, s1, s2 = (to_host(a).astype(np.float64) for a in compute(s0, s1, s2, label="lamella: tile statistics"))
        share = s0 / float(tile * tile)
        n = np.maximum(s0, 1.0)
        m, m2 = s1 / n, s2 / n
    var = np.maximum(m2 - m ** 2, 1e-30)
    out = 0.5 * np.log(var)
    if share is not None:
        out[share < MIN_TILE_DATA] = np.nan
    return out


def _fill_no_data(log_std: np.ndarray) -> np.ndarray | None:
    """Tiles without data (NaN) take the value of the nearest slice with data in their own column, as the
    faces' slices do (_flatten_faces); None when fewer than half the tile columns keep any data."""
    out = np.array(log_std, copy=True)
    bad = np.isnan(out)
    if not bad.any():
        return out
    cols = (~bad).any(axis=0)
    if cols.mean() < 0.5:
        return None
    z = np.arange(out.shape[0])
    for j, i in zip(*np.nonzero(cols & bad.any(axis=0))):
        ok = ~bad[:, j, i]
        idx = np.searchsorted(z[ok], z).clip(0, ok.sum() - 1)  # the next slice with data, or the last one
        prev = np.clip(idx - 1, 0, None)
        near = np.where(np.abs(z[ok][prev] - z) < np.abs(z[ok][idx] - z), prev, idx)
        out[:, j, i] = out[:, j, i][ok][near]
    return out


def box_fit(profile: np.ndarray, min_width: int = 1) -> tuple[int, int, float, float]:
    """Best step ("box") model of a 1-D profile: level a on [z0, z1), level b < a outside, least squares.

    Boxes are at least ``min_width`` slices. Exhaustive over all (z0, z1) with cumulative sums (n^2 / 2 candidates, n = slices). Returns
    (z0, z1, a, b); z0 = 0 or z1 = n means vacuum on one side only. (-1, -1, nan, nan) if no
    box is higher inside than outside.
    """
    p = np.asarray(profile, np.float64)
    n = len(p)
    c = np.r_[0.0, np.cumsum(p)]
    c2 = np.r_[0.0, np.cumsum(p * p)]
    z0, z1 = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = (z1 - z0 >= min_width) & (z1 - z0 < n)
    nin = np.where(ok, z1 - z0, 1)
    nout = np.where(ok, n - (z1 - z0), 1)
    sin = c[z1] - c[z0]
    sout = c[n] - sin
    sse = c2[n] - sin ** 2 / nin - sout ** 2 / nout
    sse = np.where(ok & (sin / nin > sout / nout), sse, np.inf)
    if not np.isfinite(sse).any():
        return -1, -1, float("nan"), float("nan")
    i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
    return int(i), int(j), float(sin[i, j] / nin[i, j]), float(sout[i, j] / nout[i, j])


def _fit_plane(y: np.ndarray, x: np.ndarray, z: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """Robust plane z = a + b y + c x (scikit-learn's Huber regression on tile centres) and the
    median absolute residual of the tiles about it."""
    from sklearn.linear_model import HuberRegressor

    scale = max(1.0, float(np.max(np.abs(np.r_[y, x]))))
    r = HuberRegressor(epsilon=1.35, alpha=0.0).fit(np.stack([y, x], 1) / scale, z)
    coef = (float(r.intercept_), float(r.coef_[0] / scale), float(r.coef_[1] / scale))
    res = z - (coef[0] + coef[1] * y + coef[2] * x)
    return coef, float(np.median(np.abs(res)))


def _flatten_faces(log_std: np.ndarray, edge: int) -> np.ndarray:
    """The first and last ``edge`` slices take the values of the nearest slice further in: the blur's
    reflecting boundary correlates the voxels there and changes their std, ice or vacuum alike."""
    out = np.array(log_std, copy=True)
    if edge > 0 and out.shape[0] > 2 * edge + 2:
        out[:edge] = out[edge]
        out[-edge:] = out[-edge - 1]
    return out


def core_insets(ramps: tuple[int, int], footprint_vox: float) -> tuple[float, float]:
    """Slices the fitting core lies inside the (lower, upper) surface: a side's ramp (surface to the
    step fit's edge) when it is within the features' footprint of the surface, else 0 (that ramp is
    a denser layer inside the ice, not the blurred surface: cutting there would drop ice)."""
    return tuple(float(r) if r <= footprint_vox else 0.0 for r in ramps)


def find_lamella(log_std: np.ndarray, shape: tuple[int, int, int], tile: int = TILE_VOX,
                 margin: float = MARGIN_FRACTION, edge: int = 4, footprint_vox: float = 6.0) -> Lamella:
    """The slab from a (z, ty, tx) grid of tile log-stds of a (z, y, x) volume of ``shape``.

    The whole-plane profile (mean over tiles) gives the ice and vacuum levels and a flat slab by a
    box fit; vacuum is accepted when the ice's local std exceeds the vacuum's by MIN_STEP (log
    units) and the step stands MIN_STEP_NOISE robust residuals above the profile's noise. Each
    tile column's own box fit then gives surface heights; a plane per surface replaces the flat
    bound when the tiles agree with it (median residual <= 5 % of the slices, and 30 % below the flat one's). Extraction reaches
    ``margin`` x the ice thickness beyond both surfaces (``pad``): where structure starts lies
    inside the physical surface, as particles at the surface carry less structure there. The
    fitting core: ``core_insets`` with ``footprint_vox`` (slices a voxel's features reach).
    """
    nz = shape[0]
    if log_std.size == 0 or nz < 8:
        return Lamella.whole_box(shape, "volume too small to look for a lamella")
    has_data = ~np.isnan(log_std).all(axis=0)  # tile columns with some data (tile_log_std's no-data tiles are NaN)
    log_std = _fill_no_data(log_std)
    if log_std is None:
        return Lamella.whole_box(shape, "too little of the volume holds data to look for a lamella")
    log_std = _flatten_faces(log_std, edge)
    prof = ndi.gaussian_filter1d(log_std[:, has_data].mean(axis=1), 1.0, mode="nearest")
    min_width = max(4, nz // 10)  # a slab thinner than a tenth of the box is not what is being looked for
    z0, z1, a, b = box_fit(prof, min_width)
    if z0 < 0:
        return Lamella.whole_box(shape, "no vacuum: the local-std profile has no step up into ice")
    fit = np.where((np.arange(nz) >= z0) & (np.arange(nz) < z1), a, b)
    noise = 1.4826 * float(np.median(np.abs(prof - fit))) + 1e-9
    step = a - b
    levels = {"ice_log_std": round(a, 4), "vacuum_log_std": round(b, 4), "step_log": round(step, 4),
              "step_over_noise": round(step / noise, 2), "tile_vox": tile, "flat_bounds": [z0, z1 - 1]}
    if step < MIN_STEP or step / noise < MIN_STEP_NOISE:
        out = Lamella.whole_box(shape, f"no vacuum: the local-std profile is flat (ice/vacuum step {np.exp(step) - 1:.0%}, "
                                       f"{step / noise:.1f} x noise): the slab fills the box")
        out.levels = levels
        return out
    # the surfaces: where the profile first rises a quarter of the way from the vacuum's level to the
    # ice's (medians outside / inside the box). The box edge itself sits at the middle of the ramp;
    # structure ramps up inside the ice (particles cannot be centred within their radius of a
    # surface), so the quarter-way crossing is nearer the physical surface.
    vac, ice = float(np.median(prof[np.r_[0:z0, z1:nz]])), float(np.median(prof[z0:z1]))
    above = prof > vac + RISE_FRACTION * (ice - vac)
    e0, e1 = z0, z1 - 1
    while e0 > 0 and above[e0 - 1]:
        e0 -= 1
    while e1 < nz - 1 and above[e1 + 1]:
        e1 += 1
    shift_lo, shift_hi = z0 - e0, e1 - (z1 - 1)  # slices the surfaces move out from the box edges
    levels["surfaces_flat"] = [e0, e1]
    levels["ramps"], levels["footprint_vox"] = [int(shift_lo), int(shift_hi)], float(footprint_vox)
    s = ndi.gaussian_filter(log_std, sigma=(1.0, 0.5, 0.5), mode="nearest")
    ty, tx = s.shape[1], s.shape[2]
    cy, cx, lo, hi = [], [], [], []
    for j in range(ty):
        for i in range(tx):
            if not has_data[j, i]:
                continue
            t0, t1, _, _ = box_fit(s[:, j, i], min_width)
            if t0 >= 0:
                cy.append((j + 0.5) * tile)
                cx.append((i + 0.5) * tile)
                lo.append(t0)
                hi.append(t1 - 1)
    lower = (float(e0), 0.0, 0.0)
    upper = (float(e1), 0.0, 0.0)
    tilted = []
    if len(lo) >= 6:
        cy, cx, lo, hi = map(np.asarray, (cy, cx, lo, hi))
        for k, (z, flat) in enumerate(((lo, z0), (hi, z1 - 1))):
            if (k == 0 and z0 == 0) or (k == 1 and z1 == nz):
                continue  # the slab leaves the box on this side
            coef, mad = _fit_plane(cy, cx, z.astype(float))
            flat_mad = float(np.median(np.abs(z - np.median(z))))
            if mad <= 0.05 * nz and mad <= 0.7 * flat_mad:  # the tiles agree, and better than with a flat surface
                if k == 0:
                    lower = (coef[0] - shift_lo, coef[1], coef[2])
                else:
                    upper = (coef[0] + shift_hi, coef[1], coef[2])
                tilted.append("lower" if k == 0 else "upper")
    lam = Lamella(tuple(int(v) for v in shape), True, lower, upper, levels=levels,
                  pad=round(margin * float(upper[0] - lower[0]), 2), core=core_insets((shift_lo, shift_hi), footprint_vox))
    frac = lam.fraction_inside()
    if frac > 0.97:
        out = Lamella.whole_box(shape, "the slab fills the box")
        out.levels = levels
        return out
    if frac < 0.05:
        return Lamella.whole_box(shape, "the fitted slab is implausibly thin; using the whole box")
    zr = lam.z_range()
    lam.levels["surfaces_fitted_per_tile"] = tilted
    lam.reason = (f"ice between slices {zr[0]}..{zr[1] - 1} ({frac:.0%} of the box; "
                  f"{'planes fitted to ' + ' and '.join(tilted) if tilted else 'flat'}), local std {np.exp(step) - 1:.0%} "
                  f"higher than in the vacuum ({step / noise:.0f} x noise), extraction {lam.pad:.1f} voxels beyond ({margin:.0%} of the thickness)")
    return lam


def detect_lamella(scaled: da.Array, tile: int = TILE_VOX, margin: float = MARGIN_FRACTION,
                   sigma_vox: float = 2.0, neighborhood_size: int = 5, no_data: da.Array | None = None) -> Lamella:
    """The ice slab of a blurred (z, y, x) tomogram (blur ``sigma_vox``, features on
    ``neighborhood_size``^3 neighbourhoods; see module docstring); ``no_data``: the voxels without
    data (segment/nodata.py), left out of the tile statistics."""
    t = min(tile, max(4, min(scaled.shape[1], scaled.shape[2]) // 4))
    reach = int(np.ceil(2 * sigma_vox))
    return find_lamella(tile_log_std(scaled, t, no_data), tuple(scaled.shape), t, margin, reach,
                        reach + neighborhood_size // 2)
