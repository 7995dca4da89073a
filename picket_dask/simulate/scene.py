"""The realistic scene: an ice slab in vacuum with particles, membranes, gold, contamination, crowders.

Everything is an electrostatic potential in volts (z, y, x), vacuum = 0:

- slab: vitreous ice (mean inner potential ~4.5 V) between a bottom and a top plane, each slightly
  tilted (a lamella is rarely flat in the reconstruction box) and not quite parallel (wedge);
  the box above and below is vacuum;
- particles: pseudo-atomic point clouds of several species (particles.py), 2.7-14.5 nm radius,
  randomly oriented, not overlapping each other, the membranes or the slab surfaces;
- membranes: lipid bilayers as spheres (vesicles inside the ice, sheets as very large spheres cut
  by the box), cut by the ice surfaces; head groups denser than water, the acyl core lighter
  (electron-density profiles of bilayers: heads ~+35 %, core ~-12 % of water);
- gold fiducials: 10 nm balls (mean inner potential ~30 V) in the ice just under its surfaces;
- crystalline-ice contamination: irregular blobs on the ice surfaces, ice potential modulated per
  grain (Bragg-diffracting grains look darker);
- crowders: many small unannotated proteins (1.2-2.0 nm radius) filling free ice, below the size
  range of the truth.

Coordinates in voxels (z, y, x), sizes in nm (as the dev set's CSVs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .particles import PROTEIN_EXCESS_V, SPECIES, Template, render, splat, template

ICE_V = 4.5  # vitreous ice
GOLD_V = 30.0  # gold's mean inner potential is reported at ~22-33 V
GOLD_RADIUS_NM = 5.0  # 10 nm fiducials
HEAD_EXCESS_V, CORE_EXCESS_V = 0.35 * ICE_V, -0.12 * ICE_V
HEAD_OFFSET_NM, HEAD_SIGMA_NM, CORE_SIGMA_NM = 1.9, 0.45, 0.8
MEMBRANE_HALF_NM = 3.0  # reach of the bilayer profile, for exclusion


@dataclass(frozen=True)
class SceneParams:
    """What to put in the box; fractions are of the ice volume, counts per 256 x 256 voxel field."""

    occupied_fraction: float = 0.03  # particles (dev-like: 2-4 % sparse, 13-18 % crowded)
    crowder_fraction: float = 0.01  # small unannotated proteins
    slab_fraction: tuple[float, float] = (0.62, 0.78)  # ice thickness / box height
    max_tilt_deg: float = 2.0  # tilt of the slab in the box
    max_wedge_deg: float = 0.7  # top vs bottom surface
    vesicles: tuple[int, int] = (1, 3)
    sheet_probability: float = 0.6
    gold_per_field: float = 2.0
    contamination_per_field: float = 0.6
    gap_nm: float = 2.0  # minimum surface gap between particles


SPARSE = SceneParams()
CROWDED = SceneParams(occupied_fraction=0.15, crowder_fraction=0.025, gap_nm=0.5)


@dataclass
class Scene:
    """Potential (z, y, x, volts), slab surfaces (y, x; voxels), truth and context tables, facts for the record."""

    potential: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    truth: pd.DataFrame
    context: pd.DataFrame
    info: dict = field(default_factory=dict)


def slab_surfaces(shape, rng: np.random.Generator, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """Bottom and top z (voxels) of the ice per (y, x): two tilted planes, inside the box."""
    nz, ny, nx = shape
    t = rng.uniform(*p.slab_fraction) * nz
    yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    sy, sx = np.tan(np.deg2rad(rng.uniform(-1, 1, 2) * p.max_tilt_deg))
    wy, wx = np.tan(np.deg2rad(rng.uniform(-1, 1, 2) * p.max_wedge_deg))
    zc = (nz - 1) / 2 + rng.uniform(-0.05, 0.05) * nz
    tilt = sy * yy + sx * xx
    bottom, top = zc - t / 2 + tilt, zc + t / 2 + tilt + wy * yy + wx * xx
    margin = 2.0
    span = max(top.max() - bottom.min(), 1e-6)
    if span > nz - 2 * margin:  # flatten until it fits
        k = (nz - 2 * margin - t) / max(span - t, 1e-6)
        bottom, top = zc - t / 2 + k * (bottom - zc + t / 2), zc + t / 2 + k * (top - zc - t / 2)
    shift = max(0.0, margin - bottom.min()) - max(0.0, top.max() - (nz - 1 - margin))
    return (bottom + shift).astype(np.float32), (top + shift).astype(np.float32)


def ice_fraction(shape, bottom: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Fraction (0..1) of each voxel inside the slab (partial voxels at the surfaces)."""
    z = np.arange(shape[0], dtype=np.float32)[:, None, None]
    return (np.clip(top[None] - z + 0.5, 0, 1) * np.clip(z - bottom[None] + 0.5, 0, 1)).astype(np.float32)


def _bilayer(d_nm: np.ndarray) -> np.ndarray:
    """Excess potential (V) of a bilayer at signed distance ``d_nm`` from its mid-plane."""
    g = lambda x, s: np.exp(-0.5 * (x / s) ** 2)  # noqa: E731
    return (HEAD_EXCESS_V * (g(d_nm - HEAD_OFFSET_NM, HEAD_SIGMA_NM) + g(d_nm + HEAD_OFFSET_NM, HEAD_SIGMA_NM))
            + CORE_EXCESS_V * g(d_nm, CORE_SIGMA_NM)).astype(np.float32)


def _membranes(shape, rng, p: SceneParams, bottom, top, vox_nm: float, field: float) -> list[dict]:
    """Vesicles inside the ice and at most one sheet: centre (z, y, x voxels), radius (voxels)."""
    nz, ny, nx = shape
    out: list[dict] = []
    thick = float(np.mean(top - bottom))
    n_ves = rng.integers(p.vesicles[0], p.vesicles[1] + 1) if field >= 0.3 else 1
    for _ in range(int(n_ves)):
        for _try in range(30):
            r = rng.uniform(15.0 / vox_nm, max(16.0 / vox_nm, min(45.0 / vox_nm, 0.55 * thick, 0.3 * min(ny, nx))))
            y, x = rng.uniform(0, ny), rng.uniform(0, nx)
            iy, ix = min(int(y), ny - 1), min(int(x), nx - 1)
            z = rng.uniform(bottom[iy, ix] + 0.3 * r, top[iy, ix] - 0.3 * r) if top[iy, ix] - bottom[iy, ix] > 0.6 * r else (bottom[iy, ix] + top[iy, ix]) / 2
            c = np.array([z, y, x])
            if all(np.linalg.norm(c - m["centre"]) > r + m["radius"] + 4 / vox_nm for m in out):
                out.append({"object": "vesicle", "centre": c, "radius": r})
                break
    if rng.uniform() < p.sheet_probability:
        r = rng.uniform(300.0, 1000.0) / vox_nm
        through = np.array([rng.uniform(0.3, 0.7) * nz, rng.uniform(0, ny), rng.uniform(0, nx)])
        n = rng.normal(size=3) * [0.3, 1, 1]
        n /= np.linalg.norm(n)
        c = through - r * n
        if all(abs(np.linalg.norm(m["centre"] - c) - r) > m["radius"] + 4 / vox_nm for m in out):
            out.append({"object": "sheet", "centre": c, "radius": r})
    return out


def _surface_objects(shape, rng, bottom, top, n: int, radius_range, outside: tuple[float, float]) -> list[tuple[np.ndarray, float, int]]:
    """Centres at a random ice surface: (centre zyx, radius voxels, +1 top / -1 bottom), ``outside`` the ice by a
    uniform draw from that range of radii (negative: embedded)."""
    _, ny, nx = shape
    out = []
    for _ in range(n):
        r = rng.uniform(*radius_range)
        y, x = rng.uniform(r, ny - r), rng.uniform(r, nx - r)
        side = 1 if rng.uniform() < 0.5 else -1
        surf = (top if side > 0 else bottom)[min(int(y), ny - 1), min(int(x), nx - 1)]
        out.append((np.array([surf + side * r * rng.uniform(*outside), y, x]), r, side))
    return out


def _box(shape, centre, reach: float) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach + 1).astype(int), shape)
    sl = tuple(slice(a, max(a, b)) for a, b in zip(lo, hi))
    grids = [np.arange(s.start, s.stop, dtype=np.float32)[tuple(slice(None) if i == k else None for i in range(3))] - c
             for k, (s, c) in enumerate(zip(sl, centre))]
    return sl, grids


def _place_particles(rng, shape, templates: list[Template], kinds: np.ndarray, bottom, top, membranes, obstacles,
                     gap: float, vox_nm: float, batch: int = 48, tries: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping centres (z, y, x) inside the ice for particles ``kinds`` (largest first); NaN when not placed."""
    _, ny, nx = shape
    centres = np.full((len(kinds), 3), np.nan)
    radii = np.array([templates[k].radius_nm / vox_nm for k in kinds])
    slope = float(max(np.abs(np.gradient(top)).max(initial=0), np.abs(np.gradient(bottom)).max(initial=0)))
    mem_c = np.array([m["centre"] for m in membranes]).reshape(-1, 3)
    mem_r = np.array([m["radius"] for m in membranes])
    obs_c = np.array([o[0] for o in obstacles]).reshape(-1, 3)
    obs_r = np.array([o[1] for o in obstacles])
    placed_c = np.empty((0, 3))
    placed_r = np.empty(0)
    for i, r in enumerate(radii):
        if min(ny, nx) < 2 * r + 2:
            continue
        for _ in range(tries):
            y = rng.uniform(r + 1, ny - r - 1, batch)
            x = rng.uniform(r + 1, nx - r - 1, batch)
            iy, ix = y.astype(int), x.astype(int)
            lo = bottom[iy, ix] + r * (1 + slope) + 1
            hi = top[iy, ix] - r * (1 + slope) - 1
            ok = hi > lo
            z = lo + rng.uniform(0, 1, batch) * np.maximum(hi - lo, 0)
            cand = np.stack([z, y, x], axis=1)
            if len(placed_c):
                d2 = np.sum((cand[:, None] - placed_c[None]) ** 2, axis=2)
                ok &= np.all(d2 > (placed_r[None] + r + gap / vox_nm) ** 2, axis=1)
            if len(mem_c):
                d = np.abs(np.linalg.norm(cand[:, None] - mem_c[None], axis=2) - mem_r[None])
                ok &= np.all(d > r + MEMBRANE_HALF_NM / vox_nm, axis=1)
            if len(obs_c):
                d = np.linalg.norm(cand[:, None] - obs_c[None], axis=2)
                ok &= np.all(d > obs_r[None] + r + gap / vox_nm, axis=1)
            if ok.any():
                c = cand[np.argmax(ok)]
                centres[i] = c
                placed_c = np.vstack([placed_c, c])
                placed_r = np.append(placed_r, r)
                break
    return centres, radii


def _crowders(rng, shape, taken: np.ndarray, ice: np.ndarray, n: int, vox_nm: float) -> np.ndarray:
    """Potential of ``n`` small proteins (1.2-2.0 nm radius) at random free places in the ice (Gaussian blobs)."""
    out = np.zeros(shape, np.float32)
    free = (ice > 0.99) & ~taken
    idx = np.flatnonzero(free)
    if n <= 0 or idx.size == 0:
        return out
    pick = rng.choice(idx, size=min(n, idx.size), replace=False)
    pos = np.stack(np.unravel_index(pick, shape), axis=1) + rng.uniform(-0.5, 0.5, (len(pick), 3))
    radius = rng.uniform(1.2, 2.0, len(pick))
    for lo, hi in ((1.2, 1.6), (1.6, 2.01)):  # two size classes, each one Gaussian filter
        sel = (radius >= lo) & (radius < hi)
        acc = np.zeros(shape, np.float32)
        splat(acc, pos[sel], PROTEIN_EXCESS_V * (4 / 3 * np.pi * (radius[sel] / vox_nm) ** 3))
        out += ndi.gaussian_filter(acc, 0.45 * (lo + hi) / 2 / vox_nm, mode="constant")
    return out


def build_scene(shape: tuple[int, int, int], rng: np.random.Generator, p: SceneParams = SPARSE,
                voxel_A: float = 10.0, n_particles: int | None = None) -> Scene:
    """Potential (z, y, x; volts) of a realistic scene, its truth (particles) and context (membranes, gold, ice)."""
    shape = tuple(int(s) for s in shape)
    vox_nm = voxel_A / 10.0
    field = shape[1] * shape[2] / 256.0**2
    bottom, top = slab_surfaces(shape, rng, p)
    ice = ice_fraction(shape, bottom, top)
    pot = ICE_V * ice
    context: list[dict] = []

    # membranes, cut by the ice surfaces
    membranes = _membranes(shape, rng, p, bottom, top, vox_nm, field)
    for m in membranes:
        reach = m["radius"] + 6 / vox_nm
        if m["object"] == "sheet":
            sl = tuple(slice(0, s) for s in shape)
            grids = [np.arange(s, dtype=np.float32)[tuple(slice(None) if i == k else None for i in range(3))] - c
                     for k, (s, c) in enumerate(zip(shape, m["centre"]))]
        else:
            sl, grids = _box(shape, m["centre"], reach)
        d_nm = (np.sqrt(grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2) - m["radius"]) * vox_nm
        near = np.nonzero(np.abs(d_nm) < HEAD_OFFSET_NM + 4 * HEAD_SIGMA_NM)
        region, ice_region = pot[sl], ice[sl]
        region[near] += _bilayer(d_nm[near]) * ice_region[near]
        area = float(np.count_nonzero((np.abs(d_nm[near]) < 0.5 * vox_nm) & (ice_region[near] > 0.5))) * vox_nm**2
        context.append({"object": m["object"], "centre": m["centre"], "radius": m["radius"],
                        "note": f"bilayer sphere, in-slab area {area:.0f} nm^2"})

    # gold fiducials and crystalline-ice contamination on the ice surfaces
    n_gold = max(1, int(rng.poisson(p.gold_per_field * field)))
    gold = _surface_objects(shape, rng, bottom, top, n_gold, (GOLD_RADIUS_NM / vox_nm,) * 2, outside=(-1.3, -0.3))
    for c, r, _ in gold:
        sl, g = _box(shape, c, r + 2)
        ball = np.clip(r - np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) + 0.5, 0, 1)
        pot[sl] = pot[sl] * (1 - ball) + GOLD_V * ball
        context.append({"object": "gold", "centre": c, "radius": r, "note": f"{2 * GOLD_RADIUS_NM:.0f} nm gold fiducial"})
    n_cont = int(rng.poisson(p.contamination_per_field * field))
    blobs = _surface_objects(shape, rng, bottom, top, n_cont, (10 / vox_nm, min(35 / vox_nm, 0.25 * min(shape[1:]))), outside=(0.5, 0.9))
    for c, r, side in blobs:
        sl, g = _box(shape, c, r * 1.3)
        lobes = [(rng.normal(0, 0.35 * r, 3), rng.uniform(0.5, 0.8) * r) for _ in range(4)]
        blob = np.zeros(tuple(s.stop - s.start for s in sl), bool)
        for off, rl in [(np.zeros(3), 0.75 * r)] + lobes:
            blob |= (g[0] - off[0]) ** 2 + (g[1] - off[1]) ** 2 + (g[2] - off[2]) ** 2 <= rl * rl
        blob &= ice[sl] < 0.5  # sits on the surface, outside the slab
        if blob.any():
            pts = np.argwhere(blob)
            seeds = pts[rng.choice(len(pts), size=min(len(pts), 12), replace=False)]
            grain = rng.uniform(1.0, 2.5, len(seeds))[cKDTree(seeds).query(pts)[1]]
            region = pot[sl]
            region[blob] = ICE_V * grain
        context.append({"object": "ice_contamination", "centre": c, "radius": r,
                        "note": "crystalline ice blob on slab surface"})

    # particles
    templates = [template(s, voxel_A, rng) for s in SPECIES]
    w = np.array([s.abundance for s in SPECIES])
    w = w / w.sum()
    ice_vol = float(ice.sum())
    if n_particles is None:
        mean_vol = float(np.sum(w * [t.volume_vox for t in templates]))
        n_particles = int(round(p.occupied_fraction * ice_vol / mean_vol))
    kinds = rng.choice(len(SPECIES), size=n_particles, p=w)
    kinds = kinds[np.argsort([-templates[k].radius_nm for k in kinds], kind="stable")]
    obstacles = [(c, r) for c, r, _ in gold] + [(c, r * 1.3) for c, r, _ in blobs]
    centres, _ = _place_particles(rng, shape, templates, kinds, bottom, top, membranes, obstacles, p.gap_nm, vox_nm)
    ok = ~np.isnan(centres[:, 0])
    rots = Rotation.random(len(kinds), random_state=rng).as_matrix().reshape(-1, 3, 3).astype(np.float32)
    prot = np.zeros(shape, np.float32)
    render(prot, [(templates[k], centres[ok & (kinds == k)].astype(np.float32), rots[ok & (kinds == k)])
                  for k in range(len(SPECIES))])
    pot += prot
    truth = pd.DataFrame({"x": centres[ok, 2], "y": centres[ok, 1], "z": centres[ok, 0],
                          "particle_type": [SPECIES[k].name for k in kinds[ok]],
                          "radius_nm": [templates[k].radius_nm for k in kinds[ok]]})

    # crowders in the remaining free ice
    taken = ndi.maximum_filter(np.abs(pot - ICE_V * ice) > 0.1, size=5)
    crowd_vol = (4 / 3) * np.pi * (1.6 / vox_nm) ** 3
    n_crowd = int(round(p.crowder_fraction * ice_vol / crowd_vol))
    pot += _crowders(rng, shape, taken, ice, n_crowd, vox_nm)

    ctx = pd.DataFrame([{"object": c["object"], "x": c["centre"][2], "y": c["centre"][1], "z": c["centre"][0],
                         "radius_nm": c["radius"] * vox_nm, "note": c["note"]} for c in context],
                       columns=["object", "x", "y", "z", "radius_nm", "note"])
    info = {"slab_z_vox": [float(bottom.mean()), float(top.mean())],
            "slab_tilt_deg": [float(np.rad2deg(np.arctan(np.gradient(bottom.mean(axis=1)).mean()))),
                              float(np.rad2deg(np.arctan(np.gradient(bottom.mean(axis=0)).mean())))],
            "ice_thickness_nm": float(np.mean(top - bottom) * vox_nm),
            "n_requested": int(n_particles), "n_particles": int(ok.sum()), "n_not_placed": int((~ok).sum()),
            "occupied_fraction": float(sum(templates[k].volume_vox for k in kinds[ok]) / max(ice_vol, 1.0)),
            "crowders": n_crowd, "membranes": len(membranes), "gold": len(gold), "ice_contamination": len(blobs)}
    return Scene(pot.astype(np.float32), top, bottom, truth, ctx, info)
