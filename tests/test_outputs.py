"""Picks writers read back with the ecosystem's readers; evaluation metrics; config mapping."""

import json

import numpy as np
import pandas as pd
import pytest
import starfile
import yaml

from picket_dask.config import from_reference, load_config
from picket_dask.errors import PicketError
from picket_dask.evaluate import matched_pairs, score, threshold_vox
from picket_dask.io.picks import picks_frame, read_points, write_all


@pytest.fixture
def picks(tmp_path):
    cent = np.array([[10.25, 20.5, 30.75], [5.0, 6.0, 7.0]])
    df = picks_frame(cent, (10.0, 10.0, 10.0), sizes=[100, 50])
    return df, write_all(df, tmp_path, "gabor-kmeans-ws", "tomo1", (40, 60, 80), (10.0, 10.0, 10.0), {"workflow": "x"})


def test_csv_and_yaml(picks):
    df, paths = picks
    back = read_points(paths["csv"])
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy(), atol=1e-3)
    doc = yaml.safe_load(open(paths["yaml"]))
    assert doc["Predicted_Particle_Centroid_Coordinates"][0] == {"x": 30, "y": 20, "z": 10}
    assert doc["metadata"]["workflow"] == "x"


def test_every_format_reads_back_its_points_and_scores(tmp_path):
    """CSV, STAR, ndjson and copick carry the score (evaluate --pr-curve reads any of them); a RELION 5 STAR with
    only centred Angstrom coordinates (another tool's) reads back given the tomogram's shape and voxel size."""
    import starfile

    cent = np.array([[10.25, 20.5, 30.75], [5.0, 6.0, 7.0], [39.0, 59.5, 0.0]])
    df = picks_frame(cent, (10.0, 10.0, 10.0), sizes=[100, 50, 20], scores=[1.5, 7.25, -0.5])
    paths = write_all(df, tmp_path, "gabor-gmm-ws", "tomo1", (40, 60, 80), (10.0, 10.0, 10.0), {"workflow": "x"})
    for fmt in ("csv", "star", "ndjson", "copick"):
        back = read_points(paths[fmt], 10.0, (40, 60, 80))
        np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy(), atol=1e-3)
        np.testing.assert_allclose(back["score"].to_numpy(), df["score"].to_numpy(), atol=1e-5)
    star = starfile.read(paths["star"])
    star = star["particles"] if isinstance(star, dict) else star
    starfile.write({"particles": star.drop(columns=["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"])},
                   tmp_path / "relion5.star")
    back = read_points(tmp_path / "relion5.star", 10.0, (40, 60, 80))
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy(), atol=1e-3)
    with pytest.raises(PicketError, match="centred coordinates.*--tomogram"):
        read_points(tmp_path / "relion5.star", 10.0)


def test_picket_yaml_text_equals_safe_dump():
    """The fast writer gives yaml.safe_dump's text of the reference layout, byte for byte."""
    from picket_dask.io.picks import picket_yaml_text

    rng = np.random.default_rng(0)
    meta = {"workflow": "gabor-gmm-ws", "tomogram_path": "/data/a b/t: 1.mrc", "tomogram_shape": [200, 512, 512],
            "voxel_size": [10.0, 10.0, 10.0], "localize_params": {"z_extract": None, "particle_diameter_A": [60.0, 400.0],
            "context": "auto", "min_score": -1.5e-7}, "instances_report": {"peaks": 12, "scores": {"score": "(a - b) / c"}},
            "note": "yes", "empty": [], "nested": [{"a": 1}, [1, 2]], "long": "x " * 80, "unicode": "Å ångström"}
    for n in (0, 1, 500):
        df = picks_frame(rng.uniform(0, 300, (n, 3)), (10.0, 10.0, 10.0), sizes=rng.integers(1, 99, n), scores=rng.normal(size=n))
        doc = {"metadata": json.loads(json.dumps(meta, default=str)),
               "Predicted_Particle_Centroid_Coordinates": [{"x": int(r.x), "y": int(r.y), "z": int(r.z)} for r in df.itertuples()]}
        assert picket_yaml_text(df, meta) == yaml.safe_dump(doc, sort_keys=False)


def _frames(n_list=(0, 1, 7, 300)):
    rng = np.random.default_rng(3)
    for n in n_list:
        cent = rng.uniform(-5, 900, (n, 3))
        if n > 2:
            cent[0] = [0.0, -0.0, 1e-7]
            cent[1] = [123456.789, 0.0005, -0.0004]
        for scored in (False, True):
            kw = dict(scores=rng.normal(size=n) * 30, contrast=rng.normal(size=n)) if scored else {}
            yield picks_frame(cent, (10.0, 10.0, 13.7), sizes=rng.integers(1, 10**6, n), **kw)


def test_fast_writers_equal_the_libraries():
    """csv, STAR, copick JSON and ndjson texts equal what pandas / starfile / json write (the
    writers before they formatted rows themselves), byte for byte; NaN takes the libraries' path."""
    from starfile.writer import StarWriter

    from picket_dask.io.picks import copick_json_text, copick_points, csv_text, ndjson_text, star_frame, star_text

    frames = list(_frames())
    scored = [df for df in frames if "score" in df.columns]
    nan = frames[-1].copy()
    nan.loc[3, "score"] = np.nan
    nan.loc[4, "x"] = np.inf
    for df in frames + [nan]:
        assert csv_text(df) == df.to_csv(index=False, float_format="%.3f")
        doc = {"pickable_object_name": "ribo", "user_id": "u", "session_id": 'a "b"', "run_name": "r 1",
               "voxel_spacing": None, "unit": "angstrom", "points": copick_points(df), "trust_orientation": False}
        assert copick_json_text(df, "r 1", 'a "b"', "ribo", "u") == json.dumps(doc)
        scores = df.score.to_numpy(float) if "score" in df.columns else [None] * len(df)
        lines = [json.dumps({"type": "point", "location": {"x": float(r.x), "y": float(r.y), "z": float(r.z)},
                             **({} if sc is None else {"score": round(float(sc), 4)})}) for r, sc in zip(df.itertuples(), scores)]
        assert ndjson_text(df) == "\n".join(lines) + ("\n" if lines else "")
        for name in ("tomo1", "tomo with space", ""):
            star = star_frame(df, name, (40, 60, 80), (10.0, 10.0, 13.7))
            ours, ref = star_text(star), StarWriter({"particles": star}).to_string()
            if df is nan:
                assert ours is None  # starfile writes it (na_rep)
                continue
            assert ours.splitlines()[1:] == ref.splitlines()[1:] and ours.endswith("\n\n") and ref.endswith("\n\n")
            assert ours.splitlines()[0].split(" at ")[0] == ref.splitlines()[0].split(" at ")[0]  # the time may differ
    # a leading column of tomogram names (a run's collected CSV), and names pandas must quote
    for names in (["TS_01", "TS 02", "TS_01", "x"], ["a,b", "c", "d", "e"], ['q"', "c", "d", "e"]):
        table = pd.concat([df.assign(tomogram=n)[["tomogram", *df.columns]] for df, n in zip(scored, names)], ignore_index=True)
        assert csv_text(table) == table.to_csv(index=False, float_format="%.3f")
    # several tomograms in one file (a run's collected particles), an integer column after the floats
    star = pd.concat([star_frame(df, name, (40, 60, 80), (10.0, 10.0, 13.7))
                      for df, name in zip(scored, ["TS_01", "TS 02", "TS_01", "x"])], ignore_index=True)
    star["rlnClassNumber"] = np.arange(len(star)) % 3
    ours, ref = star_text(star), StarWriter({"particles": star}).to_string()
    assert ours.splitlines()[1:] == ref.splitlines()[1:] and len(ours.splitlines()) > len(star)


def test_relion_star_round_trip(picks):
    df, paths = picks
    star = starfile.read(paths["star"])
    star = star["particles"] if isinstance(star, dict) else star
    assert (star["rlnTomoName"] == "tomo1").all()
    # centred Angstrom: (voxel - size / 2) * voxel size
    np.testing.assert_allclose(star["rlnCenteredCoordinateXAngst"], (df.x - 80 / 2) * 10)
    np.testing.assert_allclose(star["rlnCenteredCoordinateZAngst"], (df.z - 40 / 2) * 10)
    np.testing.assert_allclose(star["rlnCenteredCoordinateXAngst"] / 10 + 40, df.x)


def test_copick_json_and_ndjson(picks):
    df, paths = picks
    doc = json.load(open(paths["copick"]))
    assert doc["user_id"] == "picket" and doc["session_id"] == "gabor-kmeans-ws"
    p = doc["points"][0]
    assert p["location"] == {"x": 307.5, "y": 205.0, "z": 102.5} and np.array_equal(p["transformation_"], np.eye(4))
    lines = [json.loads(line) for line in open(paths["ndjson"])]
    assert lines[1] == {"type": "point", "location": {"x": 7.0, "y": 6.0, "z": 5.0}}
    np.testing.assert_allclose(read_points(paths["copick"], 10.0)[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy())


def test_copick_model_parses_it(picks):
    copick_models = pytest.importorskip("copick.models")
    _, paths = picks
    doc = json.load(open(paths["copick"]))
    doc["voxel_spacing"] = 10.0
    copick_models.CopickPicksFile(**doc)


def test_scores():
    truth = np.array([[10, 10, 10], [30, 30, 30], [50, 50, 50]], float)
    picks = np.array([[11, 10, 10], [30, 33, 30], [90, 90, 90]], float)
    s = score(picks, truth, (100, 100, 100), 5, truth_types=["a", "b", "b"])
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    assert s.recall_by_type == {"a": 1.0, "b": 0.5}
    assert 0 < s.relative_recall <= 1
    assert threshold_vox(100, (10.0, 10.0, 13.0)) == 8
    assert score(np.zeros((0, 3)), truth, (100, 100, 100), 5).f1 == 0


def test_one_to_one_scores_count_duplicates_as_false():
    truth = np.array([[10, 10, 10], [30, 30, 30], [50, 50, 50]], float)
    picks = np.array([[11, 10, 10], [9, 10, 10], [10, 12, 10], [30, 33, 30]], float)  # three on the first particle
    s = score(picks, truth, (100, 100, 100), 5)
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)  # the paper's rule: every pick is near a particle
    assert s.matched_precision == pytest.approx(2 / 4) and s.matched_recall == pytest.approx(2 / 3)
    assert s.matched_f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s.duplicates == 2
    empty = score(np.zeros((0, 3)), truth, (100, 100, 100), 5)
    assert empty.matched_f1 == 0 and empty.duplicates == 0


def test_one_to_one_matching_is_maximum_not_greedy():
    # the pick between two particles is nearer the first, which the second pick can only reach: nearest-first
    # pairing would match one; the maximum matching pairs both
    truth = np.array([[0, 0, 0], [0, 0, 8]], float)
    picks = np.array([[0, 0, 3.5], [0, 0, -4]], float)
    assert matched_pairs(picks, truth, 5) == 2
    assert matched_pairs(truth.copy(), truth, 5) == 2  # picks exactly on the particles (distance 0) match too
    assert score(picks, truth, (20, 20, 20), 5).matched_recall == 1.0
    rng = np.random.default_rng(3)
    for _ in range(20):  # never above the paper's rule, and symmetric in its arguments
        t, p = rng.uniform(0, 40, (30, 3)), rng.uniform(0, 40, (int(rng.integers(0, 60)), 3))
        s = score(p, t, (40, 40, 40), 6)
        assert s.matched_precision <= s.precision + 1e-12 and s.matched_recall <= s.recall + 1e-12
        assert matched_pairs(p, t, 6) == matched_pairs(t, p, 6)


def test_region_scores_equal_complete_truth_for_what_they_score():
    """``--region``: with the truth annotated only inside a box, precision over the picks at least the threshold
    inside it and recall over the particles at least the threshold inside it (no margin on the volume's faces) equal
    what the complete truth gives for those same picks and particles; the whole volume as the region is no region."""
    from picket_dask.evaluate import Region, within

    rng = np.random.default_rng(5)
    shape, thr = (40, 90, 90), 6
    for trial in range(12):
        truth = rng.uniform(-0.5, np.array(shape) - 0.5, (150, 3))
        picks = np.vstack([truth[rng.random(len(truth)) < 0.6] + rng.normal(0, 3, (1, 3)),
                           rng.uniform(-0.5, np.array(shape) - 0.5, (60, 3))])
        picks = np.clip(picks, -0.5, np.array(shape) - 0.51)  # picks lie in the volume
        lo = (0, int(rng.integers(0, 30)), int(rng.integers(0, 30)))  # z: the box meets the faces
        hi = (40, lo[1] + int(rng.integers(30, 60)), lo[2] + int(rng.integers(30, 60)))
        region = Region(lo, hi)
        annotated = truth[region.inside(truth)]
        s = score(picks, annotated, shape, thr, region=region)
        pe, te = region.inside(picks, thr, shape), region.inside(truth, thr, shape)
        assert s.n_picks == pe.sum() and s.n_truth == te.sum()
        assert s.precision == pytest.approx(within(picks[pe], truth, thr).mean() if pe.any() else 0.0)
        assert s.recall == pytest.approx(within(truth[te], picks, thr).mean() if te.any() else 0.0)
        assert s.matched_precision <= s.precision + 1e-12 and s.matched_recall <= s.recall + 1e-12
    whole = Region((0, 0, 0), shape)
    assert score(picks, truth, shape, thr, region=whole) == score(picks, truth, shape, thr)


def test_region_bad_bounds_are_one_line(tmp_path, capsys):
    from picket_dask.cli import main
    from picket_dask.evaluate import Region

    with pytest.raises(PicketError, match="is not a box"):
        Region.from_bounds((0, 50, 0, 10, 0, 10), (40, 90, 90))
    with pytest.raises(PicketError, match="leaves nothing to score"):
        score(np.zeros((1, 3)) + 20, np.zeros((1, 3)) + 20, (40, 90, 90), 6, region=Region((0, 20, 20), (40, 30, 30)))
    picks = tmp_path / "p.csv"
    pd.DataFrame({"x": [20.0], "y": [20.0], "z": [10.0]}).to_csv(picks, index=False)
    code = main(["evaluate", str(picks), "--truth", str(picks), "--shape", "40", "90", "90", "--voxel-size", "10",
                 "--region", "0", "40", "60", "30", "0", "90"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--region 0 40 60 30 0 90" in err
    assert main(["evaluate", str(picks), "--truth", str(picks), "--shape", "40", "90", "90", "--voxel-size", "10",
                 "--region", "0", "40", "0", "60", "0", "90", "--csv", str(tmp_path / "s.csv")]) == 0
    row = pd.read_csv(tmp_path / "s.csv").iloc[0]
    assert row["region_zzyyxx"] == "0 40 0 60 0 90" and row["precision"] == 1.0  # the CSV records how it was scored


def test_region_pr_curve_scores_the_box():
    """The precision-recall curve in a region: the same rule per cut; its last row is ``score``'s numbers."""
    from picket_dask.evaluate import Region, pr_curve

    rng = np.random.default_rng(8)
    shape, thr = (40, 90, 90), 6
    truth = rng.uniform(-0.5, np.array(shape) - 0.5, (120, 3))
    picks = np.vstack([truth[::2] + 1.0, rng.uniform(0, 80, (40, 3))])
    region = Region((0, 10, 10), (40, 70, 70))
    annotated = truth[region.inside(truth)]
    c = pr_curve(picks, rng.random(len(picks)), annotated, thr, region, shape)
    s = score(picks, annotated, shape, thr, region=region)
    assert c.precision.iloc[-1] == pytest.approx(s.precision) and c.recall.iloc[-1] == pytest.approx(s.recall)
    assert c.recall.is_monotonic_increasing


def test_reference_yaml_is_mapped(tmp_path):
    ref = {
        "dataset_name": "ds", "inputs": [{"tomogram": "a.mrc", "lower_z-slice_limit": 20, "upper_z-slice_limit": 80}],
        "neighborhood_size": 5, "max_num_neighborhoods_for_fitting": 250000,
        "feature_extraction_params": [{"mode": "gabor", "num_sinusoids": 8, "num_output_features": 32}, {"mode": "ffts"}],
        "clustering_methods": ["kmeans", "gmm"],
        "particle_extraction_params": [{"mode": "connected_component_labeling"}, {"mode": "watershed_segmentation", "min_distance": 10}],
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "s1.yaml").write_text(yaml.safe_dump(ref))
    cfg = load_config(tmp_path / "s1.yaml")
    assert cfg.tomograms == ["a.mrc"] and cfg.segment.z_fit == (20, 80) and cfg.segment.max_fit_voxels == 250000
    assert cfg.segment.num_sinusoids == 8 and cfg.segment.num_gabor_features == 32
    assert cfg.localize.min_distance_vox == 10 and len(cfg.workflows) == 8 and "ffts-gmm-ws" in cfg.workflows


def test_reference_yaml_errors():
    with pytest.raises(PicketError, match="unknown key"):
        from_reference({"inputs": [], "bogus": 1})
    with pytest.raises(PicketError, match="feature mode"):
        from_reference({"feature_extraction_params": {"mode": "wavelets"}})
    with pytest.raises(PicketError, match="different z-slice"):
        from_reference({"inputs": [{"tomogram": "a", "lower_z-slice_limit": 1}, {"tomogram": "b", "lower_z-slice_limit": 2}]})


def test_own_yaml_and_unknown_workflow(tmp_path):
    (tmp_path / "r.yaml").write_text("workflows: [all]\nsegment: {max_fit_voxels: 1000}\n")
    assert len(load_config(tmp_path / "r.yaml").workflows) == 12
    (tmp_path / "bad.yaml").write_text("workflows: [gabor-kmeans-xx]\n")
    with pytest.raises(PicketError, match="unknown workflow"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("chunk: 64\n")
    with pytest.raises(PicketError, match="chunk"):
        load_config(tmp_path / "bad2.yaml")


def test_unquoted_off_in_yaml_is_off(tmp_path):
    """`context: off` written unquoted reaches the config as a YAML boolean; auto|off switches take it as
    meant (False -> off, True -> auto), other choices still refuse a boolean."""
    from picket_dask.errors import PicketError

    p = tmp_path / "run.yaml"
    p.write_text("segment:\n  lamella: off\n  nodata: no\nlocalize:\n  context: off\n  shells: on\n")
    cfg = load_config(p)
    assert (cfg.segment.lamella, cfg.segment.nodata, cfg.localize.context, cfg.localize.shells) == ("off", "off", "off", "auto")
    p.write_text("segment:\n  kmeans_cut: off\n")
    with pytest.raises(PicketError, match="kmeans_cut"):
        load_config(p)


def test_star_reader_equals_starfile(tmp_path):
    """read_star_particles (pandas' parser on the files star_text writes) gives starfile's frame; other layouts
    (an optics block first, another first column) go to starfile itself."""
    from picket_dask.io.picks import read_star_particles, star_frame, write_star_frame

    rng = np.random.default_rng(0)
    for n in (0, 1, 300):
        for names in (["TS_01"], ["TS 01"], ["a", "b b", "c"]):
            star = pd.concat([star_frame(picks_frame(rng.uniform(0, 100, (n, 3)), (10.0, 10.0, 13.7), rng.integers(1, 99, n),
                                                     None, rng.normal(size=n), rng.normal(size=n)), nm, (40, 60, 80),
                                         (10.0, 10.0, 13.7)) for nm in names], ignore_index=True)
            f = write_star_frame(star, tmp_path / "p.star")
            pd.testing.assert_frame_equal(read_star_particles(f), starfile.read(f, always_dict=True)["particles"])
    optics = {"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [10.0]}),
              "particles": pd.DataFrame({"rlnTomoName": ["t"], "rlnCoordinateX": [1.5]})}
    other = {"particles": pd.DataFrame({"rlnCoordinateX": [1.5, 2.0], "rlnMicrographName": ["m", "n"]})}
    for i, doc in enumerate((optics, other)):
        starfile.write(doc, tmp_path / f"o{i}.star", overwrite=True)
        pd.testing.assert_frame_equal(read_star_particles(tmp_path / f"o{i}.star"), doc["particles"])
