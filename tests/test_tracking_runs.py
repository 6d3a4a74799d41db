"""The runner's MLflow runs: a parent per pipeline run, a child per node that gets what the node's process
logged (through its outbox, or attached to the run directly as on Azure ML), statuses from exit codes,
cached nodes linked to the run that produced them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mnist_mlops.errors import UserInputError
from mnist_mlops.tracking import OUTBOX, OUTBOX_CALLS, TRACKING_SWITCH, NodeRun, PipelineRuns, node_run

NODE_SCRIPT = """
from mnist_mlops.tracking import node_run
with node_run("train") as run:
    run.params({"epochs": 2})
    for epoch, accuracy in enumerate([0.5, 0.75], start=1):
        run.metrics({"val_accuracy": accuracy}, step=epoch)
    run.dataset("/data/mnist", "ab" * 32, "training", {"image_shape": "28x28"})
    run.artifact(__import__("sys").argv[2], folder="figures", name="curves.png")
raise SystemExit(int(__import__("sys").argv[1]))
"""


@pytest.fixture
def runs(tmp_path) -> PipelineRuns:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return PipelineRuns(uri, "mnist_mlops_training", "20261207-run", {"mnist_mlops.run_dir": str(tmp_path)})


def run_node(
    runs: PipelineRuns, node_run_id: str, exit_code: int, *, direct: bool = False, **extra: str
) -> int:
    """The node's process, started as the runner starts it: on its own run through the environment;
    `direct`: without the outbox, attached to its run as on Azure ML."""
    environment = {**runs.environment(node_run_id), **extra}
    if direct:
        del environment[OUTBOX]
    figure = Path(environment["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).with_name("figure.bin")
    figure.write_bytes(b"\x89PNG figure")
    command = [sys.executable, "-c", NODE_SCRIPT, str(exit_code), str(figure)]
    code = subprocess.run(command, env={**_base_environment(), **environment}, check=False).returncode
    runs.finish(node_run_id, succeeded=code == 0)
    return code


def _base_environment() -> dict[str, str]:
    import os

    return {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", TRACKING_SWITCH))
    }


@pytest.mark.parametrize("direct", [False, True], ids=["through its outbox", "directly"])
def test_a_node_logs_into_its_child_run_and_the_runner_sets_its_status(runs, direct):
    train = runs.start_node("train", "mnist_mlops_train", "k" * 64)
    assert run_node(runs, train, 0, direct=direct) == 0
    client = MlflowClient(runs.uri)
    run = client.get_run(train)
    assert run.info.status == "FINISHED" and run.info.run_name == "train"
    assert run.data.tags["mlflow.parentRunId"] == runs.run_id
    assert run.data.params == {"epochs": "2"}
    history = client.get_metric_history(train, "val_accuracy")
    assert [(point.step, point.value) for point in history] == [(1, 0.5), (2, 0.75)]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == "ab" * 8 and {tag.key for tag in dataset.tags} >= {"dataset_version"}
    (figure,) = client.list_artifacts(train, "figures")
    assert figure.path == "figures/curves.png" and figure.file_size == len(b"\x89PNG figure")
    assert len(client.search_experiments()) == 2  # Default and the pipeline's: the node made none


def test_a_failed_node_is_failed_whatever_its_process_set(runs):
    evaluate = runs.start_node("evaluate", "mnist_mlops_evaluate", "e" * 64)
    outbox = Path(runs.environment(evaluate)[OUTBOX])
    assert run_node(runs, evaluate, 3) == 3
    run = MlflowClient(runs.uri).get_run(evaluate)
    assert run.info.status == "FAILED"
    assert run.data.params == {"epochs": "2"}  # what it logged before it failed is kept
    assert not outbox.exists()


def test_tracking_off_logs_nothing(runs):
    train = runs.start_node("train", "mnist_mlops_train", "k" * 64)
    assert run_node(runs, train, 0, **{TRACKING_SWITCH: "off"}) == 0
    run = MlflowClient(runs.uri).get_run(train)
    assert not run.data.params and not run.data.metrics and not run.inputs.dataset_inputs


def test_a_cached_node_is_a_finished_child_linked_to_the_run_that_produced_it(runs, tmp_path):
    producer = runs.start_node("train", "mnist_mlops_train", "c" * 64)
    run_node(runs, producer, 0)
    rerun = PipelineRuns(runs.uri, "mnist_mlops_training", "20261207-rerun", {})
    rerun.cached_node("train", "mnist_mlops_train", "c" * 64, None)
    client = MlflowClient(runs.uri)
    (cached,) = client.search_runs(
        [rerun.experiment_id], f"tags.mlflow.parentRunId = '{rerun.run_id}'", max_results=5
    )
    assert cached.info.status == "FINISHED"
    assert cached.data.tags["mnist_mlops.status"] == "cached"
    assert cached.data.tags["mnist_mlops.reused_run_id"] == producer
    assert cached.data.metrics == {"val_accuracy": 0.75}


def test_a_tracking_store_that_cannot_be_reached_is_a_clear_error(tmp_path):
    with pytest.raises(
        UserInputError, match=r"MLflow tracking at http://127.0.0.1:9/ does not answer .*--tracking off"
    ):
        PipelineRuns("http://127.0.0.1:9/", "mnist_mlops_training", "run", {})


def test_a_component_run_on_its_own_without_a_tracking_uri_logs_nowhere(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with node_run("train") as run:
        assert not run.active
        run.metrics({"accuracy": 1.0})


def test_an_outbox_of_any_size_reaches_the_run_whole_and_in_order(runs):
    train = runs.start_node("train", "mnist_mlops_train", "b" * 64)
    node = NodeRun(None, Path(runs.environment(train)[OUTBOX]))
    node.tags({f"tag{index}": index for index in range(250)})  # past MLflow's 100 per batch
    for step in range(2500):  # past its 1000 metrics per batch
        node.metrics({"loss": 1 / (step + 1)}, step=step)
    runs.finish(train, succeeded=True)
    client = MlflowClient(runs.uri)
    assert {f"tag{index}" for index in range(250)} <= set(client.get_run(train).data.tags)
    history = client.get_metric_history(train, "loss")
    assert [point.step for point in history] == list(range(2500))
    assert all(point.timestamp > 0 for point in history)


def test_a_param_logged_again_with_another_value_fails_as_on_azure_ml(runs):
    train = runs.start_node("train", "mnist_mlops_train", "p" * 64)
    node = NodeRun(None, Path(runs.environment(train)[OUTBOX]))
    node.params({"epochs": 2})
    node.params({"epochs": 2})  # the same value again is fine
    node.params({"epochs": 3})
    with pytest.raises(UserInputError, match="params cannot change: epochs"):
        runs.finish(train, succeeded=True)


def test_a_node_killed_while_writing_its_outbox_keeps_its_own_failure(runs):
    evaluate = runs.start_node("evaluate", "mnist_mlops_evaluate", "f" * 64)
    outbox = Path(runs.environment(evaluate)[OUTBOX])
    NodeRun(None, outbox).metrics({"accuracy": 0.5})
    with open(outbox / OUTBOX_CALLS, "a") as calls:
        calls.write('{"kind": "metr')  # cut short
    runs.finish(evaluate, succeeded=False)
    run = MlflowClient(runs.uri).get_run(evaluate)
    assert run.info.status == "FAILED" and run.data.metrics == {"accuracy": 0.5}
