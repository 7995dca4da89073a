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
                             {"name": "membrane", "is_particle": False, "label": 2, "color": [0, 255, 0, 255]}],
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
