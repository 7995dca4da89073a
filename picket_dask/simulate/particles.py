"""Particle species of the realistic scene as pseudo-atomic point clouds, and their rendering.

Each species is a shape indicator in its own frame (nm, centred on the density's centroid),
sampled on a jittered grid of 2/3 voxel: every point carries the excess potential (volts over
vitreous ice) of its grid cell of matter. A particle is rendered by rotating and shifting its
point cloud and splatting the points trilinearly into the volume, so all particles of a species
are placed with one vectorised call instead of one small grid per particle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Mean inner potentials (volts): protein ~7.0-7.2, vitreous ice ~4.5 (TEM-simulator literature,
# e.g. Rullgard et al. 2011, J. Microsc. 243:234); the excess of protein over ice is what shows.
PROTEIN_EXCESS_V = 2.6
POINT_SPACING_VOX = 2 / 3  # grid of the point clouds: 3.4 points per voxel


@dataclass(frozen=True)
class Species:
    """A particle species: shape name, bounding radius (nm), abundance weight, contrast (1 = protein)."""

    name: str
    shape: str  # compact | lobed | barrel | shell | ring | y_shape | rod | dumbbell
    radius_nm: float
    abundance: float
    contrast: float = 1.0  # RNA-rich particles scatter ~1.4-1.5x more than protein


SPECIES = (
    Species("ribosome_like", "lobed", 13.0, 2.0, 1.45),
    Species("proteasome_like", "barrel", 8.5, 1.0),
    Species("capsid_like", "shell", 14.5, 0.25),
    Species("cage_like", "shell", 6.5, 0.8),
    Species("chaperonin_like", "ring", 7.5, 0.8),
    Species("igg_like", "y_shape", 7.5, 1.5),
    Species("filament_like", "rod", 12.0, 0.5),
    Species("dimer_like", "dumbbell", 4.5, 2.0),
    Species("small_globular", "compact", 2.7, 3.0),
)


def _ball(p: np.ndarray, centre, r: float) -> np.ndarray:
    return np.sum((p - np.asarray(centre, float)) ** 2, axis=-1) <= r * r


def inside(shape: str, p: np.ndarray, R: float) -> np.ndarray:
    """Whether points ``p`` (n, 3), nm in the particle frame, lie in a ``shape`` of bounding radius ``R``."""
    r = np.linalg.norm(p, axis=-1)
    radial = np.hypot(p[:, 1], p[:, 2])  # distance to the frame's first axis
    if shape == "compact":  # slightly oblate globule
        return np.sum((p / (R * np.array([0.8, 1.0, 0.9]))) ** 2, axis=-1) <= 1
    if shape == "lobed":  # large and small subunit and a stalk
        return (_ball(p, [-0.25 * R, 0, 0], 0.68 * R) | _ball(p, [0.45 * R, 0.1 * R, 0], 0.5 * R)
                | _ball(p, [0.1 * R, 0.55 * R, 0.3 * R], 0.28 * R))
    if shape == "barrel":  # stacked rings around an axial channel
        return (np.abs(p[:, 0]) <= 0.85 * R) & (radial <= 0.55 * R) & (radial >= 0.15 * R)
    if shape == "shell":  # hollow: wall a fifth of the radius, at least 2 nm
        return (r <= R) & (r >= R - max(2.0, 0.2 * R))
    if shape == "ring":  # double torus (two stacked rings)
        return ((np.hypot(radial - 0.6 * R, p[:, 0] - 0.25 * R) <= 0.3 * R)
                | (np.hypot(radial - 0.6 * R, p[:, 0] + 0.25 * R) <= 0.3 * R))
    if shape == "y_shape":  # three lobes at 120 degrees, hinge in the middle
        a = np.deg2rad([90, 210, 330])
        return (_ball(p, [0, 0, 0], 0.25 * R) | _ball(p, [0, 0.6 * R * np.sin(a[0]), 0.6 * R * np.cos(a[0])], 0.38 * R)
                | _ball(p, [0, 0.6 * R * np.sin(a[1]), 0.6 * R * np.cos(a[1])], 0.38 * R)
                | _ball(p, [0, 0.6 * R * np.sin(a[2]), 0.6 * R * np.cos(a[2])], 0.38 * R))
    if shape == "rod":  # filament segment, 2.5 nm radius, helical bumps
        bumps = 0.4 * np.cos(2 * np.pi * p[:, 0] / 5.0 + np.arctan2(p[:, 1], p[:, 2]))
        return (np.abs(p[:, 0]) <= R - 2.5) & (radial <= 2.5 + bumps)
    if shape == "dumbbell":  # two subunits
        return _ball(p, [0, 0, 0.45 * R], 0.55 * R) | _ball(p, [0, 0, -0.45 * R], 0.55 * R)
    raise ValueError(f"unknown particle shape {shape!r}")


@dataclass(frozen=True)
class Template:
    """A species' point cloud (n, 3) in voxels about its centroid, per-point excess potential (V), true radius (nm)."""

    species: Species
    points: np.ndarray
    weight: float
    radius_nm: float

    @property
    def volume_vox(self) -> float:
        return len(self.points) * POINT_SPACING_VOX**3


def template(species: Species, voxel_A: float, rng: np.random.Generator) -> Template:
    """Sample ``species`` on a jittered grid of POINT_SPACING_VOX voxels; centre it on its centroid."""
    vox_nm = voxel_A / 10.0
    h = POINT_SPACING_VOX * vox_nm
    axis = np.arange(-species.radius_nm, species.radius_nm + h, h)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid + rng.uniform(-h / 2, h / 2, grid.shape)
    pts = grid[inside(species.shape, grid, species.radius_nm)]
    pts -= pts.mean(axis=0)
    radius = float(np.linalg.norm(pts, axis=1).max())
    return Template(species, (pts / vox_nm).astype(np.float32), PROTEIN_EXCESS_V * species.contrast * POINT_SPACING_VOX**3, radius)


def splat(volume: np.ndarray, points_zyx: np.ndarray, weights: np.ndarray | float) -> None:
    """Add ``weights`` at ``points_zyx`` (n, 3; voxels) into ``volume`` by trilinear interpolation, in place.

    Written with np.bincount because scipy/skimage offer interpolation *from* a grid, not the adjoint
    (scattering point masses *onto* a grid), which this needs.
    """
    shape = np.array(volume.shape)
    p = np.asarray(points_zyx, np.float32)
    w = np.broadcast_to(np.asarray(weights, np.float32), p[:, 0].shape)
    keep = np.all((p >= 0) & (p <= shape - 1), axis=1)
    if not keep.all():
        p, w = p[keep], w[keep]
    i0 = np.minimum(p.astype(np.int64), shape - 2)
    f = p - i0
    base = (i0[:, 0] * shape[1] + i0[:, 1]) * shape[2] + i0[:, 2]
    fz, fy, fx = ((1 - f[:, a], f[:, a]) for a in range(3))
    flat = volume.reshape(-1)
    for dz in (0, 1):
        wz = w * fz[dz]
        for dy in (0, 1):
            wzy = wz * fy[dy]
            for dx in (0, 1):
                off = (dz * shape[1] + dy) * shape[2] + dx
                flat += np.bincount(base + off, weights=wzy * fx[dx], minlength=flat.size)


def render(volume: np.ndarray, placed: list[tuple[Template, np.ndarray, np.ndarray]], batch_points: int = 1_000_000) -> None:
    """Splat every (template, centres_zyx (m, 3), rotations (m, 3, 3)) of ``placed`` into ``volume``, in place.

    Points are gathered across species into batches of about ``batch_points`` so each splat pass
    (8 bincounts over the whole volume) serves many particles.
    """
    pts_acc: list[np.ndarray] = []
    w_acc: list[np.ndarray] = []
    n_acc = 0

    def flush() -> None:
        nonlocal pts_acc, w_acc, n_acc
        if n_acc:
            splat(volume, np.concatenate(pts_acc), np.concatenate(w_acc))
        pts_acc, w_acc, n_acc = [], [], 0

    for tmpl, centres, rotations in placed:
        per = max(1, batch_points // max(len(tmpl.points), 1))
        for a in range(0, len(centres), per):
            pts = np.matmul(tmpl.points[None], rotations[a:a + per].transpose(0, 2, 1)) + centres[a:a + per, None, :]
            pts_acc.append(pts.reshape(-1, 3))
            w_acc.append(np.full(len(pts_acc[-1]), tmpl.weight, np.float32))
            n_acc += len(pts_acc[-1])
            if n_acc >= batch_points:
                flush()
    flush()
