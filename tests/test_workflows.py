"""End to end: run + evaluate on a simulated tomogram, the reference YAML through run, resume."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from picket_dask.cli import main
from picket_dask.evaluate import evaluate_files
from picket_dask.workflows import run


@pytest.fixture(scope="module")
def result(tmp_path_factory, sim_tiny):
    out = tmp_path_factory.mktemp("run")
    return run(sim_tiny["tomogram"], out, ["gabor-kmeans-cc", "gabor-kmeans-ws", "intensities-gmm-cc"],
               chunks=32, max_fit_voxels=50_000, min_distance_vox=6)[0]


def test_run_writes_everything(result):
    assert set(result.picks) == {"gabor-kmeans-cc", "gabor-kmeans-ws", "intensities-gmm-cc"}
    doc = json.loads(result.run_json.read_text())
    assert doc["voxel_size_A"] == [10.0, 10.0, 10.0] and "versions" in doc and doc["timings_s"]["total"] > 0
    labels = result.image / "labels"
    for name in ("semantic-gabor-kmeans", "instances-gabor-kmeans-ws", "instances-intensities-gmm-cc"):
        assert (labels / name / ".zattrs").exists()
    for fmt, path in result.picks["gabor-kmeans-ws"].items():
        assert open(path).read()


def test_f1_well_above_random(result, sim_tiny):
    s = evaluate_files(result.picks["gabor-kmeans-cc"]["csv"], sim_tiny["truth_csv"], result.shape, result.voxel_size, 100)
    assert s.f1 >= 0.5, s
    assert s.relative_recall > 0.5
    assert s.recall > s.random_recall + 0.3


def test_napari_ome_zarr_layout(result):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(result.image)))())
    names = [n.metadata.get("name") for n in nodes]
    assert "semantic-gabor-kmeans" in names and "instances-gabor-kmeans-ws" in names
    lab = next(n for n in nodes if n.metadata.get("name") == "instances-gabor-kmeans-ws")
    assert np.asarray(lab.data[0]).dtype == np.uint32
    assert lab.metadata["coordinateTransformations"][0][0]["scale"] == [10.0, 10.0, 10.0]


def test_resume_skips_segmentation(result, sim_tiny):
    out = result.run_json.parent.parent
    again = run(sim_tiny["tomogram"], out, ["gabor-kmeans-cc"], chunks=32, max_fit_voxels=50_000, min_distance_vox=6)[0]
    assert not any(k.startswith("segment.") for k in again.timings)
    assert again.counts["gabor-kmeans-cc"] == result.counts["gabor-kmeans-cc"]


def test_reference_yaml_through_run(tmp_path, sim_tiny):
    ref = {"dataset_name": "sim", "inputs": [{"tomogram": str(sim_tiny["tomogram"]), "lower_z-slice_limit": 10,
                                              "upper_z-slice_limit": 40}],
           "neighborhood_size": 5, "max_num_neighborhoods_for_fitting": 20000,
           "feature_extraction_params": {"mode": "intensities"}, "clustering_methods": ["kmeans"],
           "particle_extraction_params": [{"mode": "connected_component_labeling"}], "output_dir": str(tmp_path / "o")}
    (tmp_path / "s1.yaml").write_text(yaml.safe_dump(ref))
    assert main(["run", "--config", str(tmp_path / "s1.yaml"), "--cluster", "threads", "--chunks", "32"]) == 0
    doc = json.loads(next((tmp_path / "o").glob("*/run.json")).read_text())
    assert doc["config"]["workflows"] == ["intensities-kmeans-cc"] and doc["config"]["segment"]["z_fit"] == [10, 40]
    assert doc["n_picks"]["intensities-kmeans-cc"] > 0


def test_cli_evaluate_and_preview(result, sim_tiny, tmp_path, capsys):
    assert main(["evaluate", result.picks["gabor-kmeans-ws"]["csv"], result.picks["gabor-kmeans-cc"]["yaml"],
                 "--truth", sim_tiny["truth_csv"].__str__(), "--tomogram", str(sim_tiny["tomogram"]), "--csv", str(tmp_path / "s.csv")]) == 0
    assert "f1" in capsys.readouterr().out
    assert main(["preview", str(result.image), "--labels", "semantic-gabor-kmeans",
                 "--picks", result.picks["gabor-kmeans-ws"]["csv"], "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_cli_bad_inputs(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.mrc"), "--cluster", "threads"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["run", "x.mrc", "--workflows", "gabor-foo-cc", "--cluster", "threads"]) == 2
    assert "unknown workflow" in capsys.readouterr().err


@pytest.mark.slow
def test_run_on_local_cluster(tmp_path, sim_tiny):
    """The default path: an embedded LocalCluster (separate worker processes)."""
    code = subprocess.run([sys.executable, "-m", "picket_dask.cli", "run", str(sim_tiny["tomogram"]), "--out", str(tmp_path),
                           "--workflows", "gabor-kmeans-cc", "--chunks", "32", "--max-fit-voxels", "20000",
                           "--workers", "2", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr[-2000:]
    assert "dashboard" in code.stderr


def test_napari_layers_have_data_and_scale(result):
    from picket_dask.view import layers

    ls = layers(result.run_json.parent)
    kinds = [k for _, _, k in ls]
    assert kinds[0] == "image" and kinds.count("points") == 3 and kinds.count("labels") == 5
    for data, kw, kind in ls:
        assert kw["scale"] == (10.0, 10.0, 10.0)
        if kind in ("image", "labels"):
            assert tuple(data.shape) == tuple(result.shape)
    pts = next(d for d, kw, k in ls if kw["name"] == "picks-gabor-kmeans-cc")
    assert pts.shape == (result.counts["gabor-kmeans-cc"], 3)


def test_resume_notices_a_changed_input(tmp_path, sim_tiny):
    import os
    import shutil

    src = tmp_path / "t.mrc"
    shutil.copy(sim_tiny["tomogram"], src)
    kw = dict(chunks=32, max_fit_voxels=20_000)
    run(src, tmp_path / "o", ["intensities-kmeans-cc"], **kw)
    again = run(src, tmp_path / "o", ["intensities-kmeans-cc"], **kw)[0]
    assert "segment.fit" not in again.timings
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = run(src, tmp_path / "o", ["intensities-kmeans-cc"], **kw)[0]
    assert "segment.fit" in changed.timings


def test_segment_then_localize_commands(tmp_path, sim_tiny, capsys):
    assert main(["segment", str(sim_tiny["tomogram"]), "--out", str(tmp_path), "--features", "intensities",
                 "--clusterers", "kmeans", "--chunks", "32", "--max-fit-voxels", "20000", "--cluster", "threads"]) == 0
    image = tmp_path / sim_tiny["tomogram"].stem / f"{sim_tiny['tomogram'].stem}.zarr"
    assert (image / "labels" / "semantic-intensities-kmeans").exists()
    assert main(["localize", str(image), "--labels", "semantic-intensities-kmeans", "--extractor", "cc",
                 "--out", str(tmp_path / "picks")]) == 0
    df = pd.read_csv(tmp_path / "picks" / "intensities-kmeans-cc.csv", comment="#")
    assert len(df) > 0
    assert main(["localize", str(image), "--labels", "semantic-intensities-kmeans", "--particle-id", "7",
                 "--out", str(tmp_path / "p2")]) == 2
    assert "does not occur" in capsys.readouterr().err


def test_many_tomograms_concurrently_with_a_shared_fit(tmp_path, sim_tiny):
    from picket_dask.simulate import simulate

    other = simulate(tmp_path / "data", "tiny", seed=11)["tomogram"]
    res = run([sim_tiny["tomogram"], other], tmp_path / "o", ["gabor-kmeans-cc"], chunks=32, max_fit_voxels=20_000,
              fit_on=1, concurrent=2)
    assert [r.name for r in res] == [sim_tiny["tomogram"].stem, other.stem]
    docs = [json.loads(r.run_json.read_text()) for r in res]
    assert docs[0]["shared_fit"] == docs[1]["shared_fit"] == str(sim_tiny["tomogram"].resolve())
    assert "segment.fit" not in res[1].timings  # applied, not fitted
    from picket_dask.io.omezarr import read_attrs

    m0 = read_attrs(res[0].image / "labels" / "semantic-gabor-kmeans")["model"]["params"]["cluster_centers"]
    m1 = read_attrs(res[1].image / "labels" / "semantic-gabor-kmeans")["model"]["params"]["cluster_centers"]
    assert m0 == m1
