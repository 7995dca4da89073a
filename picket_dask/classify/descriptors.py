"""Rotation-invariant descriptors of subvolumes (particles come in random orientations).

Every box is lightly low-passed (Gaussian, sigma 1 voxel), its local background (the median of
the box's outer shell) subtracted and its sign set so that particles are positive ("mass").
Families, each rotation-invariant about the box centre:

- ``radial``: mean mass in 1-voxel spherical shells, r = 0 .. box/2 (the radial density profile);
- ``sh``: spherical-harmonic amplitude (root of the power) per degree l = 1..L on each shell, in
  noise units (how far from round each shell is: rods, rings, lobes; l = 0 is ``radial``);
- ``inertia``: radius of gyration and the two ratios of the principal moments of the mass inside
  the particle sphere (elongated, flat, round), and the mass itself;
- ``spectrum``: log power of the box's 3-D Fourier transform in frequency shells (also
  translation-invariant: insensitive to a pick a few voxels off centre);
- ``contrast``: peak mass, mean mass in the central sphere and in the particle sphere, over the
  box's noise; fraction of mass on the box's faces (sheets, filaments); the instance's size from
  step 2 (``CONTRAST`` names the columns).

Which families the classes are built from (``DEFAULT_FAMILIES``) was chosen by measurement:
``benchmarks/classify.py --study`` clusters the picks of the crowded dev-set tomogram with each
family alone and with combinations and reports the adjusted Rand index of the classes against
the true particle types of the matched picks (numbers and reasons at ``DEFAULT_FAMILIES``).
The families measure different things, so each is scaled to the same total spread before the
joint PCA whitening (``whiten``): a 20-value profile does not outvote a 3-value shape summary.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

FAMILIES = ("radial", "sh", "inertia", "spectrum", "contrast")
# Chosen by measurement (benchmarks/classify.py --study, rows in benchmarks/results/classify.csv):
# ARI between the classes and the true particle types over the matched picks of the crowded
# dev-set tomogram, for three sets of picks (gabor-gmm-ws, gabor-gmm-cc, gabor-kmeans-ws), each
# scored as the mean of the auto-K ARI and the fixed-K (3, 5, 8 x 2 seeds) ARI, then averaged:
#   spectrum + contrast 0.39 (fixed K 0.43), spectrum 0.39 (fixed K 0.38), contrast 0.37,
#   all but radial 0.37, all five 0.31, radial 0.26, inertia 0.19, sh 0.14.
# Why: the picks are several voxels off their particle's centre (median 5 voxels for matched
# gabor-gmm-cc picks; hollow particles are picked on their walls), and the
# centre-dependent families (radial profile, harmonics per shell, moments about the centre)
# then describe where the pick fell more than what the particle is. The power spectrum does not
# depend on the centre, and the contrast family (peak, core and sphere contrast, instance size)
# tells large and dense from small and faint. The other families stay available (``families=``).
DEFAULT_FAMILIES = ("spectrum", "contrast")
L_MAX = 6
N_SPHERE = 256


def fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly uniform unit vectors (z, y, x)."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azim = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azim), np.sin(polar) * np.cos(azim)], axis=1)


def harmonic_bases(points: np.ndarray, l_max: int) -> list[np.ndarray]:
    """Per degree l, an orthonormal basis (n_points x (2l+1)) of the degree-l spherical harmonics
    sampled at ``points``, from the addition theorem: the (2l+1) leading eigenvectors of the
    Legendre kernel P_l(u_i . u_j). Power per degree = squared norm of the projection; no
    version-dependent special functions needed."""
    from numpy.polynomial import legendre

    cos = np.clip(points @ points.T, -1, 1)
    bases = []
    for ell in range(l_max + 1):
        coef = np.zeros(ell + 1)
        coef[ell] = 1
        w, v = np.linalg.eigh(legendre.legval(cos, coef))
        bases.append(v[:, np.argsort(w)[::-1][: 2 * ell + 1]])
    return bases


_SPHERE = fibonacci_sphere(N_SPHERE)
_BASES = harmonic_bases(_SPHERE, L_MAX)


def radius_grid(box: int) -> np.ndarray:
    c = box // 2
    g = np.indices((box,) * 3, dtype=np.float32) - c
    return np.sqrt((g**2).sum(axis=0))


def prepare(boxes: np.ndarray, polarity: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Low-passed, background-subtracted, sign-corrected boxes ("mass": particles positive) and
    each box's noise level (std of its outer shell)."""
    box = boxes.shape[-1]
    r = radius_grid(box)
    shell = r >= box / 2 - 1.5
    out = np.empty_like(boxes, dtype=np.float32)
    noise = np.empty(len(boxes), np.float32)
    for i, b in enumerate(boxes):
        s = ndi.gaussian_filter(b.astype(np.float32), 1.0, mode="nearest")
        bg = np.median(s[shell])
        out[i] = polarity * (s - bg)
        noise[i] = b[shell].std()
    return out, noise


def polarity_of(boxes: np.ndarray) -> float:
    """+1 if the picked objects are brighter than their surroundings, -1 if darker (cryo-ET's
    usual contrast), from the centre-minus-background of the boxes (median over picks)."""
    box = boxes.shape[-1]
    r = radius_grid(box)
    centre, shell = r <= max(2.0, box / 8), r >= box / 2 - 1.5
    d = [b[centre].mean() - np.median(b[shell]) for b in boxes]
    return 1.0 if np.median(d) > 0 else -1.0


def principal_frame(mass: np.ndarray, radius: float, max_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre of mass (z, y, x) in box voxels, rotation R whose rows are the principal axes)."""
    box = mass.shape[-1]
    c = box // 2
    g = (np.indices(mass.shape, dtype=np.float64) - c).reshape(3, -1)
    inside = (g**2).sum(axis=0) <= radius**2
    g = g[:, inside]
    w = np.clip(mass.reshape(-1)[inside], 0, None)
    tot = w.sum()
    if tot <= 0:
        return np.full(3, float(c)), np.eye(3)
    mu = g @ w / tot
    norm = np.linalg.norm(mu)
    if norm > max_shift:
        mu *= max_shift / norm
    d = g - mu[:, None]
    cov = (d * w) @ d.T / tot
    ev, vec = np.linalg.eigh(cov)
    rot = vec[:, ::-1].T.copy()  # rows: axes, largest eigenvalue first
    proj = rot @ d
    for a in range(2):
        if (w * proj[a] ** 3).sum() < 0:
            rot[a] *= -1
    if np.linalg.det(rot) < 0:
        rot[2] *= -1
    return mu + c, rot


def radial_profile(mass: np.ndarray) -> np.ndarray:
    box = mass.shape[-1]
    rb = np.rint(radius_grid(box)).astype(int).ravel()
    n_r = box // 2 + 1
    keep = rb < n_r
    counts = np.bincount(rb[keep], minlength=n_r)
    flat = mass.reshape(len(mass), -1)[:, keep]
    sums = np.stack([np.bincount(rb[keep], weights=f, minlength=n_r) for f in flat])
    return sums / np.maximum(counts, 1)


def sh_power(mass: np.ndarray, shells: np.ndarray) -> np.ndarray:
    """(n, n_shells, L) amplitude (root of the power) of degrees 1..L on each shell."""
    c = mass.shape[-1] // 2
    n = len(mass)
    pts = np.concatenate([c + r * _SPHERE for r in shells])  # (n_shells * N, 3)
    vals = np.stack([ndi.map_coordinates(m, pts.T, order=1, mode="nearest") for m in mass])
    vals = vals.reshape(n, len(shells), N_SPHERE)
    power = np.stack([((vals @ b) ** 2).sum(axis=-1) for b in _BASES[1:]], axis=-1)  # (n, shells, L)
    return np.sqrt(power / N_SPHERE)


def inertia(mass: np.ndarray, radius: float) -> np.ndarray:
    """(n, 4): radius of gyration, lambda_mid/lambda_max, lambda_min/lambda_max, mass (positive
    mass inside the sphere of ``radius`` about the centre)."""
    box = mass.shape[-1]
    g = (np.indices((box,) * 3, dtype=np.float32) - box // 2).reshape(3, -1)
    inside = (g**2).sum(axis=0) <= radius**2
    g = g[:, inside]
    out = np.zeros((len(mass), 4))
    for i, m in enumerate(mass):
        w = np.clip(m.reshape(-1)[inside], 0, None)
        tot = w.sum()
        if tot <= 0:
            continue
        mu = g @ w / tot
        d = g - mu[:, None]
        cov = (d * w) @ d.T / tot
        ev = np.clip(np.linalg.eigvalsh(cov), 0, None)[::-1]
        out[i] = [np.sqrt(ev.sum()), ev[1] / (ev[0] + 1e-12), ev[2] / (ev[0] + 1e-12), tot]
    return out


def power_spectrum(mass: np.ndarray, n_shells: int) -> np.ndarray:
    box = mass.shape[-1]
    win = np.hanning(box).astype(np.float32)
    w3 = win[:, None, None] * win[None, :, None] * win[None, None, :]
    f = np.fft.fftfreq(box)
    kr = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2).ravel()
    edges = np.linspace(0, 0.5, n_shells + 1)
    idx = np.digitize(kr, edges) - 1
    keep = (idx >= 0) & (idx < n_shells)
    counts = np.bincount(idx[keep], minlength=n_shells)
    out = np.empty((len(mass), n_shells))
    for i, m in enumerate(mass):
        p = (np.abs(np.fft.fftn(m * w3)) ** 2).ravel()
        out[i] = np.log(np.bincount(idx[keep], weights=p[keep], minlength=n_shells) / np.maximum(counts, 1) + 1e-9)
    return out


CONTRAST = ("peak", "central", "sphere", "faces", "log_size")  # columns of the contrast family


def contrast(mass: np.ndarray, noise: np.ndarray, radius: float) -> np.ndarray:
    """(n, 4) in noise units: peak mass in the particle sphere, mean mass in the central sphere
    (radius/2) and in the particle sphere; and the fraction of positive mass on the box faces
    relative to a uniform spread (sheets, filaments)."""
    box = mass.shape[-1]
    r = radius_grid(box)
    centre = r <= max(1.5, radius / 2)
    inner = r <= radius
    faces = np.zeros((box,) * 3, bool)
    faces[[0, -1], :, :] = faces[:, [0, -1], :] = faces[:, :, [0, -1]] = True
    faces = ndi.binary_dilation(faces, iterations=1)
    out = np.zeros((len(mass), 4))
    for i, m in enumerate(mass):
        pos = np.clip(m, 0, None)
        nz = max(float(noise[i]), 1e-6)
        out[i, 0] = np.percentile(m[inner], 99) / nz
        out[i, 1] = m[centre].mean() / nz
        out[i, 2] = m[inner].mean() / nz
        out[i, 3] = pos[faces].sum() / (pos.sum() + 1e-12) / (faces.sum() / faces.size)
    return out


def column(desc: dict, name: str) -> np.ndarray:
    """One named column of the contrast family (see CONTRAST)."""
    return np.asarray(desc["contrast"])[:, CONTRAST.index(name)]


def describe(boxes: np.ndarray, polarity: float, sizes_vox: np.ndarray | None = None,
             families=FAMILIES) -> dict[str, np.ndarray]:
    """Descriptors of a batch of boxes (n, b, b, b): {family: (n, d) float64} for ``families``
    (``contrast`` always: the junk flags use it), plus each box's principal frame (``frame``:
    centre (3) and rotation (9), for the class averages)."""
    n, box = len(boxes), boxes.shape[-1]
    mass, noise = prepare(boxes, polarity)
    nz = np.maximum(noise, 1e-6)
    radius = box / 4  # the box is twice the particle diameter (extract.default_box)
    size = np.log1p(np.asarray(sizes_vox, float)).reshape(-1, 1) if sizes_vox is not None else np.zeros((n, 1))
    out = {"contrast": np.concatenate([contrast(mass, noise, radius), size], axis=1)}
    if "radial" in families:
        out["radial"] = radial_profile(mass) / nz[:, None]
    if "sh" in families:
        shells = np.arange(1, box // 2 - 1, max(1, box // 16), dtype=float)
        out["sh"] = (sh_power(mass, shells) / nz[:, None, None]).reshape(n, -1)
    if "inertia" in families:
        out["inertia"] = inertia(mass, radius)
    if "spectrum" in families:
        out["spectrum"] = power_spectrum(mass, max(4, box // 4))
    frames = [principal_frame(m, radius, box / 8) for m in mass]
    out["frame"] = np.array([np.concatenate([c, r.ravel()]) for c, r in frames])
    return out


def whiten(desc: dict[str, np.ndarray], families=DEFAULT_FAMILIES, variance: float = 0.9, seed: int = 0) -> np.ndarray:
    """Joint matrix of the chosen families, whitened.

    Each family is centred on its median and divided by its total robust spread (the root of the
    sum of its columns' squared IQR / 1.349), so that every family weighs the same whatever its
    dimension, while inside a family the columns keep their relative spread: columns that vary
    only by noise (outer shells, high harmonics) stay small instead of being blown up to unit
    variance. Outliers are clipped at 10 spreads per column. Then PCA keeps the components that
    explain ``variance`` of the total and whitens them.
    """
    from sklearn.decomposition import PCA

    cols = []
    for f in families:
        x = np.asarray(desc[f], float)
        x = x.reshape(len(x), -1)
        med = np.median(x, axis=0)
        scale = (np.percentile(x, 75, axis=0) - np.percentile(x, 25, axis=0)) / 1.349
        scale = np.where(scale > 1e-12, scale, x.std(axis=0))
        z = np.clip((x - med) / np.maximum(scale, 1e-12), -10, 10) * scale
        total = np.sqrt((scale**2).sum())
        cols.append(z / total if total > 1e-12 else z)
    x = np.concatenate(cols, axis=1)
    n_comp = min(x.shape[0], x.shape[1])
    if n_comp < 2:
        return x
    pca = PCA(n_components=n_comp, random_state=seed).fit(x)
    k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
    k = max(1, min(k, n_comp))
    return pca.transform(x)[:, :k] / np.sqrt(np.maximum(pca.explained_variance_[:k], 1e-12))
