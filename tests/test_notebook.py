"""The quickstart notebook runs headless, top to bottom."""

from pathlib import Path

import pytest

NB = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PICKET_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("PICKET_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "dashboard:" in outputs and "copick points" in outputs and "gabor-gmm-ws.star" in outputs  # collected
