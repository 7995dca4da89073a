"""No-data regions (segment/nodata.py): a constant fill is found exactly, chunked equals whole,
noise never qualifies, and a run leaves the fill unassigned: no fit sample, no count, no pick there."""

import json

import dask.array as da
import mrcfile
import numpy as np
import pandas as pd
import pytest

from picket_dask.segment.nodata import CUBE, no_data_block, no_data_mask, reach_vox


def test_reach_follows_the_blur():
    assert reach_vox(1.0) == 2 + 3 and reach_vox(1.73) == 2 + 6 and reach_vox(2.0) == 2 + 6


@pytest.mark.parametrize("fill", [0.0, 0.3141])
def test_constant_band_found_with_its_reach(rng, fill):
    vol = rng.standard_normal((30, 40, 50)).astype(np.float32)
    vol[:, :, :12] = fill  # columns 0..11 hold no data
    got = no_data_block(vol, reach_vox(1.0))
    # constant 5^3 cubes are centred at x <= 9 (the cube reaches x + 2 <= 11); grown by the reach (5): x <= 14
    assert got[:, :, :15].all() and not got[:, :, 15:].any()


def test_noise_and_int8_noise_have_no_data(rng):
    vol = rng.standard_normal((40, 40, 40)).astype(np.float32)
    assert not no_data_block(vol, 8).any()
    q = np.clip(np.round(vol * 20), -127, 127).astype(np.int8)  # quantised like an MRC mode 0 tomogram
    assert not no_data_block(q, 8).any()


def test_chunked_equals_whole(rng):
    vol = rng.standard_normal((37, 45, 52)).astype(np.float32)
    vol[:, :9, :] = 0.0
    vol[10:20, 30:40, 20:35] = 1.5  # an inner constant box (a masked-out object)
    whole = no_data_block(np.pad(vol, 10, mode="reflect"), reach_vox(1.5))[10:-10, 10:-10, 10:-10]
    for chunks in ((12, 15, 17), (37, 45, 52), (20, 9, 30)):
        got = no_data_mask(da.from_array(vol, chunks=chunks), 1.5).compute()
        np.testing.assert_array_equal(got, whole)
    assert whole[15, 35, 27] and not whole[30, 30, 45]


@pytest.fixture(scope="module")
def padded(tmp_path_factory, sim_tiny):
    """The tiny simulated tomogram with its first 24 x columns zero-filled (a padded reconstruction)."""
    d = tmp_path_factory.mktemp("padded")
    with mrcfile.open(sim_tiny["tomogram"], permissive=True) as m:
        x, vs = m.data.astype(np.float32), float(m.voxel_size.x)
    x[:, :, :24] = 0.0
    with mrcfile.new(d / "padded.mrc") as m:
        m.set_data(x)
        m.voxel_size = vs
    return d / "padded.mrc"


def test_run_leaves_the_fill_unassigned(padded, tmp_path):
    import zarr

    from picket_dask.workflows import run

    res = run(padded, tmp_path / "auto", ["gabor-gmm-ws"], chunks=32, max_fit_voxels=50_000)[0]
    sem = zarr.open_group(str(res.image / "labels" / "semantic-gabor-gmm"), mode="r")
    labels = np.asarray(sem["0"][:])
    meta = dict(sem.attrs)["picket_dask"]
    reach = reach_vox(meta["params"]["sigma_vox"])
    last = 24 - 1 - CUBE // 2 + reach  # the last unassigned column: cube centres up to 21, grown by the reach
    assert (labels[:, :, :last + 1] == 255).all() and (labels[2:-2, 2:-2, last + 1:-2] != 255).all()
    assert meta["no_data"]["voxels"] == labels[:, :, :last + 1].size and meta["no_data"]["mode"] == "auto"
    assert json.loads(res.run_json.read_text())["no_data"] == meta["no_data"]
    picks = pd.read_csv(res.picks["gabor-gmm-ws"]["csv"], comment="#")
    assert len(picks) and (picks.x > last).all()
    off = run(padded, tmp_path / "off", ["gabor-gmm-ws"], chunks=32, max_fit_voxels=50_000, nodata="off")[0]
    labels_off = np.asarray(zarr.open(str(off.image / "labels" / "semantic-gabor-gmm" / "0"))[:])
    assert (labels_off[2:-2, 2:-2, 2:last + 1] != 255).all()  # off: the fill is labelled like data (the reference)


def test_draw_sample_skips_no_data(rng):
    from picket_dask.config import SegmentParams
    from picket_dask.segment.semantic import draw_sample

    vol = rng.standard_normal((20, 30, 40)).astype(np.float32)
    vol[:, :, :10] = 0.0
    nd = no_data_mask(da.from_array(vol, chunks=16), 1.0)
    s = draw_sample(da.from_array(vol, chunks=16), SegmentParams(max_fit_voxels=2000, sigma_vox=1.0), no_data=nd)
    assert len(s.coords) > 1000 and s.coords[:, 2].min() == 13  # band x < 10: cube centres x <= 7, reach 5 and len(s.neighborhoods) == len(s.coords)


def test_reference_preset_labels_every_voxel():
    from picket_dask.config import RunConfig

    assert RunConfig(preset="reference").segment.nodata == "off" and RunConfig().segment.nodata == "auto"
    assert json.loads(RunConfig(preset="reference").model_dump_json())["segment"]["nodata"] == "off"


def test_gate_skips_the_filters_without_a_fill(rng):
    from picket_dask.segment.nodata import may_hold_no_data

    vol = rng.standard_normal((20, 30, 40)).astype(np.float32)
    assert not may_hold_no_data(da.from_array(vol, chunks=(10, 15, 20)))
    vol[3:9, 4:10, 18:23] = 2.0  # a 6 x 6 x 5 constant box across a chunk face along x: three in a row on one side
    assert may_hold_no_data(da.from_array(vol, chunks=(10, 15, 20)))
    assert no_data_mask(da.from_array(vol, chunks=(10, 15, 20)), 1.0).compute()[5, 6, 20]


def test_an_offset_of_the_data_against_its_fill_changes_nothing(padded, tmp_path):
    """The same padded tomogram with its data 5 SDs above the fill of 0 (an integer tomogram's offset): the background
    step removes the offset and sets the fill to the data's level, the context's gradients see the fill at the data's
    median, so the picks are those of the tomogram filled at its mean (before, the fill's edge was a step that moved
    the fit and that the membrane test masked: dev set 0.437 against 0.524)."""
    from picket_dask.workflows import run

    with mrcfile.open(padded, permissive=True) as m:
        x, vs = m.data.astype(np.float32), float(m.voxel_size.x)
    shifted = x + np.float32(5 * x[:, :, 24:].std())
    shifted[:, :, :24] = 0.0
    with mrcfile.new(tmp_path / "shifted.mrc") as m:
        m.set_data(shifted)
        m.voxel_size = vs
    kw = dict(chunks=32, max_fit_voxels=50_000)
    a = pd.read_csv(run(padded, tmp_path / "a", ["gabor-gmm-ws"], **kw)[0].picks["gabor-gmm-ws"]["csv"], comment="#")
    b = pd.read_csv(run(tmp_path / "shifted.mrc", tmp_path / "b", ["gabor-gmm-ws"], **kw)[0].picks["gabor-gmm-ws"]["csv"],
                    comment="#")
    assert len(a) and abs(len(a) - len(b)) <= max(1, len(a) // 50)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(a[["z", "y", "x"]].to_numpy()).query(b[["z", "y", "x"]].to_numpy())
    assert (d <= 1.0).mean() >= 0.95


def test_context_sees_the_fill_at_the_datas_level(padded, tmp_path):
    """The fill's edge is a planar step when the fill is far from the data's level: the membrane test on the raw
    volume marks it (more membrane than the same volume filled near its mean); detect_context puts the fill at the
    sample's median first, so both give the same mask."""
    from picket_dask.io.tomogram import convert
    from picket_dask.localize.context import detect_context
    from picket_dask.localize.membranes import bin_factor, binned, membrane_mask
    from picket_dask.segment.lamella import Lamella

    with mrcfile.open(padded, permissive=True) as m:
        x, vs = m.data.astype(np.float32), float(m.voxel_size.x)
    shifted = x + np.float32(5 * x[:, :, 24:].std())
    shifted[:, :, :24] = 0.0
    fill = no_data_mask(da.from_array(x, chunks=32), 1.73)
    reports, raw = [], []
    for name, vol in (("near", x), ("far", shifted)):
        with mrcfile.new(tmp_path / f"{name}.mrc") as m:
            m.set_data(vol)
            m.voxel_size = vs
        image = convert(tmp_path / f"{name}.mrc", tmp_path / f"{name}.zarr", chunks=32)
        reports.append(detect_context(image, Lamella.whole_box(x.shape, "test"), (vs,) * 3, 1.73, (60.0, 400.0), fill))
        f = bin_factor(vs)
        small = binned(da.from_array(vol, chunks=32), f)
        inside = da.ones(small.shape, dtype=bool, chunks=small.chunks)
        raw.append(int(membrane_mask(da.from_array(vol, chunks=32), vs, inside, f, 400.0)[0].sum().compute()))
    assert raw[1] > raw[0]  # the step alone is a "membrane"
    assert reports[0]["membrane_voxels"] == reports[1]["membrane_voxels"]
