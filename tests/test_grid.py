"""The working grid (io/grid.py): when a tomogram is resampled, chunked equals whole-volume
interpolation, coordinates map back to the source's voxels, and a run on a coarse tomogram writes
its picks in that tomogram's voxels."""

import json

import dask.array as da
import mrcfile
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from picket_dask.config import LocalizeParams, SegmentParams
from picket_dask.io.grid import Grid, identity, resample, resample_whole, work_params, working_grid


def test_grid_rule_six_voxels_per_smallest_diameter():
    # 60 A -> a 10 A working grid; voxels within 5 % of it (header rounding) and finer ones keep theirs
    assert not working_grid((10.0,) * 3, (8, 8, 8), (60, 400)).resampled
    assert not working_grid((10.4,) * 3, (8, 8, 8), (60, 400)).resampled
    assert not working_grid((4.0,) * 3, (8, 8, 8), (60, 400)).resampled
    g14 = working_grid((14.0,) * 3, (10, 20, 30), (60, 400))
    assert g14.resampled and g14.shape == (14, 28, 42) and "17.3" not in g14.reason
    g = working_grid((20.0,) * 3, (10, 20, 30), (60, 400))
    assert g.resampled and g.voxel_A == (10.0,) * 3 and g.shape == (20, 40, 60)
    assert "resampled to 10 A" in g.reason and "17.3 A, where the blur matched to it is one voxel" in g.reason
    assert working_grid((28.0,) * 3, (10, 10, 10), (84, 400)).voxel_A == (14.0,) * 3  # 6 voxels per smallest diameter
    assert not working_grid((20.0,) * 3, (8, 8, 8), (60, 400), "off").resampled
    # at most 2x finer per axis: a 100 A overview at the 60 A default is 8x the voxels, not 1,000x
    g100 = working_grid((100.0,) * 3, (10, 20, 30), (60, 400))
    assert g100.voxel_A == (50.0,) * 3 and g100.shape == (20, 40, 60) and "not resolved" in g100.reason
    assert "not resolved" not in g.reason  # 20 A -> 10 A: exactly 2x
    assert not working_grid((20.0,) * 3, (8, 8, 8), None).resampled  # no prior: no scale to match
    with pytest.raises(ValueError):
        working_grid((20.0,) * 3, (8, 8, 8), (60, 400), "bogus")


@pytest.mark.parametrize("chunks,out_chunks", [((7, 11, 13), 9), ((20, 20, 20), 16), ((5, 40, 9), 64)])
def test_chunked_resampling_equals_the_whole_volume(rng, chunks, out_chunks):
    x = rng.normal(size=(20, 33, 41)).astype(np.float32)
    g = working_grid((20.0, 20.0, 20.0), x.shape, (60, 400))
    whole = resample_whole(x, g)
    chunked = resample(da.from_array(x, chunks=chunks), g, out_chunks).compute()
    assert chunked.shape == g.shape == (40, 66, 82) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    # the whole-volume interpolation is scipy's corner-aligned cubic zoom
    np.testing.assert_allclose(whole, ndi.zoom(x, 2, order=3, mode="grid-mirror", grid_mode=True), atol=1e-5)


def test_identity_grid_leaves_data_and_coordinates_alone(rng):
    x = da.from_array(rng.normal(size=(6, 7, 8)).astype(np.float32), chunks=4)
    g = identity((10.0,) * 3, x.shape)
    assert resample(x, g) is x
    p = np.array([[1.5, 2.25, 3.0]])
    assert np.array_equal(g.to_source(p), p) and np.array_equal(g.to_work(p), p)
    assert g.translation_A == (0.0, 0.0, 0.0)


def test_a_blob_stays_where_it_was():
    """A Gaussian blob centred at source voxel c is found at to_work(c) after resampling, and maps back to c."""
    shape, c = (24, 32, 40), np.array([10.3, 17.6, 21.2])
    zz, yy, xx = np.indices(shape, dtype=float)
    blob = np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * 2.0**2)).astype(np.float32)
    g = working_grid((18.0,) * 3, shape, (60, 400))  # 18 A -> 10 A: a non-integer factor
    up = resample(da.from_array(blob, chunks=16), g, 32).compute()
    found = np.array(ndi.center_of_mass(np.clip(up, 0, None)))
    np.testing.assert_allclose(found, g.to_work(c)[0], atol=0.02)
    np.testing.assert_allclose(g.to_source(found)[0], c, atol=0.01)
    assert g.translation_A == (-4.0, -4.0, -4.0)  # voxel 0's centre: 5 A from the corner instead of 9


def test_options_in_voxels_are_converted():
    g = working_grid((20.0,) * 3, (64, 64, 64), (60, 400))
    seg, loc = work_params(g, SegmentParams(z_fit=(10, 50), sigma_vox=1.5),
                           LocalizeParams(z_extract=(12, 40), min_distance_vox=3, min_size_vox=5, max_size_vox=100, halo_vox=20))
    assert seg.z_fit == (20, 100) and seg.sigma_vox == 3.0
    assert loc.z_extract == (24, 81) and loc.min_distance_vox == 6 and loc.halo_vox == 40
    assert loc.min_size_vox == 40 and loc.max_size_vox == 800
    same = work_params(identity((10.0,) * 3, (8, 8, 8)), SegmentParams(z_fit=(1, 5)), LocalizeParams())
    assert same[0].z_fit == (1, 5)


def test_grid_record_round_trip():
    g = working_grid((20.0, 18.0, 18.0), (10, 20, 30), (60, 400))
    assert Grid.from_dict(json.loads(json.dumps(g.as_dict()))) == g
    assert Grid.from_dict(None, (10.0,) * 3, (4, 5, 6)) == identity((10.0,) * 3, (4, 5, 6))


@pytest.fixture(scope="module")
def coarse(tmp_path_factory, sim_tiny):
    """The tiny simulated tomogram binned 2x (24 x 48 x 48 at 20 A) with its truth in those voxels."""
    d = tmp_path_factory.mktemp("coarse")
    with mrcfile.open(sim_tiny["tomogram"], permissive=True) as m:
        x = m.data.astype(np.float32)
    z, y, w = (s // 2 for s in x.shape)
    b = x[:2 * z, :2 * y, :2 * w].reshape(z, 2, y, 2, w, 2).mean(axis=(1, 3, 5))
    with mrcfile.new(d / "coarse.mrc") as m:
        m.set_data(b.astype(np.float32))
        m.voxel_size = 20.0
    t = pd.read_csv(sim_tiny["truth_csv"])
    for a in "xyz":
        t[a] = (t[a] + 0.5) / 2 - 0.5
    t.to_csv(d / "coarse_truth.csv", index=False)
    return d


def test_run_on_a_coarse_tomogram_picks_in_its_voxels(coarse, tmp_path):
    from picket_dask.evaluate import evaluate_files
    from picket_dask.io.omezarr import open_image
    from picket_dask.workflows import run

    res = run(coarse / "coarse.mrc", tmp_path / "auto", ["gabor-gmm-ws"], chunks=32, max_fit_voxels=50_000)[0]
    doc = json.loads(res.run_json.read_text())
    assert doc["shape_zyx"] == [24, 48, 48] and doc["voxel_size_A"] == [20.0] * 3  # the tomogram's grid
    assert doc["working_grid"]["resampled"] and doc["working_grid"]["shape_zyx"] == [48, 96, 96]
    image, vs, _ = open_image(res.image)
    assert image.shape == (48, 96, 96) and vs == (10.0,) * 3
    picks = pd.read_csv(res.picks["gabor-gmm-ws"]["csv"], comment="#")
    assert len(picks) and picks[["z", "y", "x"]].min().min() >= -0.5
    assert (picks[["z", "y", "x"]].to_numpy() <= np.array([23.5, 47.5, 47.5])).all()
    np.testing.assert_allclose(picks.x_A, picks.x * 20.0, atol=0.02)  # both written to 3 decimals
    s = evaluate_files(res.picks["gabor-gmm-ws"]["csv"], coarse / "coarse_truth.csv", res.shape, res.voxel_size, 100)
    assert s.f1 > 0.5, s
    from picket_dask.view import layers  # napari: image and labels on the working grid, placed in the tomogram's frame

    for data, kw, kind in layers(res.run_json.parent):
        if kind == "points":
            assert kw["scale"] == (20.0,) * 3 and (data[:, 0] <= 23.5).all()
        else:
            assert kw["scale"] == (10.0,) * 3 and kw["translate"] == (-5.0,) * 3 and data.shape == (48, 96, 96)
    off = run(coarse / "coarse.mrc", tmp_path / "off", ["gabor-gmm-ws"], chunks=32, max_fit_voxels=50_000, resample="off")[0]
    assert not json.loads(off.run_json.read_text())["working_grid"]["resampled"]
    assert open_image(off.image)[0].shape == (24, 48, 48)


def test_labels_back_on_the_source_grid(rng):
    from picket_dask.io.grid import labels_to_source

    g = working_grid((20.0,) * 3, (9, 14, 17), (60, 400))
    src = (rng.random((9, 14, 17)) > 0.7).astype(np.uint8)
    up = (resample(da.from_array(src.astype(np.float32), chunks=5), g, 8) > 0.5).astype(np.uint8)
    back = labels_to_source(up.rechunk(7), g, 6).compute()
    assert back.shape == src.shape and back.dtype == np.uint8
    # every source voxel's centre lies between two working voxels of that voxel: nearest = one of them
    whole = ndi.affine_transform(up.compute(), 1 / g.ratio, offset=0.5 / g.ratio - 0.5, output_shape=src.shape,
                                 order=0, mode="nearest")
    np.testing.assert_array_equal(back, whole)
    assert (back == src).mean() > 0.9
