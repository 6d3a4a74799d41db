"""The example notebooks run top to bottom: composing, validating and running a variant; and reusing
the components on a dataset of another shape, channel count and class list, to a served model."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.datasets import small_splits, write_png_tree

pytestmark = pytest.mark.slow  # trains a model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_compose_pipeline_notebook_executes(tmp_path, monkeypatch):
    data = write_png_tree(tmp_path / "data", small_splits(train_per_class=10, test_per_class=4))
    monkeypatch.setenv("MNIST_MLOPS_NOTEBOOK_DATA", str(data))
    monkeypatch.setenv("MNIST_MLOPS_NOTEBOOK_WORK", str(tmp_path / "work"))
    outputs = executed_outputs("compose_pipeline.ipynb", tmp_path)
    assert "valid" in outputs and "epochs=500" in outputs
    assert (tmp_path / "work" / "runs" / ".cache").is_dir()
    assert os.environ["MNIST_MLOPS_NOTEBOOK_WORK"] == str(tmp_path / "work")


def test_reuse_notebook_serves_a_colour_model_that_answers_with_class_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MLOPS_NOTEBOOK_WORK", str(tmp_path / "work"))
    outputs = executed_outputs("reuse_other_dataset.ipynb", tmp_path)
    assert "dataset: [32, 32, 3] ['apple', 'bread', 'cheese', 'dates', 'eggs']" in outputs
    assert "model blessed" in outputs and "deployed shop-products v1" in outputs
    answers = [line for line in outputs.splitlines() if "/testing/" in line and " -> " in line]
    assert len(answers) == 6
    correct = [line for line in answers if f"/testing/{line.split(' -> ')[1].split()[0]}/" in line]
    assert len(correct) >= 5, answers


def executed_outputs(name: str, folder: Path) -> str:
    """Run the notebook in `folder`; everything its code cells printed."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
