"""Picks closer than the smallest particle's diameter become one pick (localize/duplicates.py)."""

import numpy as np
import pytest

from picket_dask.config import REFERENCE_LOCALIZE, LocalizeParams
from picket_dask.localize.centroids import InstanceTable, relabel
from picket_dask.localize.duplicates import close_groups, merge_duplicates
from picket_dask.localize.size_prior import equivalent_diameter_A


def _table(centres, counts):
    n = len(counts)
    c = np.asarray(centres, float)
    return InstanceTable(np.arange(1, n + 1), np.asarray(counts), c.copy(), (c - 1).astype(int), (c + 1).astype(int))


def test_best_pick_takes_its_neighbours_without_chains():
    centres = np.array([[0, 0, 0], [0, 0, 4], [0, 0, 8], [0, 0, 20]], float)
    score = np.array([5.0, 3.0, 4.0, 1.0])
    groups = close_groups(centres, score, 6.0)
    # the best (row 0) takes row 1; row 2 is 4 voxels from row 1 but 8 from row 0: a taken pick takes none
    assert [g.tolist() for g in groups] == [[0, 1]]
    assert close_groups(centres, score, 3.9) == []
    assert close_groups(centres[:1], score[:1], 6.0) == [] and close_groups(np.zeros((0, 3)), np.zeros(0), 6.0) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_picks_a_diameter_apart_are_never_merged(seed):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * 6.01
    centres = grid + rng.uniform(-0.001, 0.001, grid.shape)
    assert close_groups(centres, rng.normal(size=len(centres)), 6.0) == []


def test_merge_pools_the_group_and_relabel_maps_its_ids():
    # rows 0-2 within 6 voxels of row 1 (the best score); row 3 dropped before; row 4 far away
    table = _table([[10, 10, 10], [10, 10, 13], [10, 14, 13], [10, 10, 11], [40, 40, 40]], [10, 30, 20, 5, 7])
    keep = np.array([True, True, True, False, True])
    score = np.array([1.0, 9.0, 2.0, 20.0, 3.0])
    contrast = np.array([1.0, 0.5, 0.25, 1.0, 1.0])
    earlier = np.array([-1, -1, -1, 2, -1])  # row 3 had joined row 2 (e.g. a shell's wall piece)
    merged_into, report = merge_duplicates(table, keep, score, contrast, 6.0, earlier)
    assert keep.tolist() == [False, True, False, False, True]
    assert merged_into.tolist() == [1, -1, 1, 1, -1]  # row 3 follows row 2 into row 1
    assert report["groups"] == 1 and report["picks_merged"] == 3 and report["distance_vox"] == 6.0
    assert table.counts[1] == 60
    assert np.allclose(table.centroids[1], (10 * np.array([10, 10, 10]) + 30 * np.array([10, 10, 13])
                                            + 20 * np.array([10, 14, 13])) / 60)
    assert np.isclose(contrast[1], (10 * 1.0 + 30 * 0.5 + 20 * 0.25) / 60) and np.isclose(score[1], contrast[1] * np.sqrt(60))
    assert table.bbox_min[1].tolist() == [9, 9, 9] and table.bbox_max[1].tolist() == [11, 15, 14]
    kept, lut = relabel(table, keep, merged_into)
    assert len(kept) == 2 and lut[1] == lut[2] == lut[3] == lut[4] == 1 and lut[5] == 2


def test_no_close_picks_change_nothing():
    table = _table([[0, 0, 0], [0, 0, 10]], [5, 5])
    keep = np.array([True, True])
    merged_into, report = merge_duplicates(table, keep, np.array([1.0, 2.0]), np.array([1.0, 1.0]), 6.0)
    assert keep.all() and (merged_into == -1).all() and report["groups"] == 0
    assert relabel(table, keep, merged_into)[1] is None


def test_reference_preset_keeps_close_picks():
    assert LocalizeParams().merge_close == "auto"
    assert LocalizeParams(**REFERENCE_LOCALIZE).merge_close == "off"
    # written unquoted in YAML (a boolean) the three-way switch still reads as off / auto; other values refuse
    assert LocalizeParams.model_validate({"merge_close": False}).merge_close == "off"
    assert LocalizeParams.model_validate({"merge_close": True}).merge_close == "auto"
    assert LocalizeParams(merge_close="wide").merge_close == "wide"
    with pytest.raises(ValueError):
        LocalizeParams(merge_close="all")


def test_wide_reaches_the_sum_of_equivalent_radii():
    centres = np.array([[0, 0, 0], [0, 0, 9], [20, 0, 0], [20, 0, 9]], float)
    score = np.array([4.0, 3.0, 2.0, 1.0])
    radii = np.array([5.0, 5.0, 3.0, 3.0])  # two large instances 9 apart (5 + 5 > 9), two small ones (3 + 3 < 9)
    assert close_groups(centres, score, 6.0) == []
    assert [g.tolist() for g in close_groups(centres, score, 6.0, radii)] == [[0, 1]]
    assert np.allclose(equivalent_diameter_A([4 / 3 * np.pi * 125], 1.0) / 2, 5.0)  # the radii wide uses, voxels
    table = _table(centres, [524, 524, 113, 113])
    keep = np.ones(4, bool)
    _, report = merge_duplicates(table, keep, score.copy(), np.ones(4), 6.0, wide=True)
    assert keep.tolist() == [True, False, True, True] and report["groups"] == 1 and "equivalent" in report["rule"]
