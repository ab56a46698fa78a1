"""The notebooks run top to bottom on tiny data and a tiny training run (slow: `make test-full`)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sinterlab.study.training import run_experiment

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    """Run one notebook with the venv's ``python3`` kernel in notebooks/; raises on any error."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    stale = [c for c in notebook.cells if c.cell_type == "code" and c.outputs]
    assert not stale, f"{name} is committed with outputs; clear them"
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def image_outputs(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_data_and_preprocessing.ipynb", "02_results.ipynb"])
def test_notebook_runs_on_tiny_data(name, tiny_descriptor, make_cfg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    if name.startswith("02"):
        run_experiment(make_cfg(), run_dir)
    # the kernel inherits this process's environment
    monkeypatch.setenv("SINTERLAB_DESCRIPTOR", str(tiny_descriptor))
    monkeypatch.setenv("SINTERLAB_RUN_DIR", str(run_dir))
    notebook = execute(name)
    assert image_outputs(notebook) >= 1, f"{name} produced no image"
