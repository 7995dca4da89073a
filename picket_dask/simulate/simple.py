"""The simple scene: particles, one vesicle and gold in a box of ice, no vacuum, mild noise.

The simulator's first scene, kept for the engine's fidelity tests (clean, high-contrast particles)
and for `scene="simple"`; the default is the realistic scene (`scene.py`, `imaging.py`).

Particles of several shapes, sizes and abundances (compact, multi-lobed, elongated, hollow shell,
ring), optional crowding, a membrane vesicle and gold beads are placed in a slab of ice. A tilt
series about Y from -60 to +60 degrees is projected, each image is CTF-modulated, noised and
phase-flipped, and the volume is reconstructed by weighted (ramp-filtered) back-projection, so
the result has the missing wedge, the CTF's band-pass and correlated noise of a real tomogram.
Densities are written with the usual sign (particles dark). Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation


VOXEL_SIZE_A = 10.0


@dataclass(frozen=True)
class ParticleType:
    """A particle species: shape, size (voxels at 10 A/voxel) and relative abundance."""

    name: str
    shape: str  # compact | lobed | elongated | shell | ring
    radius_vox: float  # bounding radius
    abundance: float


PARTICLE_TYPES = (
    ParticleType("ribosome", "lobed", 11.0, 0.30),
    ParticleType("proteasome", "elongated", 9.0, 0.20),
    ParticleType("apoferritin", "shell", 6.5, 0.20),
    ParticleType("chaperonin", "ring", 7.5, 0.10),
    ParticleType("small_complex", "compact", 3.5, 0.15),
    ParticleType("vlp", "shell", 14.0, 0.05),
)

PRESETS = {
    # shape (z, y, x), particles when sparse, particles when crowded
    "tiny": ((48, 96, 96), 10, 24),
    "small": ((64, 192, 192), 28, 70),
    "medium": ((128, 256, 256), 80, 220),
}


def _shape_mask(ptype: ParticleType, local: np.ndarray) -> np.ndarray:
    """Density (0..1) of a particle at local coordinates ``local`` (..., 3) in voxels, frame of the particle."""
    r = np.linalg.norm(local, axis=-1)
    R = ptype.radius_vox
    if ptype.shape == "compact":
        return (r <= R).astype(np.float32)
    if ptype.shape == "lobed":
        big = np.linalg.norm(local - np.array([0, 0, -0.25 * R]), axis=-1) <= 0.62 * R
        small = np.linalg.norm(local - np.array([0, 0, 0.5 * R]), axis=-1) <= 0.45 * R
        knob = np.linalg.norm(local - np.array([0.45 * R, 0.2 * R, 0.0]), axis=-1) <= 0.3 * R
        return (big | small | knob).astype(np.float32)
    if ptype.shape == "elongated":
        radial = np.linalg.norm(local[..., :2], axis=-1)
        return ((radial <= 0.38 * R) & (np.abs(local[..., 2]) <= R)).astype(np.float32)
    if ptype.shape == "shell":
        return ((r <= R) & (r >= 0.6 * R)).astype(np.float32)
    if ptype.shape == "ring":
        radial = np.linalg.norm(local[..., :2], axis=-1)
        tube = np.hypot(radial - 0.7 * R, local[..., 2])
        return (tube <= 0.35 * R).astype(np.float32)
    raise ValueError(ptype.shape)


def _paste(volume: np.ndarray, centre: np.ndarray, radius: float, rot: Rotation, fn, density: float) -> None:
    """Add ``density * fn(local coords)`` into ``volume`` around ``centre`` (z, y, x voxels), keeping the max."""
    lo = np.maximum(np.floor(centre - radius - 1).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius + 2).astype(int), volume.shape)
    if np.any(hi <= lo):
        return
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1).astype(np.float32)
    local = rot.inv().apply((grid - centre).reshape(-1, 3)).reshape(grid.shape)
    region = volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    np.maximum(region, density * fn(local), out=region)


def _place(rng: np.random.Generator, shape: tuple[int, int, int], radii: np.ndarray, gap: float, tries: int = 200) -> np.ndarray:
    """Random non-overlapping centres (z, y, x) for spheres of the given radii inside ``shape``."""
    centres: list[np.ndarray] = []
    placed_r: list[float] = []
    for r in radii:
        if any(s - r - 1 <= r + 1 for s in shape):  # does not fit
            centres.append(np.full(3, np.nan))
            placed_r.append(r)
            continue
        for _ in range(tries):
            c = np.array([rng.uniform(r + 1, s - r - 1) for s in shape])
            if all(np.linalg.norm(c - o) > r + ro + gap for o, ro in zip(centres, placed_r)):
                centres.append(c)
                placed_r.append(r)
                break
        else:
            centres.append(np.full(3, np.nan))
            placed_r.append(r)
    return np.array(centres)


def phantom(shape: tuple[int, int, int], n_particles: int, seed: int, crowded: bool = False,
            membrane: bool = True, gold: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Ground-truth density (z, y, x), float32, and the particle table (x, y, z voxels, type, radius_A)."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    weights = np.array([t.abundance for t in PARTICLE_TYPES])
    kinds = rng.choice(len(PARTICLE_TYPES), size=n_particles, p=weights / weights.sum())
    kinds = kinds[np.argsort([-PARTICLE_TYPES[k].radius_vox for k in kinds], kind="stable")]  # big ones first
    radii = np.array([PARTICLE_TYPES[k].radius_vox for k in kinds])
    centres = _place(rng, shape, radii, gap=1.0 if crowded else 4.0)
    rows = []
    for k, c in zip(kinds, centres):
        if np.isnan(c[0]):
            continue
        ptype = PARTICLE_TYPES[k]
        rot = Rotation.random(random_state=rng)
        _paste(vol, c, ptype.radius_vox, rot, lambda loc, p=ptype: _shape_mask(p, loc), 1.0)
        rows.append({"x": c[2], "y": c[1], "z": c[0], "type": ptype.name, "radius_A": ptype.radius_vox * VOXEL_SIZE_A})
    if membrane:
        # a vesicle whose bilayer (two leaflets 3 voxels apart) crosses part of the volume
        R = 0.45 * shape[2]
        c = np.array([shape[0] / 2, rng.uniform(0, shape[1]), -0.25 * shape[2]])
        def bilayer(loc):
            d = np.linalg.norm(loc, axis=-1) - R
            return ((np.abs(d - 1.5) <= 0.8) | (np.abs(d + 1.5) <= 0.8)).astype(np.float32)
        _paste(vol, c, R + 3, Rotation.identity(), bilayer, 0.8)
    if gold:
        for _ in range(3):
            c = np.array([rng.uniform(4, s - 4) for s in shape])
            _paste(vol, c, 2.5, Rotation.identity(), lambda loc: (np.linalg.norm(loc, axis=-1) <= 2.5).astype(np.float32), 6.0)
    truth = pd.DataFrame(rows, columns=["x", "y", "z", "type", "radius_A"])
    return vol, truth


def _detector_coords(shape: tuple[int, int, int], theta: float, n_u: int) -> tuple[np.ndarray, np.ndarray]:
    """For each (z, x) voxel: lower detector bin and weight of the upper one, at tilt ``theta`` (radians)."""
    nz, _, nx = shape
    z = np.arange(nz) - (nz - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    u = x[None, :] * np.cos(theta) + z[:, None] * np.sin(theta) + (n_u - 1) / 2
    i0 = np.floor(u).astype(np.int64)
    return i0, (u - i0).astype(np.float32)


def project(vol: np.ndarray, theta: float, n_u: int) -> np.ndarray:
    """Line integrals of ``vol`` (z, y, x) along the beam tilted by ``theta`` about Y: image (y, u)."""
    i0, w = _detector_coords(vol.shape, theta, n_u)
    ny = vol.shape[1]
    vals = np.moveaxis(vol, 1, 0).reshape(ny, -1)  # (y, z*x)
    idx = (np.arange(ny)[:, None] * n_u + i0.ravel()[None, :])
    out = np.bincount(idx.ravel(), weights=(vals * (1 - w.ravel())).ravel(), minlength=ny * n_u)
    out += np.bincount((idx + 1).ravel(), weights=(vals * w.ravel()).ravel(), minlength=ny * n_u)[: ny * n_u]
    return out.reshape(ny, n_u)


def backproject(img: np.ndarray, theta: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Smear a (y, u) image back into a (z, y, x) volume along the beam direction (adjoint of ``project``)."""
    n_u = img.shape[1]
    i0, w = _detector_coords(shape, theta, n_u)
    a = img[:, i0]  # (y, z, x)
    b = img[:, np.minimum(i0 + 1, n_u - 1)]
    return np.moveaxis(a * (1 - w) + b * w, 0, 1)


def ctf(n_y: int, n_u: int, voxel_A: float, defocus_A: float = 30000.0, kv: float = 300.0,
        amplitude_contrast: float = 0.07, bfactor: float = 200.0) -> np.ndarray:
    """2-D contrast transfer function (no spherical aberration) with a B-factor envelope."""
    volts = kv * 1e3
    lam = 12.2643247 / np.sqrt(volts * (1 + 0.978466e-6 * volts))  # electron wavelength, Angstrom
    ky = np.fft.fftfreq(n_y, d=voxel_A)
    ku = np.fft.rfftfreq(n_u, d=voxel_A)
    k2 = ky[:, None] ** 2 + ku[None, :] ** 2
    chi = np.pi * lam * defocus_A * k2
    c = -(np.sqrt(1 - amplitude_contrast**2) * np.sin(chi) + amplitude_contrast * np.cos(chi))
    return (c * np.exp(-bfactor * k2 / 4)).astype(np.float32)


def reconstruct(vol: np.ndarray, rng: np.random.Generator, noise: float, voxel_A: float = VOXEL_SIZE_A,
                tilt_range: float = 60.0, tilt_step: float = 3.0) -> np.ndarray:
    """Tilt series (missing wedge), CTF + noise + phase flip per image, weighted back-projection."""
    nz, ny, nx = vol.shape
    n_u = nx + nz + 4
    angles = np.deg2rad(np.arange(-tilt_range, tilt_range + 1e-6, tilt_step))
    transfer = ctf(ny, n_u, voxel_A)
    ramp = np.abs(np.fft.rfftfreq(n_u))[None, :] * (0.54 + 0.46 * np.cos(np.pi * np.fft.rfftfreq(n_u) / 0.5))
    ramp = ramp.astype(np.float32)
    out = np.zeros(vol.shape, np.float32)
    signal_std = None
    for theta in angles:
        proj = project(vol, theta, n_u)
        img = np.fft.irfft2(np.fft.rfft2(proj) * transfer, s=proj.shape)
        if signal_std is None:
            signal_std = float(img.std()) or 1.0
        img = img + rng.normal(0.0, noise * signal_std, img.shape)
        spec = np.fft.rfft2(img) * np.sign(transfer)  # phase flip, as CTF correction does
        spec *= ramp  # R-weighting along the tilt axis' perpendicular (u), Hamming apodised
        out += backproject(np.fft.irfft2(spec, s=img.shape).astype(np.float32), theta, vol.shape)
    out *= np.pi / len(angles)
    return out


def simulate_volume(shape: tuple[int, int, int], n_particles: int, seed: int = 0, crowded: bool = False,
                    noise: float = 1.0, membrane: bool = True, gold: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """A reconstructed synthetic tomogram (z, y, x) float32 (particles dark, mean 0, std 1) and its truth table."""
    rng = np.random.default_rng(seed)
    density, truth = phantom(shape, n_particles, seed, crowded, membrane, gold)
    rec = reconstruct(density, rng, noise)
    rec = -(rec - rec.mean()) / (rec.std() or 1.0)  # dense matter dark, as in real tomograms
    return rec.astype(np.float32), truth
