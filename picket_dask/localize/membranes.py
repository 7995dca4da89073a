"""Membranes and other sheet-like structures: planarity of the gradient structure tensor, hysteresis
with thresholds from the data's own spread, and a per-component sheet test.

What a membrane looks like in a tomogram: a lipid bilayer is two dense leaflets ~40 A apart
(MEMBRANE_THICKNESS_A), flanked by the CTF's fringes, so across it the density oscillates with a
period of ~40 A while along it nothing changes. Its mean density is close to the ice's (the CTF
removes the low frequencies), so a blur at the bilayer's scale, or a Hessian on a ~20 A grid,
barely sees it; its *gradients* do: at the scale of one leaflet (GRADIENT_SIGMA_A, on the
full-resolution tomogram) they are strong and all point along the membrane's normal. The
structure tensor T = G_rho * (grad I grad I^T) (gradient products averaged over a membrane patch,
INTEGRATION_SIGMA_A) then has one large eigenvalue and two small ones (m1 >> m2 >= m3) on a
membrane, about equal ones in noise, and on a particle (a blob) gradients in every direction.
Per voxel of the ~20 A grid the rest runs on:

    planarity = m1 - m2      (the gradient energy that has one direction)

The gradient products are formed at full resolution and averaged over each f^3 cube (the first
step of the integration), so only the binned grid is held afterwards.

Thresholds come from the data: the median and MAD (x 1.4826, a robust SD) of the planarity inside
the sample describe the ice, crowders and particles; voxels more than SEED_Z robust SDs above the
median seed membranes and grow through those above GROW_Z (hysteresis, 2:1 as in Canny edge
detection). How much of a tomogram is membrane varies from none to much, so a fixed percentile
(the former rule) either invents membranes or misses most of them.

A grown component is a membrane when it is a sheet larger than any particle: its longest extent
is at least the size prior's largest diameter d_max, and its area (voxels x voxel volume / the
response band's thickness, 2 x INTEGRATION_SIGMA_A) at least that of a disc of diameter d_max.
A particle's surface is locally planar too, but it ends within d_max and covers less area; a
chain of touching particles can be long but not wide. The membranes are grown by what the band
lacks to reach half a bilayer plus the smallest particle's radius from the mid-plane (so that
picks touching a membrane are excluded) and returned on the binned grid.

A sheet must also *face along its normal*: on a membrane the response is a band whose two broad
faces are perpendicular to the tensor's normal n, so the gradient g of the component's 0/1 response
(its surface) mostly lies along n. Per component, the share sum (n . g)^2 / sum |g|^2 over its
voxels is ~0.7 or more for a sheet wider than a few times its thickness (>= 1/2 once wider than
twice it: FACING_MIN), 1/3 for a surface facing every way, and near 0 for a response that runs
along its own normal. The last is what a weighted back-projection makes: the tilt series is tilted
about y and ramp-filtered along x, so the noise's gradients lie mostly along x (on the built-in
simulator the ice's tensor is ~0.54 : 0.26 : 0.20 of its trace along x : y : z), and a dense object
(a gold bead, a strong particle) rings along x in every projection: streaks in the x-z plane through
it, planar by m1 - m2 with n along x, and long along x. On four built-in medium scenes these
streaks and the x-facing lobes of particles were most of the "sheets" the length-and-area test
passed (shares 0.18-0.50), against 0.41-0.73 for the components lying mostly on a membrane there
(two of seven below 1/2: crescents of small vesicles) and 0.61-0.80 for the dev set's nine sheets.
The test is a per-block sum reduced per component.

Known limit, same cause: with the ice's tensor x-heavy, a membrane whose normal is along y or z must
add more gradient energy than the ice's x excess before m1 - m2 rises at all, so such patches are
missed. Whitening the tensor by the ice's (B^-1/2 T B^-1/2) recovers them on the built-in scenes
(membrane surface covered 0.16-0.66 -> 0.55-0.83) but makes every particle's surface planar too:
hysteresis then chains particles into sheets (5-16 % of the sample masked, 20-149 true centres
inside): not used.

Why by hand: scipy gives the Gaussian derivatives and scikit-image a structure tensor on whole
arrays (finite differences, one scale); here derivatives and integration have their own scales,
run per chunk with a halo, and the eigenvalues use the closed form in hessian.py. The
hysteresis's connectivity and the per-component tests use picket-dask's chunked connected
components and instance table.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from .morphology import grown

MEMBRANE_THICKNESS_A = 40.0   # a lipid bilayer, headgroup to headgroup
GRADIENT_SIGMA_A = 10.0       # derivative scale: one leaflet (a quarter of the bilayer's ~40 A period)
INTEGRATION_SIGMA_A = 40.0    # structure-tensor window: a membrane patch about one bilayer across
BIN_TARGET_A = 20.0           # binned voxel size the tensor is integrated and tested at
SEED_Z, GROW_Z = 6.0, 3.0     # hysteresis levels in robust SDs above the median planarity
FACING_SIGMA_VOX = 1.0        # derivative scale of a component's 0/1 response: its surface, one binned voxel
FACING_MIN = 0.5              # a sheet's surface faces along its normal: >= 1/2 when wider than twice its
# thickness (a disc of d_max in an 80 A band: ~0.7), 1/3 for a surface facing every way, ~0 for a streak
# Blocks on the binned grid: as many voxels per block as the converted image's 128^3 chunks, so f^3
# fewer blocks than the full-resolution grid, and f^3 fewer of the small tasks each halo exchange and
# rechunk makes per block (at 10 A with 64-voxel blocks the context stage had ~8,600 tasks, which
# under distributed cost more in scheduling than they computed). The filters that make several
# float32 copies of a haloed block (gradient products, planarity) keep 64-voxel blocks.
BINNED_CHUNK = 128
FILTER_CHUNK = 64
PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # upper triangle, hessian.symmetric_eigvals' order


def _coarsen(a: np.ndarray, f: int) -> np.ndarray:
    """Mean of ``a`` (z, y, x) over f^3 cubes (trailing remainders dropped), in ``a``'s dtype.

    By hand: the f strided slices are added one axis at a time (each pass over a 1/f smaller
    array); numpy's mean over the reshaped (z, f, y, f, x, f) array's three non-adjacent axes
    walks the whole array with small strides, ~4x slower, and was a third of this stage's time.
    """
    if f == 1:
        return a
    z, y, x = (s // f for s in a.shape)
    out = a[:z * f, :y * f, :x * f]
    for axis in range(3):
        take = [slice(None)] * 3
        take[axis] = slice(0, None, f)
        acc = out[tuple(take)].copy()
        for k in range(1, f):
            take[axis] = slice(k, None, f)
            acc += out[tuple(take)]
        out = acc
    out *= 1.0 / f**3
    return out


def gradient_products_block(block: np.ndarray, sigma_vox: float, depth: tuple[int, int, int], f: int) -> np.ndarray:
    """(6, z/f, y/f, x/f) float32: the six distinct products of the Gaussian-derivative gradient
    (sigma_vox, voxels) of a haloed block (``depth`` voxels each side per axis, removed), averaged on f^3 cubes."""
    from scipy import ndimage as ndi

    x = np.asarray(block, np.float32)
    core = tuple(slice(d, n - d) for d, n in zip(depth, x.shape))
    g = [ndi.gaussian_filter(x, sigma_vox, order=o, mode="reflect")[core]
         for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    return np.stack([_coarsen(g[i] * g[j], f) for i, j in PAIRS]).astype(np.float32)


def planarity_block(block: np.ndarray, rho_vox: float, depth: tuple[int, int, int]) -> np.ndarray:
    """(4, z, y, x) float32: the planarity m1 - m2 and the unit normal (z, y, x components of the
    eigenvector of m1) of the structure tensor whose six products (axis 0) are given on a haloed
    block: each product is averaged with a Gaussian of ``rho_vox`` voxels, then the halo (``depth``
    voxels each side per axis) removed."""
    from scipy import ndimage as ndi

    from .hessian import symmetric_eigvals, symmetric_eigvec

    core = tuple(slice(d, n - d) for d, n in zip(depth, block.shape[1:]))
    t = [ndi.gaussian_filter(np.asarray(c, np.float32), rho_vox, mode="reflect")[core] for c in block]
    m1, m2, _ = symmetric_eigvals(t)
    return np.concatenate([(m1 - m2)[None], symmetric_eigvec(t, m1)]).astype(np.float32)


def planarity_and_normal(image: da.Array, voxel_A: float, f: int) -> da.Array:
    """Lazy (4, z, y, x) float32: planarity and unit normal (``planarity_block``) of a full-resolution
    tomogram with voxels of ``voxel_A``, on the grid binned by ``f`` (trimmed to whole f^3 cubes, like ``binned``)."""
    from ..chunking import at_least, axis_depths, map_reflected

    sg = max(GRADIENT_SIGMA_A / voxel_A, 0.5)
    d = int(np.ceil(4 * sg)) + 1
    shape = tuple(s // f * f for s in image.shape)
    x = image[tuple(slice(0, s) for s in shape)].astype(np.float32)
    x = at_least(x.rechunk(tuple(min(s, FILTER_CHUNK * f) for s in shape)), d + f)  # chunks: multiples of f, > halo
    dx = axis_depths(x.chunks, d)
    out_chunks = ((6,),) + tuple(tuple(c // f for c in cs) for cs in x.chunks)
    prods = map_reflected(x, gradient_products_block, dx, sg, dx, f, new_axis=0, chunks=out_chunks, dtype=np.float32)
    rho = INTEGRATION_SIGMA_A / (voxel_A * f)
    r = int(np.ceil(4 * rho)) + 1
    prods = at_least(prods, r + 1) if min(min(c) for c in prods.chunks[1:]) <= r else prods
    dp = axis_depths(prods.chunks[1:], r)
    return map_reflected(prods, planarity_block, dp, rho, dp, chunks=((4,),) + prods.chunks[1:], dtype=np.float32)


def planarity(image: da.Array, voxel_A: float, f: int) -> da.Array:
    """Lazy planarity (float32, z, y, x) alone (``planarity_and_normal``'s first channel)."""
    return planarity_and_normal(image, voxel_A, f)[0]


def facing_sums_block(above: np.ndarray, normal: np.ndarray, labels: np.ndarray, depth: tuple[int, int, int]):
    """Per label of a block: sums of (n . g)^2 and |g|^2, where g is the gradient (Gaussian derivative,
    FACING_SIGMA_VOX) of the haloed 0/1 response ``above`` (``depth`` voxels each side per axis, removed) and n
    the unit ``normal`` (3, z, y, x). Returns (ids, along, total), or None without labels."""
    from scipy import ndimage as ndi

    lab = np.asarray(labels).ravel()
    keep = lab > 0
    if not keep.any():
        return None
    x = np.asarray(above, np.float32)
    core = tuple(slice(d, s - d) for d, s in zip(depth, x.shape))
    g = [ndi.gaussian_filter(x, FACING_SIGMA_VOX, order=o, mode="reflect")[core].ravel()[keep]
         for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    n = np.asarray(normal, np.float32).reshape(3, -1)[:, keep]
    along = (n[0] * g[0] + n[1] * g[1] + n[2] * g[2]).astype(np.float64) ** 2
    total = (g[0].astype(np.float64) ** 2 + g[1] ** 2 + g[2] ** 2)
    ids, inv = np.unique(lab[keep], return_inverse=True)
    return ids.astype(np.int64), np.bincount(inv, along, len(ids)), np.bincount(inv, total, len(ids))


def facing_fraction(above: da.Array, normal: da.Array, labels: da.Array, n_labels: int) -> np.ndarray:
    """(n_labels + 1,) float: per component of ``labels`` (ids 1..n), the share of its surface's
    gradient energy that lies along the structure tensor's normal (``facing_sums_block``; 0 for none),
    from per-block sums reduced per id (as localize/centroids.py does): memory is one block per task."""
    import dask

    from ..chunking import at_least, axis_depths, block_ids, overlap_none, reflect_faces
    from ..progress import compute

    reach = int(np.ceil(4 * FACING_SIGMA_VOX))  # scipy's Gaussian support (truncate 4)
    labels = at_least(labels, reach + 1)
    d = axis_depths(labels.chunks, reach)
    ao = overlap_none(above.astype(np.float32).rechunk(labels.chunks), d)  # the faces mirrored in the task
    nb = normal.rechunk(((3,),) + labels.chunks).to_delayed()
    ab, lb = ao.to_delayed(), labels.to_delayed()
    grown_block = dask.delayed(reflect_faces)
    parts = compute(*[dask.delayed(facing_sums_block)(grown_block(ab[b], d, b, labels.numblocks), nb[(0,) + b], lb[b], d)
                      for b in block_ids(labels.chunks)], label="context: membrane surfaces")
    along, total = np.zeros(n_labels + 1), np.zeros(n_labels + 1)
    for p in parts:
        if p is not None:
            np.add.at(along, p[0], p[1])
            np.add.at(total, p[0], p[2])
    return np.where(total > 0, along / np.where(total > 0, total, 1.0), 0.0)


def bin_factor(voxel_size_A: float) -> int:
    return max(1, int(round(BIN_TARGET_A / voxel_size_A)))


def _upsample(block: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(np.repeat(block, f, 0), f, 1), f, 2)


def binned(image: da.Array, f: int) -> da.Array:
    """The tomogram averaged over f^3 voxel cubes (float32, trailing remainders dropped), in chunks of
    at most BINNED_CHUNK binned voxels; the sample mask on that grid is ``Lamella.mask(..., binning=f)``."""
    small = image.astype(np.float32)
    if f > 1:
        small = da.coarsen(np.mean, small, {0: f, 1: f, 2: f}, trim_excess=True)
    return small.rechunk(tuple(min(s, BINNED_CHUNK) for s in small.shape))


def upsample(mask: da.Array, f: int, shape, chunks) -> da.Array:
    """A binned mask back at full resolution (each voxel repeated f times per axis; a trimmed
    remainder at the far faces takes the nearest value), with the given chunks."""
    full = mask
    if f > 1:
        full = mask.map_blocks(_upsample, f, dtype=mask.dtype, chunks=tuple(tuple(c * f for c in cs) for cs in mask.chunks))
    pad = [(0, s - fs) for s, fs in zip(shape, full.shape)]
    if any(p[1] for p in pad):
        full = da.pad(full, pad, mode="edge")
    return full.rechunk(chunks)


def robust_z_levels(values: np.ndarray) -> tuple[float, float]:
    """Median and robust SD (1.4826 x the median absolute deviation) of ``values``."""
    med = float(np.median(values))
    return med, float(1.4826 * np.median(np.abs(values - med)))


def is_sheet(counts: np.ndarray, extent_vox: np.ndarray, voxel_A: float, min_extent_A: float) -> np.ndarray:
    """Components (voxel counts, longest bounding-box extent in voxels) that are sheets larger than a
    particle of diameter ``min_extent_A``: that long, and with an area (volume / the planarity band's
    thickness, 2 x INTEGRATION_SIGMA_A) of at least a disc of that diameter."""
    area_A2 = counts * voxel_A ** 3 / (2.0 * INTEGRATION_SIGMA_A)
    return (extent_vox * voxel_A >= min_extent_A) & (area_A2 >= np.pi * min_extent_A ** 2 / 4.0)


def membrane_mask(image: da.Array, voxel_A: float, inside: da.Array, f: int, min_extent_A: float,
                  min_diameter_A: float = 60.0, scratch: str | None = None) -> tuple[da.Array, dict]:
    """Lazy boolean mask of membranes on the grid binned by ``f`` (``inside``: the sample on that grid)
    of a full-resolution tomogram ``image`` with voxels of ``voxel_A``; and a report. ``min_extent_A``:
    the largest particle diameter (size prior), ``min_diameter_A`` the smallest. ``scratch``: a folder
    where the planarity is stored once (the caller removes it) instead of recomputed by each pass."""
    from ..chunking import RECHUNK
    from ..progress import compute
    from .centroids import instance_table
    from .components import connected_components_chunked

    vox = voxel_A * f
    pn = planarity_and_normal(image, voxel_A, f)
    inside = inside[tuple(slice(0, s) for s in pn.shape[1:])]
    pn = pn.rechunk(((4,),) + inside.chunks, method=RECHUNK)  # the filters' blocks merged into the grid's
    if scratch is not None:
        from ..chunking import stored

        pn = stored(pn, scratch, label="context: membrane planarity")
    plan, normal = pn[0].rechunk(inside.chunks), pn[1:]
    stride = (slice(None, None, 2),) * 3
    pv, keep = compute(plan[stride], inside[stride], label="context: membrane planarity levels")
    vals = np.asarray(pv)[np.asarray(keep, bool)]
    empty = da.zeros(plan.shape, chunks=plan.chunks, dtype=bool)
    if vals.size == 0:
        return empty, {"membranes": 0, "reason": "no sample voxels"}
    med, sd = robust_z_levels(vals)
    hi, lo = med + SEED_Z * sd, med + GROW_Z * sd
    labels, n = connected_components_chunked((plan > lo) & inside)
    margin_A = max(0.0, MEMBRANE_THICKNESS_A / 2 + min_diameter_A / 2 - INTEGRATION_SIGMA_A)
    report = {"rule": "planarity m1 - m2 of the gradient structure tensor; seeds > median + "
              f"{SEED_Z} robust SD, grown through > median + {GROW_Z} robust SD; a sheet at least d_max long "
              "with the area of a disc of diameter d_max, whose surface faces along its normal (the share of its "
              f"surface's gradient along the normal at least {FACING_MIN})",
              "gradient_sigma_A": GRADIENT_SIGMA_A, "integration_sigma_A": INTEGRATION_SIGMA_A, "voxel_A": vox,
              "median": med, "robust_sd": sd, "seed_level": hi, "grow_level": lo,
              "min_extent_A": float(min_extent_A), "margin_A": margin_A, "candidates": int(n)}
    if n == 0:
        report["membranes"] = 0
        return empty, report
    table = instance_table(labels, n)
    seeded = instance_table(da.where(plan > hi, labels, 0).astype(np.uint32), n)
    extent = (table.bbox_max - table.bbox_min + 1).max(axis=1)
    is_membrane = np.zeros(int(n) + 1, bool)
    is_membrane[table.ids[is_sheet(table.counts, extent, vox, min_extent_A)]] = True
    has_seed = np.zeros(int(n) + 1, bool)
    has_seed[seeded.ids] = True
    is_membrane &= has_seed
    if is_membrane.any():  # the surface test: back-projection streaks run along their own normal
        facing = facing_fraction(plan > lo, normal, labels, int(n))
        report["not_facing"] = int((is_membrane & (facing < FACING_MIN)).sum())
        report["facing_of_sheets"] = [round(float(v), 3) for v in facing[is_membrane]]
        is_membrane &= facing >= FACING_MIN
    report["membranes"] = int(is_membrane.sum())
    mask = labels.map_blocks(lambda b, lut=is_membrane: lut[b], dtype=bool)
    return grown(mask, int(np.ceil(margin_A / vox))), report
