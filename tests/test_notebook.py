import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_market_data_notebook_runs_on_a_fresh_store(demo_home, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(demo_home))
    nb = nbformat.read(NOTEBOOKS / "01_market_data.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3
    text = "".join(o.get("text", "") for o in outputs)
    assert "bars_1d" in text and "ok" in text
    assert os.environ["EMP_HOME"] == str(demo_home)


@pytest.mark.slow
def test_sensory_notebook_runs_on_the_demo_store(demo_home, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(demo_home))
    nb = nbformat.read(NOTEBOOKS / "02_sensory.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "WARNING" in text or "ok" in text
    assert "fused" in text
