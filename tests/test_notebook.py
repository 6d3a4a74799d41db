"""The example notebook runs top to bottom: compose, validate, run locally, rerun from cache."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.datasets import small_splits, write_png_tree

pytestmark = pytest.mark.slow  # trains a model

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "compose_pipeline.ipynb"


def test_compose_pipeline_notebook_executes(tmp_path, monkeypatch):
    data = write_png_tree(tmp_path / "data", small_splits(train_per_class=10, test_per_class=4))
    monkeypatch.setenv("MNIST_MLOPS_NOTEBOOK_DATA", str(data))
    monkeypatch.setenv("MNIST_MLOPS_NOTEBOOK_WORK", str(tmp_path / "work"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "valid" in outputs and "epochs=500" in outputs
    assert (tmp_path / "work" / "runs" / ".cache").is_dir()
    assert os.environ["MNIST_MLOPS_NOTEBOOK_WORK"] == str(tmp_path / "work")
