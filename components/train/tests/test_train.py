"""train on small, learnable data: outputs, reproducibility, multi-worker, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import free_port
from mnist_mlops import contracts
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.errors import UserInputError
from mnist_mlops.tracking import TRACKING_SWITCH
from tests.datasets import small_splits
from tests.models import preprocessed_digits

pytestmark = pytest.mark.slow  # trains models or starts servers

SMALL = {"epochs": 10, "batch_size": 16, "learning_rate": 0.003}


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocessed_digits(
        tmp_path_factory.mktemp("train-data"), small_splits(train_per_class=24, test_per_class=6)
    )


def train_into(folder: Path, preprocessed: Path, **options) -> dict:
    return run_train(
        preprocessed,
        folder / "model",
        folder / "training_summary.json",
        folder / "curves.png",
        **(SMALL | options),
    )


def test_outputs_are_an_mlflow_model_a_summary_and_curves(tmp_path, preprocessed):
    import mlflow.pyfunc

    summary = train_into(tmp_path, preprocessed)
    assert contracts.read_json(tmp_path / "training_summary.json", "training_summary") == json.loads(
        json.dumps(summary)
    )
    assert len(summary["history"]) == 10 and summary["distributed"]["strategy"] == "default"
    assert summary["metrics"]["val_accuracy"] >= 0.9, summary["history"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    signature = model.metadata.signature.inputs.inputs[0]
    assert signature.type == np.dtype(np.uint8) and signature.shape == (-1, 28, 28)
    test = np.load(preprocessed / "test" / "images.npy")
    probabilities = model.predict(test)
    assert probabilities.shape == (len(test), 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    labels = np.load(preprocessed / "test" / "labels.npy")
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9


def test_same_seed_same_model_other_seed_another(tmp_path, preprocessed):
    first = train_into(tmp_path / "a", preprocessed, seed=5)
    second = train_into(tmp_path / "b", preprocessed, seed=5)
    third = train_into(tmp_path / "c", preprocessed, seed=6)
    losses = [[row["loss"] for row in run["history"]] for run in (first, second, third)]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]
    weights = [saved_weights(tmp_path / name / "model") for name in "abc"]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(weights[0], weights[2], strict=True))


def saved_weights(model: Path) -> list[np.ndarray]:
    """The weights as saved in the MLflow model: what a rerun with the same seed must repeat bit for bit."""
    import mlflow.tensorflow

    return mlflow.tensorflow.load_model(str(model)).get_weights()


def test_two_workers_on_loopback_train_together_and_only_the_chief_writes(tmp_path, preprocessed):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    store = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    job_run = store.create_run(store.create_experiment("train")).info.run_id
    processes = []
    for index in range(2):
        out = tmp_path / f"worker{index}"
        env = os.environ | {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # as on Azure ML, every worker is started on the job's one run
            "MLFLOW_TRACKING_URI": store.tracking_uri,
            "MLFLOW_RUN_ID": job_run,
            TRACKING_SWITCH: "on",
        }
        code = (
            "from mnist_mlops.components.train.executor import run_train; "
            f"run_train({str(preprocessed)!r}, {str(out / 'model')!r}, {str(out / 's.json')!r}, "
            f"{str(out / 'c.png')!r}, epochs=2, batch_size=16)"
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    summary = contracts.read_json(tmp_path / "worker0" / "s.json", "training_summary")
    assert summary["distributed"] == {
        "strategy": "MultiWorkerMirroredStrategy",
        "worker_count": 2,
        "is_chief": True,
    }
    assert summary["hyperparameters"]["batch_size"] == 32
    assert (tmp_path / "worker0" / "model" / "MLmodel").is_file()
    assert not (tmp_path / "worker1").exists()
    history = store.get_metric_history(job_run, "val_accuracy")
    assert sorted(metric.step for metric in history) == [1, 2]  # the chief's epochs, logged once


def test_bad_input_is_named(tmp_path, preprocessed, monkeypatch):
    with pytest.raises(UserInputError, match="fewer than one batch"):
        train_into(tmp_path, preprocessed, batch_size=4096)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserInputError, match="TF_CONFIG"):
        train_into(tmp_path, preprocessed)
    assert not (tmp_path / "model").exists()
