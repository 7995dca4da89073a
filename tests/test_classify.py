"""classify: subvolumes at picks, rotation-invariant descriptors, classes, averages, junk, outputs, bad input."""

import json
import subprocess
import sys

import dask.array as da
import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from picket_dask.classify import classify_picks
from picket_dask.classify import descriptors as dsc
from picket_dask.classify.average import align, principal_frame
from picket_dask.classify.cluster import cluster, parse_classes
from picket_dask.classify.extract import cut_boxes, default_box, map_batches, outside_fraction, plan_batches
from picket_dask.errors import PicketError
from picket_dask.io.omezarr import write_image
from picket_dask.io.picks import picks_frame, write_csv

SHAPE = (48, 96, 96)
WF = "gabor-gmm-cc"


def _shape(kind, loc):
    if kind == "ball":
        return np.linalg.norm(loc, axis=1) <= 4.5
    if kind == "rod":
        return (np.linalg.norm(loc[:, :2], axis=1) <= 2.0) & (np.abs(loc[:, 2]) <= 7)
    raise ValueError(kind)


def make_result(root, n=40, seed=0, chunks=32, gold=0, sheet=0, extra_cols=True):
    """OUT/tomo/{tomo.zarr, picks/WF.csv}: n particles (balls and rods in turn, random orientations,
    dark), optional gold beads (8x denser) and picks on a membrane sheet; blurred, noisy."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(SHAPE, np.float32)
    g = np.indices((21,) * 3).reshape(3, -1).T - 10
    cents, kinds = [], []
    while len(cents) < n:
        c = rng.uniform(8, np.array(SHAPE) - 8)
        if c[2] > 70 and sheet or any(np.linalg.norm(c - o) < 16 for o in cents):
            continue
        kind = ("ball", "rod")[len(cents) % 2]
        dens = _shape(kind, g @ Rotation.random(random_state=rng).as_matrix())
        idx = np.rint(c).astype(int) + g
        ok = np.all((idx >= 0) & (idx < SHAPE), axis=1)
        vol[tuple(idx[ok].T)] -= dens[ok]
        cents.append(c)
        kinds.append(kind)
    for i in range(gold):
        c = np.array([24.0, 12 + 24 * i, 84.0]) if sheet else np.array([24.0, 20 + 25 * i, 88.0])
        idx = np.rint(c).astype(int) + g
        vol[tuple(idx.T)] -= 8 * (np.linalg.norm(g, axis=1) <= 2.5)
        cents.append(c)
        kinds.append("gold")
    if sheet:
        vol[:, :, 82:85] -= 1.0  # a membrane: a plane at x = 83
        for i in range(sheet):
            cents.append(np.array([10 + 28 * (i % 2), 8 + 80 * i / max(1, sheet - 1), 83.0]))
            kinds.append("sheet")
    vol = ndi.gaussian_filter(vol, 1.0) + rng.normal(0, 0.15, SHAPE).astype(np.float32)
    tdir = root / "tomo"
    (tdir / "picks").mkdir(parents=True)
    write_image(da.from_array(vol, chunks=chunks), tdir / "tomo.zarr", (10.0,) * 3, chunks=chunks, n_levels=1)
    cents = np.array(cents) + rng.normal(0, 0.3, (len(cents), 3))
    sizes = np.array([{"ball": 380, "rod": 170, "gold": 65, "sheet": 900}[k] for k in kinds])
    df = picks_frame(cents, (10.0,) * 3, sizes)
    if extra_cols:  # columns added by other stages are kept and read by name
        df.insert(0, "score", np.round(rng.uniform(1, 5, len(df)), 2))
        df["note"] = "x"
    write_csv(df, tdir / "picks" / f"{WF}.csv")
    return tdir, np.array(kinds), vol


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory):
    return make_result(tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def classified(two_kinds):
    tdir, kinds, _ = two_kinds
    return classify_picks(tdir, WF, "auto", drop_junk=True, export_subvolumes=True), kinds


def ari(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b)


def test_auto_classes_recover_the_two_shapes(classified):
    res, kinds = classified
    picks = pd.read_csv(res.out / "picks.csv", comment="#")
    assert res.k == 2 and ari(kinds, picks["class"]) == 1.0
    assert picks["class_confidence"].between(0.5, 1).all()
    assert {"x", "y", "z", "score", "note", "size_vox", "id", "class", "class_confidence", "junk", "junk_reason"} <= set(picks.columns)
    src = pd.read_csv(res.out.parents[1] / "picks" / f"{WF}.csv", comment="#")
    np.testing.assert_allclose(picks[["x", "y", "z", "score"]], src[["x", "y", "z", "score"]])


def test_outputs_in_every_format(classified):
    res, kinds = classified
    out = res.out
    assert out == out.parents[1] / "classes" / WF
    classes = pd.read_csv(out / "classes.csv")
    assert list(classes["class"]) == [1, 2] and classes["count"].sum() == len(kinds)
    assert {"junk", "junk_reason", "radius_gyration_A"} <= set(classes.columns)
    for k in (1, 2):
        with mrcfile.open(out / "averages" / f"class_{k:02d}.mrc") as m:
            assert m.data.shape == (res.paths and int(json.loads((out / "report.json").read_text())["box_vox"]),) * 3
            assert float(m.voxel_size.x) == pytest.approx(10.0)
        doc = json.loads((out / "copick" / f"class_{k:02d}.json").read_text())
        assert doc["pickable_object_name"] == f"class_{k:02d}" and len(doc["points"]) == (classes["count"][k - 1])
    assert (out / "gallery.png").stat().st_size > 5000
    star = starfile.read(out / "picks.star")
    star = star["particles"] if isinstance(star, dict) else star
    assert sorted(star["rlnClassNumber"].unique()) == [1, 2]
    assert "rlnMaxValueProbDistribution" in star and "rlnCenteredCoordinateXAngst" in star
    # --drop-junk: same columns as the workflow's picks; --export-subvolumes: stack + STAR
    clean = pd.read_csv(out / "picks_clean.csv", comment="#")
    assert "class" not in clean and len(clean) == len(kinds) - int(pd.read_csv(out / "picks.csv", comment="#")["junk"].sum())
    box = json.loads((out / "report.json").read_text())["box_vox"]
    with mrcfile.open(out / "subvolumes.mrcs") as m:
        assert m.data.shape == (len(kinds), box, box, box) and m.is_volume_stack()
    sub = starfile.read(out / "subvolumes.star")
    sub = sub["particles"] if isinstance(sub, dict) else sub
    assert sub["rlnImageName"].iloc[0] == "000001@subvolumes.mrcs" and (sub["rlnTomoName"] == "tomo").all()
    assert not list(out.parent.glob(".*"))  # no temporary folders left


def test_subvolume_stack_holds_the_boxes(classified, two_kinds):
    res, _ = classified
    _, _, vol = two_kinds
    picks = pd.read_csv(res.out / "picks.csv", comment="#")
    box = json.loads((res.out / "report.json").read_text())["box_vox"]
    c = np.rint(picks[["z", "y", "x"]].to_numpy()).astype(int)
    with mrcfile.open(res.out / "subvolumes.mrcs") as m:
        for i in np.nonzero(outside_fraction(picks[["z", "y", "x"]].to_numpy(), box, SHAPE) == 0)[0][:5]:
            lo = c[i] - box // 2
            np.testing.assert_allclose(m.data[i], vol[lo[0]:lo[0] + box, lo[1]:lo[1] + box, lo[2]:lo[2] + box], atol=1e-6)


def test_rod_average_lies_along_its_first_axis(classified):
    res, kinds = classified
    classes = pd.read_csv(res.out / "classes.csv")
    rod = int(classes.loc[classes["elongation"].idxmin(), "class"])
    with mrcfile.open(res.out / "averages" / f"class_{rod:02d}.mrc") as m:
        avg = -m.data.astype(float)
    w = np.clip(avg - np.median(avg), 0, None)
    profile = [w.sum(axis=tuple(b for b in range(3) if b != a)) for a in range(3)]
    spread = [np.sqrt((p * (np.arange(len(p)) - len(p) // 2) ** 2).sum() / p.sum()) for p in profile]
    assert spread[0] > 1.5 * spread[1] and spread[0] > 1.5 * spread[2]


def test_given_k_and_bad_input(two_kinds, tmp_path):
    tdir, kinds, _ = two_kinds
    res = classify_picks(tdir, WF, 3, out=tmp_path / "k3")
    assert res.k == 3 and sorted(pd.read_csv(tmp_path / "k3" / "picks.csv", comment="#")["class"].unique()) == [1, 2, 3]
    with pytest.raises(PicketError, match="more classes than there are picks"):
        classify_picks(tdir, WF, len(kinds) + 1, out=tmp_path / "bad")
    with pytest.raises(PicketError, match="larger than the tomogram"):
        classify_picks(tdir, WF, box_A=10 * 60, out=tmp_path / "bad")
    with pytest.raises(PicketError, match="no picks of workflow"):
        classify_picks(tdir, "gabor-kmeans-ws", out=tmp_path / "bad")
    for bad in ("two", "0", -1):
        with pytest.raises(PicketError, match="classes"):
            parse_classes(bad)
    assert not (tmp_path / "bad").exists()


def test_no_picks_and_picks_outside(tmp_path):
    tdir, _, _ = make_result(tmp_path, n=6, extra_cols=False)
    picks = pd.read_csv(tdir / "picks" / f"{WF}.csv", comment="#")
    write_csv(picks.iloc[:0], tdir / "picks" / f"{WF}.csv")
    with pytest.raises(PicketError, match="has no picks"):
        classify_picks(tdir, WF)
    picks.loc[2, "x"] = 200.0
    write_csv(picks, tdir / "picks" / f"{WF}.csv")
    with pytest.raises(PicketError, match="outside the image"):
        classify_picks(tdir, WF)
    assert not (tdir / "classes").exists()


def test_cli_one_line_errors_and_success(two_kinds, tmp_path, capsys):
    from picket_dask.cli import main

    tdir, kinds, _ = two_kinds
    assert main(["classify", str(tdir), "--workflow", WF, "--classes", str(len(kinds) + 5)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "more classes than there are picks" in err
    assert main(["classify", str(tdir), "--workflow", WF, "--classes", "2", "--box-A", "200"]) == 0
    assert "2 classes" in capsys.readouterr().out
    assert json.loads((tdir / "classes" / WF / "report.json").read_text())["box_vox"] == 20


def test_junk_flags_gold_and_membrane(tmp_path):
    tdir, kinds, _ = make_result(tmp_path, n=30, gold=3, sheet=12)
    res = classify_picks(tdir, WF, "auto", box_A=200)
    picks = pd.read_csv(res.out / "picks.csv", comment="#")
    gold, sheet = kinds == "gold", kinds == "sheet"
    assert picks["junk"][gold].all() and picks["junk_reason"][gold].str.contains("density").all()
    assert picks["junk"][sheet].mean() >= 0.9 and picks["junk_reason"][sheet].str.contains("sheet|extends").all()
    assert not picks["junk"][~gold & ~sheet].any()


def test_extraction_pads_at_faces_and_batches_agree():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(20, 30, 40)).astype(np.float32)
    centres = np.array([[10, 15, 20], [0, 0, 0], [19.4, 29, 39], [5.6, 14.2, 2.0]])
    boxes = cut_boxes(vol, (0, 0, 0), centres, 8, vol.shape)
    np.testing.assert_array_equal(boxes[0], vol[6:14, 11:19, 16:24])
    inner = vol[0:4, 0:4, 0:4]
    np.testing.assert_array_equal(boxes[1][4:, 4:, 4:], inner)
    assert np.allclose(boxes[1][:4], inner.mean())  # padded with the mean of the part inside
    np.testing.assert_allclose(outside_fraction(centres, 8, vol.shape)[:2], [0, 1 - 1 / 8])
    batches = plan_batches(rng.uniform(0, 1, (50, 3)) * vol.shape, 8, vol.shape, (10, 10, 10), max_picks=4)
    assert all(len(b.rows) <= 4 for b in batches) and sorted(np.concatenate([b.rows for b in batches])) == list(range(50))
    assert default_box(np.array([500, 4000]), 10.0) == 40 and default_box(np.array([500, 4000]), 10.0, (60.0, 150.0)) == 30 and default_box(None, 10.0, None, (20, 64, 64)) == 20


def test_map_batches_equals_direct_cut(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(40, 50, 60)).astype(np.float32)
    write_image(da.from_array(vol, chunks=16), tmp_path / "v.zarr", (10.0,) * 3, chunks=16, n_levels=1)
    centres = rng.uniform(0, 1, (30, 3)) * (39, 49, 59)
    direct = cut_boxes(vol, (0, 0, 0), centres, 10, vol.shape)
    got = np.zeros_like(direct)

    def put(r):
        got[r[0]] = r[1]

    n = map_batches(tmp_path / "v.zarr", centres, 10, vol.shape, (16, 16, 16), lambda b, rows: (rows, b), put, max_picks=5)
    assert n >= 6
    np.testing.assert_array_equal(got, direct)


def test_descriptors_are_rotation_invariant():
    g = np.indices((21,) * 3).reshape(3, -1).T - 10
    boxes = []
    rots = Rotation.random(3, random_state=2)
    for kind in ("rod", "ball"):
        for r in rots:
            v = -_shape(kind, g @ r.as_matrix()).reshape((21,) * 3).astype(np.float32)
            boxes.append(ndi.gaussian_filter(v, 1.0)[:20, :20, :20])
    d = dsc.describe(np.array(boxes), -1.0)
    for fam in ("radial", "sh", "inertia", "spectrum"):
        x = d[fam].reshape(6, -1)
        within = max(np.linalg.norm(x[i] - x[j]) for i, j in ((0, 1), (0, 2), (3, 4), (3, 5)))
        between = min(np.linalg.norm(x[i] - x[j]) for i in range(3) for j in range(3, 6))
        assert within < 0.5 * between, fam


def test_principal_frame_aligns_a_rod():
    g = np.indices((24,) * 3).reshape(3, -1).T - 12
    axis = Rotation.random(random_state=5).as_matrix()
    rod = _shape("rod", g @ axis).reshape((24,) * 3).astype(np.float32)
    centre, rot = principal_frame(rod, 10, 3)
    out = align(rod, centre, rot)
    spread = [np.sqrt(((np.arange(24) - 12) ** 2 * out.sum(axis=tuple(b for b in range(3) if b != a))).sum() / out.sum())
              for a in range(3)]
    assert spread[0] > 2 * spread[1] and abs(spread[1] - spread[2]) < 0.5


def test_cluster_orders_by_size():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (25, 2))])
    cl = cluster(x, None, 0)
    assert cl.k == 2 and (cl.labels[:60] == 1).all() and (cl.labels[60:] == 2).all() and min(cl.bic, key=cl.bic.get) == 2


def test_one_or_two_picks_make_one_class():
    """One pick is one class (the mixture needs two rows: `run --max-picks 1 --classify` crashed); two picks
    with auto K fit a single component."""
    one = cluster(np.array([[0.3, 1.2, -0.4]]))
    assert one.k == 1 and one.labels.tolist() == [1] and one.confidence.tolist() == [1.0]
    two = cluster(np.array([[0.3, 1.2, -0.4], [0.1, 0.9, -0.2]]))
    assert two.k == 1 and two.labels.tolist() == [1, 1]
    assert cluster(np.zeros((0, 3))).labels.shape == (0,)


def test_steps_one_and_two_never_import_classify():
    code = ("import sys, picket_dask, picket_dask.workflows, picket_dask.cli, picket_dask.segment.semantic, "
            "picket_dask.localize.extract; assert 'picket_dask.classify' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_with_classify_as_last_stage(tmp_path, two_kinds):
    import picket_dask as pk
    from picket_dask.io.mrc import write_mrc
    from picket_dask.io.results import read_run

    _, _, vol = two_kinds
    write_mrc(tmp_path / "t.mrc", vol, 10.0)
    res = pk.run([tmp_path / "t.mrc"], tmp_path / "out", ["intensities-kmeans-cc"], classify=True, max_fit_voxels=20000)
    where = res[0].classes["intensities-kmeans-cc"]
    assert (tmp_path / "out" / "t" / "classes" / "intensities-kmeans-cc" / "picks.csv").is_file(), where
    doc = read_run(tmp_path / "out" / "t")
    assert "intensities-kmeans-cc.classify" in doc["timings_s"] and doc["classes"]["intensities-kmeans-cc"] == where


def test_a_second_classify_of_one_workflow_stops_at_the_lock(two_kinds, tmp_path):
    import shutil

    from picket_dask.io.atomic import exclusive

    tdir = tmp_path / "tomo"
    shutil.copytree(two_kinds[0], tdir, ignore=shutil.ignore_patterns("classes"))  # other tests classify it too
    with exclusive(tdir / f".classes-{WF}.lock", "the first classify"):  # as a first classify holds it
        with pytest.raises(PicketError, match="is being written by another picket-dask run"):
            classify_picks(tdir, WF)
    assert not (tdir / "classes").exists()
    assert classify_picks(tdir, WF).out == tdir / "classes" / WF  # released: the next one runs
