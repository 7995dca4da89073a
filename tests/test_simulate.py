"""The simulator: deterministic, truth inside the ice, context written, vacuum outside the slab, fast."""

import json
import time

import mrcfile
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from picket_dask.errors import PicketError
from picket_dask.simulate import simulate
from picket_dask.simulate.imaging import dose_symmetric_order
from picket_dask.simulate.particles import SPECIES, inside, splat, template
from picket_dask.simulate.scene import SPARSE, build_scene


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("simr")
    t0 = time.perf_counter()
    files = simulate(out, "tiny", seed=5)
    return files, time.perf_counter() - t0


def test_tiny_realistic_is_fast_and_complete(tiny):
    files, seconds = tiny
    assert seconds < 5.0, seconds
    for key in ("tomogram", "truth_csv", "truth_ndjson", "context_csv", "info"):
        assert files[key].is_file(), key
    vol = mrcfile.read(files["tomogram"])
    assert vol.shape == (48, 96, 96) and vol.dtype == np.float32
    assert abs(float(vol.mean())) < 1e-3 and abs(float(vol.std()) - 1) < 1e-3
    truth = pd.read_csv(files["truth_csv"])
    assert list(truth.columns) == ["x", "y", "z", "particle_type", "radius_nm"] and len(truth) > 0
    assert truth["radius_nm"].between(2.5, 15).all()
    ctx = pd.read_csv(files["context_csv"])
    assert list(ctx.columns) == ["object", "x", "y", "z", "radius_nm", "note"]
    assert {"vesicle", "gold"} <= set(ctx["object"])  # every realistic scene has a membrane and a bead
    assert (ctx.loc[ctx.object == "gold", "radius_nm"] == 5.0).all()
    lines = files["truth_ndjson"].read_text().splitlines()
    assert len(lines) == len(truth) and json.loads(lines[0])["type"] == "point"


def test_deterministic_for_a_seed(tmp_path, tiny):
    files, _ = tiny
    again = simulate(tmp_path, "tiny", seed=5)
    np.testing.assert_array_equal(mrcfile.read(again["tomogram"]), mrcfile.read(files["tomogram"]))
    assert again["truth_csv"].read_text() == files["truth_csv"].read_text()
    assert again["context_csv"].read_text() == files["context_csv"].read_text()
    other = simulate(tmp_path / "o", "tiny", seed=6)
    assert other["truth_csv"].read_text() != files["truth_csv"].read_text()


def test_truth_inside_the_slab_and_vacuum_outside(tiny):
    files, _ = tiny
    rec = json.loads(files["info"].read_text())
    lo, hi = rec["scene_facts"]["slab_z_vox"]
    assert 2 < lo < hi < 46 and (hi - lo) > 0.5 * 48  # vacuum above and below, ice most of the box
    truth = pd.read_csv(files["truth_csv"])
    r_vox = truth["radius_nm"]  # 1 nm voxels
    tilt = 48 * np.tan(np.deg2rad(SPARSE.max_tilt_deg + SPARSE.max_wedge_deg))
    assert ((truth["z"] - r_vox >= lo - tilt) & (truth["z"] + r_vox <= hi + tilt)).all()
    # vacuum: the blurred tomogram is structureless outside the slab, textured inside
    vol = ndi.gaussian_filter(mrcfile.read(files["tomogram"]).astype(np.float32), 2.0)
    std_z = vol.std(axis=(1, 2))
    inner = std_z[int(lo) + 4:int(hi) - 4].mean()
    assert std_z[:max(1, int(lo) - 3)].mean() < 0.8 * inner and std_z[int(hi) + 3:].mean() < 0.8 * inner


def test_scene_potential_has_the_contexts():
    rng = np.random.default_rng(0)
    sc = build_scene((40, 80, 80), rng, SPARSE)
    pot = sc.potential
    z = np.arange(40)[:, None, None]
    vacuum = (z < sc.bottom[None] - 1) | (z > sc.top[None] + 1)
    ice = (z > sc.bottom[None] + 1) & (z < sc.top[None] - 1)
    assert np.median(pot[vacuum]) == 0.0 and abs(np.median(pot[ice]) - 4.5) < 0.3
    assert pot.max() > 25  # gold
    gold = sc.context[sc.context.object == "gold"].iloc[0]
    assert pot[int(round(gold.z)), int(round(gold.y)), int(round(gold.x))] > 25


def test_particle_shapes_and_splat_conserve_mass():
    for sp in SPECIES:
        t = template(sp, 10.0, np.random.default_rng(1))
        assert 0.5 * sp.radius_nm < t.radius_nm <= sp.radius_nm * 1.05, sp.name
        assert np.abs(t.points.mean(axis=0)).max() < 1e-3
    hollow = inside("shell", np.array([[0.0, 0, 0], [0, 0, 9.5]]), 10.0)
    assert not hollow[0] and hollow[1]
    vol = np.zeros((8, 8, 8), np.float32)
    splat(vol, np.array([[3.3, 4.5, 2.25], [7.5, 0, 0]]), np.array([2.0, 5.0]))  # second point outside
    assert vol.sum() == pytest.approx(2.0) and vol[3, 4, 2] == pytest.approx(0.7 * 0.5 * 0.75 * 2)


def test_dose_symmetric_order_starts_at_zero_and_alternates():
    a = np.arange(-9, 9.1, 3.0)
    order = dose_symmetric_order(a)
    assert list(a[np.argsort(order)]) == [0, 3, -3, -6, 6, 9, -9]


def test_bad_scene_and_simple_scene_still_there(tmp_path):
    with pytest.raises(PicketError, match="unknown simulation scene"):
        simulate(tmp_path, "tiny", scene="cartoon")
    with pytest.raises(PicketError, match="noise must be"):
        simulate(tmp_path, "tiny", noise=-1)
    files = simulate(tmp_path, "tiny", seed=1, scene="simple", n_particles=4)
    assert len(pd.read_csv(files["truth_csv"])) == 4 and "context_csv" not in files


def test_particles_darker_than_ice(tiny):
    files, _ = tiny
    vol = ndi.gaussian_filter(mrcfile.read(files["tomogram"]).astype(np.float32), 1.5)
    truth = pd.read_csv(files["truth_csv"])
    big = truth[truth["radius_nm"] >= 4]
    assert len(big) >= 2
    at = vol[big.z.round().astype(int), big.y.round().astype(int), big.x.round().astype(int)]
    lo, hi = json.loads(files["info"].read_text())["scene_facts"]["slab_z_vox"]
    ice = vol[int(lo) + 3:int(hi) - 3]
    assert np.median(at) < np.percentile(ice, 10)  # dense matter dark, as in real tomograms
