"""Edge-preserving denoising before the blur (``--denoise diffusion``): chunked, with a halo.

The PickET paper denoised its tomograms with TomoEED (edge-enhancing diffusion) before picking.
This is the same family: regularized Perona-Malik diffusion (Catte et al. 1992) with Tukey's
biweight as the edge-stopping function and its scale taken from the data (Black et al. 1998,
"Robust anisotropic diffusion"):

- edge map: the tomogram blurred with the pipeline's own sigma (``sigma_vox``), so that the
  edges are those the later stages can see, not the voxel noise (at SNR 0.05-0.1 the raw
  gradient is all noise);
- conductance across each voxel face: g(d) = (1 - (d/s)^2)^2 for |d| < s, else 0, with d the
  edge map's difference across the face and s = sqrt(5) * 1.4826 * MAD of those differences over
  the whole volume (Black et al.: differences beyond s are outliers, i.e. edges, and stop diffusion);
- explicit steps dt = 1/8 (stable and monotone for 6 neighbours: dt < 1/6), as many as reach the
  diffusion time sigma_vox^2 / 2, i.e. in flat regions the same smoothing as the blur that follows
  (2 vox -> 16 steps); across edges almost none.

Nothing is fitted to a data set: the scale comes from the tomogram, the time from ``sigma_vox``.
The conductances are computed once from the edge map (not at every step), so a voxel's result
depends only on voxels within ``steps + 1 + blur radius`` of it: that is the halo, and chunked
results equal the whole-volume result to float rounding.

Why hand-written: skimage's denoise_nl_means (3-D, fast_mode, default 13^3 search) took 320 s on a
128x256x256 tomogram on one core (~160 s on 2, longer than the whole run); with a 5^3 search 25 s, but
then it is little more than a box filter, and it is numpy-only. denoise_tv_chambolle stops on a
global energy criterion (not chunkable) and its 200 steps would need a ~400-voxel halo.
PyWavelets (skimage's estimate_sigma, wavelet denoising) is not a dependency. The kernel below
uses only array arithmetic and a Gaussian filter, which numpy/scipy and cupy/cupyx share.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from ..backend import get_xp, to_host
from ..errors import PicketError

METHODS = ("none", "diffusion")
DT = 0.125  # explicit step: below the 1/6 stability limit of the 6-neighbour scheme with g <= 1
TRUNCATE = 4.0  # the edge map's Gaussian reaches 4 sigma (as the blur's)
TUKEY = math.sqrt(5.0)  # Black et al. 1998: Tukey's scale = sqrt(5) x the robust SD of the differences
MAD_TO_SD = 1.4826
SAMPLE_VALUES = 2_000_000  # differences per axis used for the scale (a fixed stride, not random)


def check_method(method: str) -> str:
    """``method`` if it is known; else one clear PicketError."""
    if method not in METHODS:
        raise PicketError(f"--denoise {method}", "is not a denoising method", f"use one of {', '.join(METHODS)}")
    return method


def steps_for(sigma_vox: float) -> int:
    """Explicit steps of size DT that reach the diffusion time sigma_vox^2 / 2 (a Gaussian of sigma_vox
    in flat regions)."""
    return max(1, math.ceil(sigma_vox * sigma_vox / 2.0 / DT))


def halo_for(sigma_vox: float) -> int:
    """Voxels per chunk face the diffusion needs: each step reaches one voxel further, the conductance
    one more (a face between two voxels), the edge map's Gaussian its truncation radius."""
    return steps_for(sigma_vox) + 1 + int(TRUNCATE * sigma_vox + 0.5)


def _gaussian(xp):
    if xp is np:
        from scipy.ndimage import gaussian_filter
    else:  # cupy
        from cupyx.scipy.ndimage import gaussian_filter
    return gaussian_filter


def edge_map(block, sigma_vox: float):
    """The block blurred with ``sigma_vox`` (reflect at the block's faces), float32."""
    xp = get_xp(block)
    return _gaussian(xp)(block.astype(xp.float32), sigma=sigma_vox, mode="reflect", truncate=TRUNCATE)


def tukey(d, scale: float):
    """Tukey's biweight conductance (1 - (d/scale)^2)^2 inside |d| < scale, 0 beyond; in [0, 1]."""
    xp = get_xp(d)
    r = (d / xp.float32(scale)) ** 2
    return xp.where(r < 1, (1 - r) ** 2, xp.float32(0)).astype(xp.float32)


def diffuse(block, sigma_vox: float, scale: float, steps: int | None = None):
    """Edge-preserving diffusion of one (z, y, x) block: ``steps`` explicit steps of DT with the
    conductances fixed from the edge map; no flux through the block's faces (the volume's faces).

    ``scale``: Tukey's scale for the edge map's differences (``edge_scale`` over the whole volume).
    numpy or cupy in, the same out, float32.
    """
    xp = get_xp(block)
    u = block.astype(xp.float32, copy=True)
    steps = steps_for(sigma_vox) if steps is None else steps
    e = edge_map(u, sigma_vox)
    dt = xp.float32(DT)
    # g[a]: conductance of the faces between voxel i and i+1 along axis a (one shorter along a)
    g = [tukey(xp.diff(e, axis=a), scale) for a in range(3)]
    del e
    for _ in range(steps):
        du = xp.zeros_like(u)
        for a in range(3):
            flux = g[a] * xp.diff(u, axis=a)  # flux into voxel i from i+1 (positive where u[i+1] > u[i])
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[a] = slice(None, -1)
            hi[a] = slice(1, None)
            du[tuple(lo)] += flux
            du[tuple(hi)] -= flux
        u += dt * du
    return u


def edge_scale(data: da.Array, sigma_vox: float) -> float:
    """Tukey's scale s = sqrt(5) x 1.4826 x MAD of the edge map's neighbour differences, over the whole
    volume (every k-th voxel per axis, at most SAMPLE_VALUES per axis; the same for any chunking)."""
    from dask_image.ndfilters import gaussian_filter

    from ..progress import compute

    e = gaussian_filter(data.astype(np.float32), sigma=sigma_vox, mode="reflect", truncate=TRUNCATE)
    k = max(1, math.ceil((math.prod(data.shape) / SAMPLE_VALUES) ** (1 / 3)))
    diffs = []
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a] = slice(None, -1)
        hi[a] = slice(1, None)
        d = e[tuple(hi)] - e[tuple(lo)]
        diffs.append(d[::k, ::k, ::k].ravel())
    (d,) = compute(da.concatenate(diffs), label="denoise: noise scale of the edge map")
    d = to_host(d).astype(np.float64)
    mad = float(np.median(np.abs(d - np.median(d))))
    return TUKEY * MAD_TO_SD * mad


def denoise(data: da.Array, method: str = "diffusion", sigma_vox: float = 2.0, scale: float | None = None,
            source: object = "tomogram") -> da.Array:
    """Lazy chunked denoising of a (z, y, x) dask array, float32; ``method`` 'none' returns it as is.

    The halo (``halo_for``) comes from dask's map_overlap; the volume's own faces get no padding
    (``boundary='none'``), so the kernel's reflecting edge map and no-flux faces apply there exactly
    as on the whole volume: chunked == unchunked. ``scale`` (Tukey's) is estimated from the data
    when not given (one pass).
    """
    check_method(method)
    data = data.astype(np.float32)
    if method == "none":
        return data
    if scale is None:
        scale = edge_scale(data, sigma_vox)
    if not (np.isfinite(scale) and scale > 0):
        raise PicketError(source, f"has no measurable noise for denoising (edge-map scale {scale})",
                          "run without --denoise (a constant or NaN-filled tomogram cannot be denoised)")
    depth = halo_for(sigma_vox)
    # dask's overlap takes the halo from the neighbouring chunk only: chunks must be thicker than it
    from ..chunking import at_least

    data = at_least(data, depth + 1)
    # an axis held in one chunk (shorter than the halo: at_least merged it) needs no halo
    depths = {a: depth if len(c) > 1 else 0 for a, c in enumerate(data.chunks)}
    return data.map_overlap(diffuse, depth=depths, boundary="none", dtype=np.float32, sigma_vox=sigma_vox,
                            scale=float(scale), meta=data._meta)
