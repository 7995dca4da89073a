"""report: OUT/report.html, every tomogram's preview with its summary row, the noted ones first (report.py)."""

import json
import os
import shutil

import pytest

from picket_dask.cli import main
from picket_dask.report import report
from picket_dask.workflows import run

WF = "intensities-kmeans-cc"


@pytest.fixture(scope="module")
def batch(tmp_path_factory, sim_tiny):
    """Two tomograms run into one --out."""
    data = tmp_path_factory.mktemp("inputs")
    out = tmp_path_factory.mktemp("out")
    for name in ("TS_01", "TS_02"):
        shutil.copy(sim_tiny["tomogram"], data / f"{name}.mrc")
        run(data / f"{name}.mrc", out, [WF], chunks=32, max_fit_voxels=20_000)
    return out


def test_report_cards_previews_and_order(batch, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(batch, out)
    doc = json.loads((out / "TS_02" / "run.json").read_text())
    doc["n_picks"][WF] = 0  # as a tomogram whose run found nothing: its summary row has the note "no picks"
    (out / "TS_02" / "run.json").write_text(json.dumps(doc))
    page = report(out).read_text()
    pngs = [out / n / f"preview-{WF}.png" for n in ("TS_01", "TS_02")]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert 'src="TS_01/preview-intensities-kmeans-cc.png"' in page and 'src="TS_02/preview-' in page
    assert page.index('id="TS_02"') < page.index('id="TS_01"')  # the noted card first
    assert '<p class="note">no picks</p>' in page and "2 of 2 tomogram folders" in page and page.count("<tr>") == 3
    assert "&quot;picket-dask&quot;:" in page and "&quot;seconds&quot;:" in page  # versions and time of the page
    stamps = [p.stat().st_mtime_ns for p in pngs]
    report(out)
    assert [p.stat().st_mtime_ns for p in pngs] == stamps  # drawn once
    csv = out / "TS_01" / "picks" / f"{WF}.csv"
    os.utime(csv, ns=(stamps[0] + 10**9, stamps[0] + 10**9))  # picks newer than the preview: drawn again
    report(out)
    assert pngs[0].stat().st_mtime_ns != stamps[0] and pngs[1].stat().st_mtime_ns == stamps[1]
    shutil.rmtree(out / "TS_01" / "TS_01.zarr")
    assert "no preview: the tomogram's image is not in its folder" in report(out, redraw=True).read_text()


def test_report_bad_input(batch, capsys):
    assert main(["report", str(batch / "TS_01")]) == 2
    assert "is one tomogram's folder" in capsys.readouterr().err
    assert main(["report", str(batch), "--workflow", "gabor-gmm-ws"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no picks in" in err and WF in err
    assert not (batch / "report.html").exists()


def test_report_shows_the_classes_of_current_picks(batch, tmp_path):
    """A classified tomogram's card holds its class gallery and the junk count; classes of earlier picks are named
    as such (the report does not show a gallery of other picks)."""
    import pandas as pd

    from picket_dask.classify import classify_picks

    out = tmp_path / "out"
    shutil.copytree(batch, out)
    res = classify_picks(out / "TS_01", WF, classes=2)
    cls = pd.read_csv(res.out / "picks.csv", comment="#")
    page = report(out).read_text()
    assert f'src="TS_01/classes/{WF}/gallery.png"' in page and "TS_02/classes" not in page
    assert f"classes: {int(cls.junk.astype(str).str.lower().isin(('true', '1')).sum())} of {len(cls)} picks flagged junk" in page
    cls.iloc[:-1].to_csv(res.out / "picks.csv", index=False)  # as if the workflow had run again with other picks
    assert "classes: of earlier picks" in report(out).read_text()
