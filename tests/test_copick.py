"""copick round trip against a real filesystem copick project: the tomogram is read from it, picks
and segmentations are written back through the copick API and read back with it.
copick pins zarr < 3, so this runs in its own environment (.ci/run makes one); elsewhere it skips."""

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest

copick = pytest.importorskip("copick")


@pytest.fixture
def project(tmp_path, sim_tiny):
    cfg = {
        "config_type": "filesystem", "name": "picket-test", "version": "1.0.0", "user_id": "tester",
        "pickable_objects": [{"name": "particle", "is_particle": True, "label": 1, "color": [255, 0, 0, 255], "radius": 60.0},
                             {"name": "membrane", "is_particle": False, "label": 2, "color": [0, 255, 0, 255]},
                             {"name": "cytoplasm", "is_particle": False, "label": 3, "color": [0, 0, 255, 255]}],
        "overlay_root": f"local://{tmp_path / 'overlay'}", "static_root": f"local://{tmp_path / 'static'}",
        "overlay_fs_args": {"auto_mkdir": True}, "static_fs_args": {"auto_mkdir": True},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    root = copick.from_file(str(path))
    run = root.new_run("TS_001")
    vs = run.new_voxel_spacing(10.0)
    vs.new_tomogram("wbp").from_numpy(mrcfile.read(str(sim_tiny["tomogram"])).astype(np.float32))
    return path


def test_copick_round_trip(project, tmp_path, sim_tiny):
    from picket_dask.cli import main

    code = main(["run", "--copick", str(project), "--run", "TS_001", "--out", str(tmp_path / "out"), "--cluster", "threads",
                 "--workflows", "gabor-kmeans-cc", "--chunks", "32", "--max-fit-voxels", "20000"])
    assert code == 0
    ours = pd.read_csv(tmp_path / "out" / "TS_001" / "picks" / "gabor-kmeans-cc.csv", comment="#")
    root = copick.from_file(str(project))
    run = root.get_run("TS_001")
    picks = run.get_picks(object_name="particle", user_id="picket", session_id="gabor-kmeans-cc")
    assert len(picks) == 1 and len(picks[0].points) == len(ours) > 0
    got = np.array([[p.location.x, p.location.y, p.location.z] for p in picks[0].points])
    np.testing.assert_allclose(got, ours[["x_A", "y_A", "z_A"]].to_numpy(), atol=1e-3)
    segs = run.get_segmentations(user_id="picket", name="particle", session_id="gabor-kmeans")
    assert len(segs) == 1
    mask = segs[0].numpy()
    assert mask.shape == tuple(mrcfile.read(str(sim_tiny["tomogram"])).shape) and set(np.unique(mask)) <= {0, 1} and mask.sum() > 0


def test_copick_bad_run(project, capsys):
    from picket_dask.cli import main

    assert main(["run", "--copick", str(project), "--run", "nope", "--cluster", "threads"]) == 2
    assert "has no run 'nope'" in capsys.readouterr().err


def test_copick_missing_object_refused_before_any_work(project, tmp_path, capsys, monkeypatch):
    """A pickable object the project lacks was found only when the picks were written back, after the whole
    run (whose output was then removed): now one line before anything is converted or written."""
    from picket_dask import workflows
    from picket_dask.cli import main

    def no_work(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(workflows, "_run_all", no_work)
    out = tmp_path / "out"
    assert main(["run", "--copick", str(project), "--run", "TS_001", "--out", str(out), "--cluster", "threads",
                 "--copick-object", "ribosome"]) == 2
    err = capsys.readouterr().err
    assert "has no pickable object 'ribosome'" in err and "writing" not in err
    assert not out.exists()


def test_copick_spacing_for_the_size_prior(project, tmp_path, sim_tiny):
    """Of a run's voxel spacings (here 10 A and a 20 A copy), the run reads the coarsest that resolves the
    smallest particle (10 A for 60 A), records it, and writes the segmentation back at that spacing."""
    from picket_dask.cli import main

    root = copick.from_file(str(project))
    data = mrcfile.read(str(sim_tiny["tomogram"])).astype(np.float32)[::2, ::2, ::2].copy()
    root.get_run("TS_001").new_voxel_spacing(20.0).new_tomogram("wbp").from_numpy(data)
    code = main(["run", "--copick", str(project), "--run", "TS_001", "--out", str(tmp_path / "out"), "--cluster", "threads",
                 "--workflows", "gabor-kmeans-cc", "--chunks", "32", "--max-fit-voxels", "20000"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "TS_001" / "run.json").read_text())
    assert record["tomogram"].endswith("voxel_spacing=10") and record["voxel_size_A"][0] == 10.0
    run = copick.from_file(str(project)).get_run("TS_001")
    segs = run.get_segmentations(user_id="picket", name="particle", session_id="gabor-kmeans")
    assert [float(s.voxel_size) for s in segs] == [10.0]


def test_copick_voxel_size_override_refused(project, capsys):
    """--voxel-size was silently ignored for a copick run (its spacing is the project's): one line instead."""
    from picket_dask.cli import main

    assert main(["run", "--copick", str(project), "--run", "TS_001", "--cluster", "threads", "--voxel-size", "14"]) == 2
    assert "does not apply to the copick input" in capsys.readouterr().err


def test_copick_mask_segmentation_and_scores(project, tmp_path, sim_tiny, capsys):
    """--mask copick:NAME keeps the picks whose centre lies inside the run's segmentation NAME, read at its own
    voxel size (20 A here, the tomogram 10 A: centres placed through Angstrom, the grids sharing the box's corner); two segmentations of that name
    (two users) are one line asking which; the picks written back carry their scores."""
    from picket_dask.cli import main

    shape = mrcfile.read(str(sim_tiny["tomogram"])).shape
    seg = np.zeros(tuple(n // 2 for n in shape), np.uint8)
    seg[:, :30, :] = 1  # tomogram y < 60 voxels
    root = copick.from_file(str(project))
    run = root.get_run("TS_001")
    run.new_segmentation(voxel_size=20.0, name="cytoplasm", session_id="0", user_id="cellseg").from_numpy(seg)
    base = ["run", "--copick", str(project), "--run", "TS_001", "--cluster", "threads", "--workflows", "gabor-kmeans-cc",
            "--chunks", "32", "--max-fit-voxels", "20000"]
    assert main(base + ["--out", str(tmp_path / "free")]) == 0
    assert main(base + ["--out", str(tmp_path / "held"), "--mask", "copick:cytoplasm"]) == 0
    free = pd.read_csv(tmp_path / "free" / "TS_001" / "picks" / "gabor-kmeans-cc.csv", comment="#")
    held = pd.read_csv(tmp_path / "held" / "TS_001" / "picks" / "gabor-kmeans-cc.csv", comment="#")
    # the 20 A voxels tile the same box as the 10 A ones (corner-aligned): 10 A voxel i lies at (i + 0.5) / 2 - 0.5
    z, y, x = (np.clip(np.rint((free[c].to_numpy() + 0.5) * 0.5 - 0.5).astype(int), 0, n - 1)
               for c, n in zip(("z", "y", "x"), seg.shape))
    expected = free[seg[z, y, x] != 0].reset_index(drop=True)
    assert 0 < len(held) == len(expected) < len(free)
    pd.testing.assert_frame_equal(held.drop(columns="id"), expected.drop(columns="id"))
    doc = json.loads((tmp_path / "held" / "TS_001" / "run.json").read_text())
    assert doc["mask"]["path"] == "copick:cytoplasm:cellseg:0" and doc["mask"]["voxel_size_A"] == 20.0
    assert doc["mask"]["voxels_inside"] == int(seg.sum())
    points = copick.from_file(str(project)).get_run("TS_001").get_picks(
        object_name="particle", user_id="picket", session_id="gabor-kmeans-cc")[0].points
    np.testing.assert_allclose([p.score for p in points], held["score"].to_numpy(), rtol=1e-6)
    from picket_dask.view import layers

    shown = {kw["name"]: (d, kw) for d, kw, _ in layers(tmp_path / "held" / "TS_001")}
    np.testing.assert_array_equal(np.asarray(shown["mask"][0]), seg)  # napari places it at its own 20 A voxels
    assert shown["mask"][1]["scale"] == (20.0, 20.0, 20.0)
    assert shown["mask"][1]["translate"] == (5.0, 5.0, 5.0)  # voxel 0's centre, as RegionMask.inside places it

    run.new_segmentation(voxel_size=20.0, name="cytoplasm", session_id="0", user_id="other").from_numpy(seg)
    capsys.readouterr()
    out = tmp_path / "two"
    assert main(base + ["--out", str(out), "--mask", "copick:cytoplasm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matches 2 segmentations" in err and "cellseg:0, other:0" in err
    assert not out.exists()
    assert main(base + ["--out", str(out), "--mask", "copick:cytoplasm:cellseg", "--dry-run"]) == 0
    assert "copick:cytoplasm:cellseg:0" in capsys.readouterr().out
    assert main(base + ["--out", str(out), "--mask", "copick:nucleus"]) == 2
    assert "has no such segmentation" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "ex"), "--exclude", "copick:cytoplasm:cellseg"]) == 0  # the complement
    ex = pd.read_csv(tmp_path / "ex" / "TS_001" / "picks" / "gabor-kmeans-cc.csv", comment="#")
    assert len(ex) + len(held) == len(free) and not set(map(tuple, ex[["x", "y", "z"]].to_numpy())) & set(
        map(tuple, held[["x", "y", "z"]].to_numpy()))


def test_all_runs(project, tmp_path, sim_tiny, capsys, monkeypatch):
    """--all-runs: every run holding a tomogram (a run without one is named and left out); with --run, or
    without --copick, one line."""
    from picket_dask.cli import main

    root = copick.from_file(str(project))
    root.new_run("TS_002").new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(
        mrcfile.read(str(sim_tiny["tomogram"])).astype(np.float32)[:, :64, :64])
    root.new_run("TS_003")  # no tomogram yet
    from picket_dask import progress

    monkeypatch.setattr(progress, "_QUIET", [False])  # the console's note is part of what is tested
    out = tmp_path / "out"
    assert main(["run", "--copick", str(project), "--all-runs", "--out", str(out), "--cluster", "threads",
                 "--workflows", "gabor-kmeans-cc", "--chunks", "32", "--max-fit-voxels", "20000", "--dry-run"]) == 0
    said = capsys.readouterr()
    assert "2 runs; 1 without such a tomogram left out (TS_003)" in said.err
    assert "TS_001" in said.out and "TS_002" in said.out and "TS_003" not in said.out
    assert main(["run", "--copick", str(project), "--all-runs", "--run", "TS_001", "--out", str(out)]) == 2
    assert "--all-runs: and --run name the runs twice" in capsys.readouterr().err
    assert main(["run", "--copick", str(project), "--all-runs", "--copick-voxel-spacing", "7", "--out", str(out)]) == 2
    assert "has no run with a tomogram at 7 A (3 runs)" in capsys.readouterr().err
    assert main(["run", str(sim_tiny["tomogram"]), "--all-runs", "--out", str(out)]) == 2
    assert "--all-runs: needs a copick project" in capsys.readouterr().err
    assert not out.exists()
