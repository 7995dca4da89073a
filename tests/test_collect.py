"""collect: every tomogram's picks of a run's --out in one RELION 5 STAR and one CSV per workflow."""

import shutil

import numpy as np
import pandas as pd
import pytest
import starfile

from picket_dask.cli import main
from picket_dask.collect import collect
from picket_dask.errors import PicketError
from picket_dask.io.picks import read_points
from picket_dask.workflows import collect_run, run

WF = "intensities-kmeans-cc"
KW = dict(chunks=32, max_fit_voxels=20_000)


def _star(path):
    star = starfile.read(path)
    return star["particles"] if isinstance(star, dict) else star


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sim_tiny):
    """Two tomograms run one after the other into one --out (as two batch jobs would)."""
    data = tmp_path_factory.mktemp("inputs")
    a, b = data / "TS_01.mrc", data / "TS_02.mrc"
    shutil.copy(sim_tiny["tomogram"], a)
    shutil.copy(sim_tiny["tomogram"], b)
    out = tmp_path_factory.mktemp("out")
    first = run(a, out, [WF], chunks=32, max_fit_voxels=20_000)[0]
    after_first = _star(out / f"{WF}.star")
    second = run(b, out, [WF], chunks=32, max_fit_voxels=20_000)[0]
    return out, first, second, after_first


def test_run_collects_every_tomogram_of_its_out(two_runs):
    out, first, second, after_first = two_runs
    assert set(after_first["rlnTomoName"]) == {"TS_01"}  # the first run: its own tomogram
    star = _star(out / f"{WF}.star")
    assert list(pd.unique(star["rlnTomoName"])) == ["TS_01", "TS_02"]  # the second: both, by folder name
    for res in (first, second):
        own = _star(res.picks[WF]["star"])
        part = star[star["rlnTomoName"] == res.name].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, own)  # each tomogram's rows are its own STAR's, score included
        assert len(part) == res.counts[WF] > 0 and "rlnAutopickFigureOfMerit" in part.columns
    table = pd.read_csv(out / f"{WF}.csv", comment="#")
    assert list(table.columns[:4]) == ["tomogram", "x", "y", "z"] and len(table) == len(star)
    own = pd.read_csv(second.picks[WF]["csv"], comment="#")
    pd.testing.assert_frame_equal(table[table.tomogram == "TS_02"].drop(columns="tomogram").reset_index(drop=True), own)
    # RELION 5's centred Angstrom coordinates back to each tomogram's voxels: / voxel size + size / 2
    back = np.stack([star[f"rlnCenteredCoordinate{a}Angst"] / first.voxel_size[0] + n / 2
                     for a, n in zip("XYZ", first.shape[::-1])], axis=1)
    np.testing.assert_allclose(back, table[["x", "y", "z"]].to_numpy(), atol=5e-4)  # CSV: 3 decimals


def test_min_score_writes_a_cut_beside_the_full_set(two_runs):
    out, first, second, _ = two_runs
    full = (out / f"{WF}.star").read_text()
    scores = pd.read_csv(out / f"{WF}.csv", comment="#")["score"]
    cut = float(np.median(scores))
    done = collect(out, [WF], min_score=cut)[WF]
    assert done.star.name == f"{WF}_min-score-{cut:g}.star" and done.n_picks == int((scores >= cut).sum())
    kept = pd.read_csv(done.csv, comment="#")
    assert (kept["score"] >= cut).all() and (out / f"{WF}.star").read_text() == full


def test_cli_collect_and_bad_input(two_runs, tmp_path, capsys):
    out, first, *_ = two_runs
    assert main(["collect", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"{WF}: {first.counts[WF] * 2} picks of 2 tomogram(s)" in said
    for argv, words in ((["collect", str(out / "TS_01")], "one tomogram's folder"),
                        (["collect", str(tmp_path)], "holds no tomogram folders"),
                        (["collect", str(out), "--workflows", "gabor-gmm-ws"], f"collect one it has ({WF})")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written for a refused call


def test_an_unreadable_folder_beside_does_not_fail_the_run(two_runs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(two_runs[0], out)
    (out / "broken").mkdir()
    (out / "broken" / "run.json").write_text("{")
    before = (out / f"{WF}.star").read_text()
    with pytest.raises(PicketError, match="not valid JSON"):
        collect(out)
    collect_run(out, [WF])  # what run calls after its tomograms are written: one line, no failure
    assert (out / f"{WF}.star").read_text() == before


def test_summary_has_a_row_per_tomogram_and_workflow(two_runs):
    import json

    out, first, second, _ = two_runs
    collect(out)
    summ = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summ.tomogram) == ["TS_01", "TS_02"] and set(summ.workflow) == {WF}
    doc = json.loads(first.run_json.read_text())
    ice = doc["lamella"]["ice_fraction"] if doc["lamella"]["found"] else 1.0
    um3 = np.prod(doc["shape_zyx"]) * np.prod(doc["voxel_size_A"]) * ice * 1e-12
    row = summ.iloc[0]
    assert row.n_picks == first.counts[WF] and row.picks_per_um3 == pytest.approx(first.counts[WF] / um3, abs=0.06)
    own = pd.read_csv(first.picks[WF]["csv"], comment="#")
    assert row.score_median == pytest.approx(own.score.median(), abs=5e-4)
    assert row.seconds == pytest.approx(doc["timings_s"]["total"], abs=5e-4)


def test_no_collect_leaves_the_run_files_to_collect(two_runs, tmp_path, sim_tiny):
    out = tmp_path / "out"
    shutil.copytree(two_runs[0], out)
    before = (out / f"{WF}.star").read_text()
    shutil.copy(sim_tiny["tomogram"], tmp_path / "TS_03.mrc")
    assert main(["run", str(tmp_path / "TS_03.mrc"), "--out", str(out), "--workflows", WF, "--no-collect",
                 "--cluster", "threads", "--chunks", "32", "--max-fit-voxels", "20000"]) == 0
    assert (out / "TS_03" / "run.json").is_file() and (out / f"{WF}.star").read_text() == before
    assert collect(out)[WF].tomograms == ["TS_01", "TS_02", "TS_03"]


def test_drop_junk_uses_each_tomograms_current_classes(two_runs, tmp_path, capsys):
    from picket_dask.classify import classify_picks

    out = tmp_path / "out"
    shutil.copytree(two_runs[0], out)
    res = classify_picks(out / "TS_01", WF, classes=2)  # as `picket-dask classify OUT/TS_01 --workflow WF`
    cls = pd.read_csv(res.out / "picks.csv", comment="#")
    cls.loc[::2, "junk"] = True  # flags as the junk rules would set them (which picks they flag is classify's test)
    cls.to_csv(res.out / "picks.csv", index=False)
    done = collect(out, [WF], drop_junk=True)[WF]
    assert done.star.name == f"{WF}_no-junk.star" and done.unclassified == ["TS_02"]
    star = _star(done.star)
    own = _star(out / "TS_01" / "picks" / f"{WF}.star")
    kept = own[~cls["junk"].to_numpy(bool)].reset_index(drop=True)
    pd.testing.assert_frame_equal(star[star.rlnTomoName == "TS_01"].reset_index(drop=True), kept)
    assert (star.rlnTomoName == "TS_02").sum() == two_runs[2].counts[WF]  # not classified: whole
    both = collect(out, [WF], min_score=float(kept["rlnAutopickFigureOfMerit"].median()), drop_junk=True)[WF]
    assert both.star.name.endswith("_no-junk.star") and "_min-score-" in both.star.name and both.n_picks < done.n_picks
    # classes of other picks (the workflow run again since) are not applied
    cls.iloc[:-1].to_csv(res.out / "picks.csv", index=False)
    assert collect(out, [WF], drop_junk=True)[WF].unclassified == ["TS_01", "TS_02"]
    assert main(["collect", str(out), "--drop-junk"]) == 0
    assert "not classified" in capsys.readouterr().out


def test_a_broken_picks_file_is_one_line(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(two_runs[0], out)
    (out / "TS_02" / "picks" / f"{WF}.star").write_text("data_particles\nloop_\n_rlnTomoName #1\n\"unclosed")
    assert main(["collect", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"TS_02/picks/{WF}.star: cannot be read" in err[0]
    collect_run(out, [WF])  # after a run: a line, not a failure


def test_evaluating_a_collected_file_is_refused(two_runs):
    out, first, *_ = two_runs
    for f in (out / f"{WF}.star", out / f"{WF}.csv"):
        with pytest.raises(PicketError, match="holds the picks of 2 tomograms"):
            read_points(f, first.voxel_size[0], first.shape)


def test_relion_names_from_a_pattern(tmp_path, sim_tiny, capsys):
    from picket_dask.io.picks import relion_name

    assert relion_name("rec_TS_01", "rec_(.*)") == "TS_01" and relion_name("TS_01_10.00Apx", r"(.*)_[0-9.]+Apx") == "TS_01"
    assert relion_name("TS_01", None) == "TS_01"
    for pattern, words in (("rec_.*", "has 0 groups"), ("(rec)_(.*)", "has 2 groups"), ("rec_(", "is not a regular"),
                           ("rec_(.*)", "does not match tomogram 'TS_01'"), ("TS_01()", "does not match")):
        with pytest.raises(PicketError, match=words.replace("(", r"\(")):
            relion_name("TS_01", pattern)
    for n in ("rec_TS_01", "rec_TS_02"):
        shutil.copy(sim_tiny["tomogram"], tmp_path / f"{n}.mrc")
    out = tmp_path / "out"
    res = run([tmp_path / "rec_TS_01.mrc", tmp_path / "rec_TS_02.mrc"], out, [WF], relion_tomo_name="rec_(.*)", **KW)
    assert set(_star(res[0].picks[WF]["star"])["rlnTomoName"]) == {"TS_01"}  # the tomogram's own STAR
    assert list(pd.unique(_star(out / f"{WF}.star")["rlnTomoName"])) == ["TS_01", "TS_02"]  # and the run's
    assert list(pd.unique(pd.read_csv(out / f"{WF}.csv", comment="#")["tomogram"])) == ["rec_TS_01", "rec_TS_02"]  # folders
    from picket_dask.classify import classify_picks

    cls = classify_picks(out / "rec_TS_01", WF, classes=2)  # classify's STAR follows the run's pattern
    assert set(_star(cls.out / "picks.star")["rlnTomoName"]) == {"TS_01"}
    collect(out)  # without a pattern: the rows as each tomogram's STAR has them
    assert list(pd.unique(_star(out / f"{WF}.star")["rlnTomoName"])) == ["TS_01", "TS_02"]
    collect(out, relion_tomo_name="(.*)")
    assert list(pd.unique(_star(out / f"{WF}.star")["rlnTomoName"])) == ["rec_TS_01", "rec_TS_02"]
    # a pattern that misses a tomogram: one line before any work
    assert main(["run", str(tmp_path / "rec_TS_01.mrc"), str(sim_tiny["tomogram"]), "--out", str(tmp_path / "o2"),
                 "--relion-tomo-name", "rec_(.*)", "--dry-run"]) == 2
    assert f"does not match tomogram '{sim_tiny['tomogram'].stem}'" in capsys.readouterr().err


def test_summary_notes_a_tomogram_far_from_its_batch():
    """A tomogram with 4x more (or fewer) picks per cubic micrometre than the folder's median is noted; a folder
    of fewer than five tomograms has no median to judge by."""
    from picket_dask.collect import summary

    def doc(name, n):
        return {"name": name, "voxel_size_A": [10.0] * 3, "shape_zyx": [100, 100, 100], "n_picks": {WF: n},
                "lamella": {"found": True, "ice_fraction": 0.5}, "timings_s": {"total": 1.0}}

    counts = [100, 110, 90, 105, 600, 20, 0]
    runs = [(doc(f"TS_{i}", n), {WF: pd.Series(np.ones(n))}) for i, n in enumerate(counts)]
    table = summary(runs).set_index("tomogram")
    assert "5.9 x the median of the 6 tomograms with picks in this folder (205,000)" in table.loc["TS_4", "note"]
    assert "0.2 x the median" in table.loc["TS_5", "note"]
    assert table.loc["TS_6", "note"] == "no picks"  # zero picks: noted as such, and not in the median's judgement
    assert not any(table.loc[f"TS_{i}", "note"] for i in range(4))
    assert not summary([runs[i] for i in (0, 1, 4, 2)]).note.str.contains("median").any()  # 600 among four: no note



def test_the_run_names_the_noted_tomograms(tmp_path):
    """After a run, the console names the summary's rows with a note (at most ten, then how many more)."""
    from picket_dask.collect import SUMMARY, SUMMARY_COMMENT
    from picket_dask.io.picks import write_csv
    from picket_dask.workflows import noted_rows

    table = pd.DataFrame({"tomogram": [f"TS_{i:02d}" for i in range(14)], "workflow": WF,
                          "note": ["no picks"] * 12 + ["", "lamella not found: flat"]})
    write_csv(table, tmp_path / SUMMARY, comment=SUMMARY_COMMENT)
    lines = noted_rows(tmp_path)
    assert lines[0] == f"look at TS_00 ({WF}): no picks" and len(lines) == 11
    assert lines[-1].startswith("and 3 more rows with a note in") and not any("TS_12" in x for x in lines)
