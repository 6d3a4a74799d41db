"""What the nodes log to MLflow: queried from a real SQLite tracking store after a small pipeline run, its
cached rerun and a run with tracking off, and after ingest refuses a dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from conftest import mlflow_ui
from mnist_mlops.cli import main
from mnist_mlops.components.evaluate.executor import metric_names
from mnist_mlops.pipelines.local import PIPELINE
from mnist_mlops.tracking import STANDALONE_EXPERIMENT, TRACKING_SWITCH


def test_class_names_become_metric_keys_mlflow_accepts_and_no_two_classes_share(tmp_path):
    assert metric_names(["0", "cat", "red fox", "a-b.c"]) == ["0", "cat", "red fox", "a-b.c"]
    clashing = metric_names(["a/b", "a:b", "ä?", "ok"])
    assert clashing == ["0_a_b", "1_a_b", "2_ä_", "3_ok"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("keys"))
    client.log_batch(run.info.run_id, metrics=[Metric(f"recall_{name}", 1.0, 0, 0) for name in clashing])
    assert set(client.get_run(run.info.run_id).data.metrics) == {f"recall_{name}" for name in clashing}


def test_ingest_refusing_a_dataset_records_why_on_its_run(tmp_path, png_dataset):
    (png_dataset / "mnist_png" / "training" / "3" / "broken.png").write_bytes(b"not a png")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "mnist_mlops.cli", "ingest", "--source-uri", str(png_dataset)]
    command += ["--dataset", str(tmp_path / "dataset"), "--data-report", str(tmp_path / "data_report.json")]
    result = subprocess.run(
        command, env=_environment(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "invalid_files" in result.stderr and not (tmp_path / "data_report.json").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(STANDALONE_EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["validation_outcome"] == "fail" and run.data.tags["check.invalid_files"] == "fail"
    assert run.data.metrics["invalid_count"] == 1 and run.data.metrics["training_count"] == 60
    (source,) = run.inputs.dataset_inputs
    version = {tag.key: tag.value for tag in source.tags}["dataset_version"]
    assert source.dataset.digest == version[:16] and source.dataset.source_type == "local"


@pytest.mark.slow
def test_a_run_and_its_cached_rerun_read_whole_in_mlflow_and_tracking_off_logs_nothing(
    deployed_run, capsys, rendered_page
):
    registry, runs_dir, first = deployed_run.registry, deployed_run.runs, deployed_run.record
    client = MlflowClient(registry)
    experiment = client.get_experiment_by_name(PIPELINE).experiment_id
    nodes = _children(client, experiment, first["run_id"])
    assert set(nodes) == {node["name"] for node in first["nodes"]}
    assert {run.info.status for run in nodes.values()} == {"FINISHED"}

    train = nodes["train"]
    history = client.get_metric_history(train.info.run_id, "val_accuracy")
    epochs = next(node for node in first["nodes"] if node["name"] == "train")["parameters"]["epochs"]
    assert sorted(metric.step for metric in history) == list(range(1, int(epochs) + 1))
    assert {"learning_rate", "batch_size", "epochs", "seed"} <= set(train.data.params)
    assert train.data.tags["dataset_version"] == first["lineage"]["dataset_version"]
    assert {"environment_hash", "code_version"} <= set(train.data.tags)
    assert "images_per_second" in train.data.metrics
    assert _artifacts(client, train) >= {"training_curves.png"}

    version = first["lineage"]["dataset_version"]
    for node, context in (("ingest", "source"), ("preprocess", "training")):
        (dataset,) = nodes[node].inputs.dataset_inputs
        assert dataset.dataset.digest == version[:16], node
        assert {tag.key: tag.value for tag in dataset.tags}["mlflow.data.context"] == context
    ingest = nodes["ingest"]
    assert ingest.data.tags["validation_outcome"] in ("pass", "warn")
    training_images = len(list(deployed_run.data.glob("*/training/*/*.png")))
    assert ingest.data.metrics["training_count"] == training_images
    assert ingest.data.metrics["invalid_fraction"] == 0
    assert _artifacts(client, ingest) == {"data_report.json"}
    manifest = json.loads(
        (runs_dir / first["run_id"] / "preprocess" / "preprocessed" / "manifest.json").read_text()
    )
    assert nodes["preprocess"].data.metrics["validation_count"] == manifest["splits"]["validation"]["count"]

    evaluate = nodes["evaluate"]
    blessing = json.loads((deployed_run.run_dir / "evaluate" / "blessing.json").read_text())
    assert evaluate.data.tags["blessed"] == str(blessing["blessed"]).lower()
    assert evaluate.data.metrics["blessed"] == int(blessing["blessed"])
    assert "reason.min_accuracy" in evaluate.data.tags and "recall_7" in evaluate.data.metrics
    assert _artifacts(client, evaluate) >= {"confusion_matrix.png", "misclassified.png", "model_card.md"}

    with mlflow_ui(registry) as ui:
        page = f"{ui}/#/experiments/{experiment}/runs/{train.info.run_id}"
        charts = rendered_page(f"{page}/model-metrics", 'class="main-svg"')
        curves = rendered_page(f"{page}/artifacts/training_curves.png", '<img alt="training_curves.png"')
    assert "val_accuracy" in charts and 'class="main-svg"' in charts, "no metric chart on the run page"
    assert '<img alt="training_curves.png" src="blob:' in curves, "no training-curves image on the run page"

    # the shared run's registry may have served requests since (test_lineage): resolve_champion and the
    # nodes after it may run again, the nodes before them come from the cache whatever ran in between
    rerun = _run(deployed_run.argv, runs_dir)
    reused = _children(client, experiment, rerun["run_id"])
    cached = {entry["name"] for entry in rerun["nodes"] if entry["status"] == "cached"}
    assert {"ingest", "preprocess", "train"} <= cached
    for name in cached:
        tags = reused[name].data.tags
        assert tags["mnist_mlops.status"] == "cached", name
        assert tags["mnist_mlops.reused_run_id"] == nodes[name].info.run_id, name

    before = len(client.search_runs([experiment]))
    _run(deployed_run.argv, runs_dir, "--tracking", "off")
    assert len(client.search_runs([experiment])) == before


def _run(argv: tuple[str, ...], runs_dir: Path, *options: str) -> dict:
    """`mnist-mlops run` again with `argv`; returns the new run's record (run.json)."""
    known = set(runs_dir.iterdir())
    assert main([*argv, *options]) == 0
    (run_dir,) = set(runs_dir.iterdir()) - known
    return json.loads((run_dir / "run.json").read_text())


def _children(client: MlflowClient, experiment: str, run_name: str) -> dict:
    """The node runs under the pipeline run named `run_name`, by node name."""
    (parent,) = client.search_runs([experiment], f"attributes.run_name = '{run_name}'")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {run.info.run_name: run for run in children}


def _artifacts(client: MlflowClient, run) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run.info.run_id)}


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow's or the tracking switch's variables (an earlier test's
    `mlflow.set_tracking_uri` sets MLFLOW_TRACKING_URI here), plus `extra`."""
    kept = {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", TRACKING_SWITCH))
    }
    return kept | extra
