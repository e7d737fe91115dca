import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "figures", "expected_text"), [
    ("01_market_data", 3, ("bars_1d", "ok")),
    ("02_sensory", 2, ("fused", "anomaly")),
    ("03_evolution", 2, ("training trials", "champion:")),
])
def test_notebook_runs_on_the_demo_store(demo_home, monkeypatch, name, figures, expected_text):
    monkeypatch.setenv("EMP_HOME", str(demo_home))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # the notebook's own kernel, the project's (make test and make notebooks install it into .venv)
    assert nb.metadata.kernelspec.name == "emp-predator"
    NotebookClient(nb, timeout=300, kernel_name=nb.metadata.kernelspec.name,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == figures
    text = "".join(o.get("text", "") for o in outputs)
    for fragment in expected_text:
        assert fragment in text
    assert os.environ["EMP_HOME"] == str(demo_home)
