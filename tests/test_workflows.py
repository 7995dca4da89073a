"""End to end: run + evaluate on a simulated tomogram, the reference YAML through run, resume."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from picket_dask.cli import main
from picket_dask.errors import PicketError
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


def test_napari_reader_plugin_opens_a_result_folder(result, tmp_path):
    """napari finds the reader through the installed package's entry point (npe2, as napari does at
    start-up): the result folder and its run.json open as `picket-dask view`'s layers; a batch folder,
    a picks file and a missing path are refused (None: other readers keep them)."""
    import npe2
    from npe2 import PluginManager, PluginManifest

    from picket_dask.napari_plugin import get_reader
    from picket_dask.view import layers

    manifest = PluginManifest.from_distribution("picket-dask")  # validated by npe2's schema
    assert [r.command for r in manifest.contributions.readers] == ["picket-dask.get_reader"]
    PluginManager.instance().discover()
    folder = result.run_json.parent
    expected = [(kw["name"], kind) for _, kw, kind in layers(folder)]
    for path in (folder, result.run_json):
        got = npe2.read([str(path)], stack=False, plugin_name="picket-dask")
        assert [(kw["name"], kind) for _, kw, kind in got] == expected
        assert got[0][1]["scale"] == (10.0, 10.0, 10.0)
    (tmp_path / "run.json").write_text("{not json")
    for path in (folder.parent, result.picks["gabor-kmeans-cc"]["csv"], tmp_path / "gone", tmp_path):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(folder), str(folder)]) is None  # napari's stack of several paths


def test_napari_layers_have_data_and_scale(result):
    """What `picket-dask view` opens, built without napari: the image, the first workflow's particles
    shown and every other label layer hidden, picks on every slice their particle spans, z/y/x in
    Angstrom, and no keyword napari has deprecated."""
    from picket_dask.view import layers

    ls = layers(result.run_json.parent)
    kinds = [k for _, _, k in ls]
    assert kinds[0] == "image" and kinds.count("points") == 3 and kinds.count("labels") == 6  # with the context mask
    for data, kw, kind in ls:
        assert kw["scale"] == (10.0, 10.0, 10.0)
        assert kw["axis_labels"] == ("z", "y", "x") and kw["units"] == ("angstrom",) * 3
        assert not {"out_of_slice_display", "n_dimensional", "edge_color", "edge_width"} & set(kw)
        if kind in ("image", "labels"):
            assert tuple(data.shape) == tuple(result.shape)
    shown = {kw["name"] for _, kw, k in ls if k == "labels" and kw["visible"]}
    assert shown == {"instances-gabor-kmeans-cc"}  # the first workflow's particles
    sem = next(kw for _, kw, k in ls if kw["name"] == "semantic-gabor-kmeans")
    assert None in sem["colormap"]  # napari's default entry: no "did not provide a default color"
    pts, kw = next((d, kw) for d, kw, k in ls if kw["name"] == "picks-gabor-kmeans-cc")
    assert kw["visible"] and len(kw["size"]) == len(pts) == len(kw["features"]["pick"])
    picks = pd.read_csv(result.picks["gabor-kmeans-cc"]["csv"], comment="#")
    assert set(kw["features"]["pick"]) == set(picks["id"])  # every pick is drawn
    by_id = picks.set_index("id")["score"]
    np.testing.assert_array_equal(kw["features"]["score"], by_id.loc[kw["features"]["pick"]].to_numpy())  # each ring its pick's
    per_pick = pd.Series(kw["features"]["pick"]).value_counts()
    assert per_pick.median() >= 3  # on several slices, not only the one nearest its centroid
    from scipy.ndimage import find_objects

    inst = next(d for d, kw, k in ls if kw["name"] == "instances-gabor-kmeans-cc").compute()
    boxes = find_objects(inst)
    ratio = []
    for pid, z in zip(picks["id"], picks["z"]):  # rings about as many slices as the particle spans
        ring_z = pts[kw["features"]["pick"] == pid, 0]
        assert round(z) in ring_z
        zs = boxes[pid - 1][0]
        ratio.append(len(ring_z) / (zs.stop - zs.start))
    assert 0.6 <= np.median(ratio) <= 1.5, ratio


def test_pick_rings_are_sphere_cross_sections():
    from picket_dask.view import pick_rings

    r = 5.0  # a sphere of radius 5 voxels at z = 20.3; 10 A voxels in y and x, 20 A in z
    picks = pd.DataFrame({"z": [20.3, 0.2], "y": [30.0, 5.0], "x": [40.0, 6.0],
                          "size_vox": [4 / 3 * np.pi * r**3 / 2, 0], "id": [7, 8]})
    rings, diam, ids = pick_rings(picks, (20.0, 10.0, 10.0), (64, 64, 64))
    z7 = rings[ids == 7, 0]
    assert list(z7) == [18.0, 19.0, 20.0, 21.0, 22.0]  # |z - 20.3| * 20 A <= 50 A
    assert np.all(rings[ids == 7, 1:] == [30.0, 40.0])
    np.testing.assert_allclose(diam[ids == 7], 2 * np.sqrt(np.maximum(r**2 - ((z7 - 20.3) * 2) ** 2, 0)), atol=1e-9)
    assert diam[ids == 7].max() == pytest.approx(2 * np.sqrt(25 - 0.36))
    assert rings[ids == 8, 0].min() == 0 and len(rings[ids == 8]) >= 1  # no size: a default ring, clipped to the volume


def test_moved_results_still_open(tmp_path, monkeypatch, sim_tiny, capsys):
    """run.json's paths are relative to its folder: a moved result folder opens from anywhere."""
    import shutil

    from picket_dask.evaluate import evaluate_run
    from picket_dask.view import layers

    (tmp_path / "started_here").mkdir()
    monkeypatch.chdir(tmp_path / "started_here")
    res = run(sim_tiny["tomogram"], "out", ["intensities-kmeans-cc"], chunks=32, max_fit_voxels=20_000)[0]
    doc = json.loads(res.run_json.read_text())
    assert doc["image"] == f"{res.name}.zarr" and doc["picks"]["intensities-kmeans-cc"]["csv"] == "picks/intensities-kmeans-cc.csv"
    shutil.move(tmp_path / "started_here" / "out", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    moved = tmp_path / "moved" / res.name
    ls = layers(moved)
    assert [kw["name"] for _, kw, _ in ls][0] == res.name and len(ls) == 5  # image, semantic, context, instances, picks
    scores = evaluate_run(tmp_path / "moved", sim_tiny["truth_csv"])
    assert scores.loc[0, "n_picks"] == res.counts["intensities-kmeans-cc"]
    one = evaluate_run(moved, sim_tiny["truth_csv"])  # one tomogram's folder is a run folder of one
    assert one.equals(scores)
    assert main(["evaluate", str(tmp_path / "moved"), "--truth", str(sim_tiny["truth_csv"])]) == 0
    again = run(sim_tiny["tomogram"], tmp_path / "moved", ["intensities-kmeans-ws"], chunks=32, max_fit_voxels=20_000)[0]
    assert set(again.picks) == {"intensities-kmeans-cc", "intensities-kmeans-ws"}  # the earlier workflow kept


def test_semantic_labels_have_no_colour_table_without_default(result):
    """napari warns "color_dict did not provide a default color" for any colour table without a None
    entry, which image-label colors (integer label-values) cannot hold: none is written."""
    attrs = json.loads((result.image / "labels" / "semantic-gabor-kmeans" / ".zattrs").read_text())
    colors = attrs["image-label"].get("colors", [])
    assert not colors or any(c.get("label-value") is None for c in colors)


BAD_OUT = ["proc", "file"]


def _bad_out(kind, tmp_path):
    if kind == "proc":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc")
        return Path("/proc/picket-dask-nope")
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "a_file" / "out"


@pytest.mark.parametrize("kind", BAD_OUT)
@pytest.mark.parametrize("command", ["run", "convert", "segment", "localize", "evaluate", "preview", "demo"])
def test_output_folder_that_cannot_be_created(command, kind, tmp_path, sim_tiny, result, capsys):
    """One line naming the folder and the fix, exit 2, before any work, for every command that writes."""
    bad = _bad_out(kind, tmp_path)
    tomo, image = str(sim_tiny["tomogram"]), str(result.image)
    csv = result.picks["gabor-kmeans-cc"]["csv"]
    argv = {
        "run": ["run", tomo, "--out", str(bad), "--cluster", "threads"],
        "convert": ["convert", tomo, str(bad / "t.zarr")],
        "segment": ["segment", tomo, "--out", str(bad), "--cluster", "threads"],
        "localize": ["localize", image, "--labels", "semantic-gabor-kmeans", "--out", str(bad)],
        "evaluate": ["evaluate", csv, "--truth", str(sim_tiny["truth_csv"]), "--shape", "48", "96", "96",
                     "--voxel-size", "10", "--csv", str(bad / "scores.csv")],
        "preview": ["preview", image, "--out", str(bad / "p.png")],
        "demo": ["demo", "--out", str(bad), "--cluster", "threads"],
    }[command]
    assert main(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and not out.out, out
    assert lines[0].startswith(f"picket-dask: error: {bad}") and "cannot create the output folder" in lines[0]
    assert "writable output location" in lines[0]


def test_run_refuses_an_uncreatable_output_before_any_work(tmp_path, sim_tiny):
    from picket_dask.errors import PicketError

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(PicketError, match="cannot create the output folder"):
        run(sim_tiny["tomogram"], tmp_path / "a_file" / "out", ["intensities-kmeans-cc"])


@pytest.mark.slow
def test_demo_prints_progress_and_the_table_only(tmp_path):
    """`picket-dask demo` on its default LocalCluster: stderr is progress lines, stdout the results
    (no "Sending large graph", no RuntimeWarning, no traceback)."""
    code = subprocess.run([sys.executable, "-m", "picket_dask.cli", "demo", "--preset", "tiny", "--out", str(tmp_path / "d"),
                           "--workers", "2", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert code.returncode == 0, code.stderr[-2000:]
    stray = [line for line in code.stderr.splitlines() if not line.startswith("[picket-dask] ")]
    assert not stray, code.stderr
    assert "F1" in code.stdout and "Warning" not in code.stdout


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
    from picket_dask import progress
    from picket_dask.config import RunConfig
    from picket_dask.workflows import localize_only

    was = progress._QUIET[0]
    progress.quiet(False)
    try:  # a prior no instance fits: zero picks, and the console says why
        cfg = RunConfig()
        cfg.localize.particle_diameter_A = (1.0, 2.0)  # at most 3 A across: not even one 10 A voxel
        paths = localize_only(image, "semantic-intensities-kmeans", "cc", tmp_path / "p3", cfg)
        assert "excludes all" in capsys.readouterr().err
        assert len(pd.read_csv(paths["csv"], comment="#")) == 0
    finally:
        progress.quiet(was)


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


def test_unset_voxel_size_is_named(tmp_path, sim_tiny, capsys):
    """A header voxel size of 1 A (what MRC writers put when none was set) gets one line naming it and
    the fix; the blur follows it (clipped to 4 voxels) and run.json records it."""
    import mrcfile

    from picket_dask import progress
    from picket_dask.config import RunConfig, SegmentParams
    from picket_dask.io.mrc import write_mrc
    from picket_dask.workflows import segment_only

    vol = mrcfile.read(sim_tiny["tomogram"])
    write_mrc(tmp_path / "unset.mrc", vol, 1.0)
    was = progress._QUIET[0]
    progress.quiet(False)
    try:
        # context off: at 1 A the membrane filter's reach (4 x 10 A) is thicker than this 48-slice volume;
        # a prior from 20 A: the default's 60 A is longer than the volume's 48 A at 1 A voxels (refused, below)
        res = run(tmp_path / "unset.mrc", tmp_path / "out", ["gabor-gmm-cc"], chunks=32, max_fit_voxels=5_000, context="off",
                  particle_diameter_A=(20.0, 40.0))[0]
        err = capsys.readouterr().err
        assert "voxel size 1 A in the header" in err and "--voxel-size" in err
        assert json.loads(res.run_json.read_text())["blur_sigma_vox"] == 4.0
        cfg = RunConfig(chunks=32, segment=SegmentParams(max_fit_voxels=5_000))
        segment_only(tmp_path / "unset.mrc", tmp_path / "seg", [("gabor", "kmeans")], cfg)
        assert "voxel size 1 A in the header" in capsys.readouterr().err  # step 1 alone says it too
        with pytest.raises(PicketError, match="1 A is what MRC writers put when none was set.*--voxel-size"):
            run(tmp_path / "unset.mrc", tmp_path / "out2", ["gabor-gmm-cc"], chunks=32)
        assert not (tmp_path / "out2").exists()
    finally:
        progress.quiet(was)


def test_dry_run_checks_and_writes_nothing(tmp_path, sim_tiny, capsys):
    out = tmp_path / "out"
    assert main(["run", str(sim_tiny["tomogram"]), "--out", str(out), "--dry-run", "--voxel-size", "14"]) == 0
    said = capsys.readouterr().out
    assert f"{sim_tiny['tomogram'].stem}: 48 x 96 x 96 voxels of 14 A (--voxel-size); grid: 14 A voxels are coarser" in said
    assert "new" in said and "nothing written (--dry-run)" in said and not out.exists()
    from picket_dask.config import RunConfig
    from picket_dask.inputs import plan

    grid_voxels = plan([sim_tiny["tomogram"]], RunConfig(voxel_size=14.0), out)[0]["work_voxels"]
    assert grid_voxels > 48 * 96 * 96 and f"work: {grid_voxels / 1e6:,.0f} million voxels on the working grids" in said
    # the same checks as a run: a bad option is the run's one line
    assert main(["run", str(sim_tiny["tomogram"]), "--out", str(out), "--dry-run", "--z-extract", "10", "99"]) == 2
    assert "reaches past" in capsys.readouterr().err and not out.exists()


def test_quiet_keeps_warnings_and_results(sim_tiny, tmp_path, capsys, monkeypatch):
    """``-q``: no progress lines on stderr, the per-tomogram results still on stdout; ``warn`` lines print
    under quiet, ``note`` lines do not; main() leaves the process as loud as it found it."""
    from picket_dask import progress

    monkeypatch.setattr(progress, "_QUIET", [False])  # the suite runs quiet (conftest); this test needs the lines

    argv = ["run", str(sim_tiny["tomogram"]), "-o", str(tmp_path / "out"), "-w", "gabor-gmm-cc", "--cluster", "threads",
            "--chunks", "32", "--max-fit-voxels", "20000"]
    assert main(argv) == 0
    loud = capsys.readouterr()
    assert "[picket-dask] instances" in loud.err
    assert main(argv + ["-q", "--out", str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr()
    assert "[picket-dask] instances" not in quiet.err and "[picket-dask] writing" not in quiet.err
    assert "gabor-gmm-cc" in quiet.out and "picks" in quiet.out
    assert not progress.is_quiet()
    progress.quiet(True)
    try:
        progress.note("informational")
        progress.warn("a warning")
    finally:
        progress.quiet(False)
    err = capsys.readouterr().err
    assert "a warning" in err and "informational" not in err
