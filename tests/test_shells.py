"""Hollow particles (localize/shells.py): a shell's wall picks become one pick at its centre; compact
particles and noise do not; the result does not depend on the chunking."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from picket_dask.io.omezarr import downsample2
from picket_dask.config import REFERENCE_LOCALIZE, LocalizeParams
from picket_dask.localize import shell_test as T
from picket_dask.localize import shells as S
from picket_dask.localize.centroids import InstanceTable, relabel

SHAPE = (64, 128, 128)
DIAM = (6.0, 40.0)  # the default prior at 10 A voxels


def _grid():
    return np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")


def _scene(seed: int, shell_centre=(32, 64, 64), compact=()):
    """Dark protein (-1) in white noise (SD 1) blurred at 1 voxel: a hollow shell (wall at radius 11-14
    voxels) and compact balls of radius 4. The particle mask: blurred density below -0.35; on the
    shell, as in a tomogram, only the band the missing wedge leaves (no top and bottom), broken
    into six pieces by gaps; picks: the pieces' centroids."""
    rng = np.random.default_rng(seed)
    z, y, x = _grid()
    density = np.zeros(SHAPE, np.float32)
    cut = np.zeros(SHAPE, bool)
    if shell_centre is not None:
        dz, dy, dx = z - shell_centre[0], y - shell_centre[1], x - shell_centre[2]
        r = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
        density[(r >= 11) & (r <= 14)] = -1.0
        phi = np.degrees(np.arctan2(dy, dx)) % 60
        cut = (r < 17) & ((np.abs(dz) > 0.8 * r) | (phi < 12))
    for c in compact:
        density[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 16] = -1.0
    image = ndi.gaussian_filter(density + rng.normal(0, 1.0, SHAPE).astype(np.float32), 1.0)
    mask = ndi.binary_opening(image < -0.35, iterations=1) & ~cut
    labels, n = ndi.label(mask)
    sizes = ndi.sum(mask, labels, np.arange(1, n + 1))
    big = np.flatnonzero(sizes >= 20) + 1
    mask = np.isin(labels, big)
    picks = np.array(ndi.center_of_mass(mask, labels, big)).reshape(-1, 3)
    return image, mask, picks


def _binned(image, chunks):
    return downsample2(da.from_array(image, chunks=chunks), chunks if isinstance(chunks, tuple) else (chunks,) * 3)


def _find(image, mask, picks, chunks=64):
    return S.find_shells(da.from_array(mask, chunks=chunks), _binned(image, chunks), picks, DIAM, -1)


def test_shell_wall_picks_merge_at_its_centre():
    image, mask, picks = _scene(0)
    d = np.linalg.norm(picks - np.array([32, 64, 64]), axis=1)
    assert (d > 8).sum() >= 3  # the wall is broken into several picks, none at the centre
    found = _find(image, mask, picks)
    assert len(found) == 1
    assert np.linalg.norm(found.centres[0] - np.array([32, 64, 64])) <= 2.0
    assert min(found.z_inner[0], found.z_outer[0]) >= T.SHELL_Z_REFINED
    on_wall = np.flatnonzero((d > 8) & (d < 18))
    assert set(found.members[0].tolist()) == set(on_wall.tolist())
    assert found.report["shells"] == 1 and found.report["picks_merged"] == len(on_wall)


def test_compact_particles_and_noise_make_no_shell():
    rng = np.random.default_rng(3)
    balls = [tuple(rng.integers([12, 12, 12], [52, 116, 116])) for _ in range(40)]
    image, mask, picks = _scene(1, shell_centre=None, compact=balls)
    assert len(picks) >= 20
    found = _find(image, mask, picks)
    assert found.report["tested"] > 0  # cavities bounded by picks were there, and were tested
    assert len(found) == 0


@pytest.mark.parametrize("chunks", [32, (40, 48, 56), 128])
def test_chunking_changes_nothing(chunks):
    image, mask, picks = _scene(0, compact=[(20, 20, 20), (40, 100, 30)])
    ref = _find(image, mask, picks, chunks=SHAPE)
    got = _find(image, mask, picks, chunks=chunks)
    assert len(got) == len(ref) == 1
    np.testing.assert_array_equal(got.centres, ref.centres)
    np.testing.assert_array_equal(got.members[0], ref.members[0])
    assert got.report == ref.report


def test_wall_contrast_needs_the_wall_all_around():
    """One dark sector (a particle touching the cavity) is not a wall: the sector median ignores it."""
    half = T.margin(8.0)
    geometry = T.ring_geometry(half)
    n = 2 * half + 1
    img = np.zeros((n, n, n), np.float32)
    ridx, sector = geometry.ring, geometry.patch
    wall = (ridx >= 11) & (ridx <= 13)
    img[wall & (sector == 0)] = -1.0
    rings, balls = T.profiles_at(img, [(half, half, half)], half, geometry)
    d_in, d_out, _ = T.shell_contrast(rings[0], balls[0], 8.0, -1)
    assert abs(d_in) < 1e-9 and abs(d_out) < 1e-9
    img[wall] = -1.0
    rings, balls = T.profiles_at(img, [(half, half, half)], half, geometry)
    d_in, d_out, kw = T.shell_contrast(rings[0], balls[0], 8.0, -1)
    assert d_in > 0.9 and d_out > 0.9 and 11 <= kw <= 13


def test_merge_and_relabel_map_members_to_one_id():
    n = 5
    table = InstanceTable(np.arange(1, n + 1), np.array([10, 40, 20, 5, 7]), np.zeros((n, 3)),
                          np.tile([[1, 1, 1]], (n, 1)) * np.arange(n)[:, None], np.tile([[3, 3, 3]], (n, 1)) * (1 + np.arange(n)[:, None]))
    keep = np.array([True, True, True, False, True])
    score = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    contrast = np.array([1.0, 0.5, 0.25, 1.0, 1.0])
    shells = S.Shells(np.array([[9.0, 9.0, 9.0]]), np.array([8.0]), np.array([12]), np.array([5.0]), np.array([5.0]),
                      [np.array([0, 1, 2])])
    rows = np.flatnonzero(keep)  # members index these rows: instances 1, 2, 3
    merged_into = S.merge_shells(table, keep, score, contrast, rows, shells)
    assert keep.tolist() == [False, True, False, False, True]
    assert merged_into.tolist() == [1, -1, 1, -1, -1]
    assert table.counts[1] == 70 and np.allclose(table.centroids[1], 9.0)
    assert np.isclose(contrast[1], (10 * 1.0 + 40 * 0.5 + 20 * 0.25) / 70)
    assert np.isclose(score[1], contrast[1] * np.sqrt(70))
    assert table.bbox_min[1].tolist() == [0, 0, 0] and table.bbox_max[1].tolist() == [9, 9, 9]
    kept, lut = relabel(table, keep, merged_into)
    assert len(kept) == 2
    assert lut[1] == lut[2] == lut[3] == 1 and lut[4] == 0 and lut[5] == 2


def test_reference_preset_turns_shells_off():
    assert LocalizeParams().shells == "auto"
    assert REFERENCE_LOCALIZE["shells"] == "off"
    assert LocalizeParams(**REFERENCE_LOCALIZE).shells == "off"


def test_no_room_for_a_cavity_says_so():
    image, mask, picks = _scene(0)
    found = S.find_shells(da.from_array(mask, chunks=64), _binned(image, 64), picks, (30.0, 40.0), -1)
    assert len(found) == 0 and "no cavity radius" in found.report["note"]
    found = S.find_shells(da.from_array(mask, chunks=64), _binned(image, 64), picks[:2], DIAM, -1)
    assert len(found) == 0 and "fewer picks" in found.report["note"]


def test_reuse_between_workflows_changes_nothing():
    """The second workflow on the same segmentation reuses the first one's tested cavities
    (cache_key) and finds what it would alone."""
    image, mask, picks = _scene(2, compact=[(20, 20, 20), (40, 100, 30), (44, 30, 100)])
    other = picks[::2]  # another extractor's picks on the same mask
    m, b = da.from_array(mask, chunks=64), _binned(image, 64)
    alone = S.find_shells(m, b, other, DIAM, -1)
    S._TESTED.clear()
    first = S.find_shells(m, b, picks, DIAM, -1, cache_key="seg")
    second = S.find_shells(m, b, other, DIAM, -1, cache_key="seg")
    assert len(first) == 1 and first.report["reused"] == 0
    assert second.report["reused"] >= 1 and second.report["tested"] < first.report["tested"] + alone.report["tested"]
    assert len(second) == len(alone)
    np.testing.assert_array_equal(second.centres, alone.centres)
    for a, b_ in zip(second.members, alone.members):
        np.testing.assert_array_equal(a, b_)
    S._TESTED.clear()
