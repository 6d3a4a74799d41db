"""The Kubeflow Pipelines target: components generated from spec.yaml, the graph rendered as a KFP
pipeline, and that pipeline run end to end under kfp.local's DockerRunner in the job images, through
podman's Docker-compatible API, against a real `mlflow server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import free_port
from mnist_mlops import containers, contracts
from mnist_mlops.deployments import production_version
from mnist_mlops.pipelines.graph import Ref, apply_overrides
from mnist_mlops.pipelines.kfp import (
    PIPELINE_FILE,
    command_arguments,
    compile_kfp,
    component,
    job_image,
    kfp_graph,
    training_pipeline_function,
)
from mnist_mlops.ports import load_spec
from mnist_mlops.registry import client
from tests.datasets import make_tarball, small_splits, write_png_tree

LENIENT = {
    "schema_version": 1,
    "min_accuracy": 0.2,
    "min_class_recall": 0.0,
    "max_regression": 1.0,
    "max_p99_latency_ms": 1000.0,
}
MODEL = "kfp-mnist"
"""A model name of its own on the session's shared tracking server."""
SPEC = {
    "name": "example",
    "inputs": {
        "data": {"type": "uri_folder"},
        "count": {"type": "integer", "default": 3},
        "label": {"type": "string", "optional": True},
    },
    "outputs": {"result": {"type": "uri_file"}},
    "command": "run --inputs data='${{inputs.data}}' count='${{inputs.count}}' $[[label='${{inputs.label}}']]"
    " --outputs result='${{outputs.result}}'",
}


def test_the_spec_command_becomes_kfp_placeholders_by_port_type():
    assert command_arguments(SPEC) == [
        "run",
        "--inputs",
        {"concat": ["data=", {"inputPath": "data"}]},
        {"concat": ["count=", {"inputValue": "count"}]},
        {"if": {"cond": {"isPresent": "label"}, "then": [{"concat": ["label=", {"inputValue": "label"}]}]}},
        "--outputs",
        {"concat": ["result=", {"outputPath": "result"}]},
    ]


@pytest.mark.parametrize("stage", ["ingest", "train", "evaluate", "deploy"])
def test_a_generated_component_takes_the_spec_ports_with_their_defaults(stage):
    spec = load_spec(stage)
    ported = component(stage, "localhost/example:1").component_spec
    assert list(ported.inputs) == list(spec["inputs"]) and list(ported.outputs) == list(spec["outputs"])
    for name, port in spec["inputs"].items():
        assert ported.inputs[name].default == port.get("default"), name
        assert ported.inputs[name].optional == ("default" in port or bool(port.get("optional"))), name
    container = ported.implementation.container
    assert container.image == "localhost/example:1"
    assert container.command[:5] == ["python", "-m", "mnist_mlops.kfp_executor", "{{$}}", "--"]
    assert container.command[5:7] == ["mldesigner", "execute"], "the spec's own command"


def test_the_ir_has_the_graphs_tasks_edges_images_and_caching(tmp_path):
    path = compile_kfp(tmp_path / "out", registry="example.azurecr.io/")
    assert [entry.name for entry in path.parent.iterdir()] == [PIPELINE_FILE]
    ir = yaml.safe_load(path.read_text())
    tasks = ir["root"]["dag"]["tasks"]
    graph = kfp_graph()
    assert set(tasks) == {node.name.replace("_", "-") for node in graph} | {"importer"}
    edges = {
        (source["producerTask"], source["outputArtifactKey"], consumer, port)
        for consumer, task in tasks.items()
        for port, binding in task.get("inputs", {}).get("artifacts", {}).items()
        if (source := binding.get("taskOutputArtifact"))
    }
    expected = {
        (value.node.replace("_", "-"), value.output, node.name.replace("_", "-"), port)
        for node in graph
        for port, value in node.inputs.items()
        if isinstance(value, Ref)
    }
    assert edges == expected | {("importer", "artifact", "ingest", "source_data")}
    images = {stage: job_image(stage, "example.azurecr.io/") for stage in ("ingest", "train")}
    assert images["ingest"].startswith("example.azurecr.io/mnist-mlops-data-job:")
    assert images["train"].startswith("example.azurecr.io/mnist-mlops-model-job:")
    by_environment = {containers.environment_of(stage): image for stage, image in images.items()}
    for node in graph:
        task = tasks[node.name.replace("_", "-")]
        image = by_environment[containers.environment_of(node.component)]
        spec = load_spec(node.component)
        assert task.get("cachingOptions", {}).get("enableCache", False) == spec["is_deterministic"], node.name
        executor = ir["deploymentSpec"]["executors"][task["componentRef"]["name"].replace("comp-", "exec-")]
        assert executor["container"]["image"] == image, node.name
        assert "pip install" not in " ".join(executor["container"]["command"]), (
            "nothing is installed at start"
        )
    run_id = tasks["register"]["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"]["constant"]
    assert run_id == "{{$.pipeline_job_name}}"
    assert ir["root"]["inputDefinitions"]["parameters"]["raw_data"]["parameterType"] == "STRING"


def test_an_image_registry_must_be_a_prefix(tmp_path):
    with pytest.raises(Exception, match="ending in '/'"):
        compile_kfp(tmp_path, registry="example.azurecr.io")


def _executor_input(tmp_path: Path) -> dict:
    return {
        "outputs": {
            "artifacts": {
                "report": {
                    "artifacts": [
                        {
                            "name": "report",
                            "uri": str(tmp_path / "task" / "report"),
                            "type": {},
                            "metadata": {},
                        }
                    ]
                }
            },
            "outputFile": str(tmp_path / "task" / "executor_output.json"),
        }
    }


def _launch(executor_input: dict, command: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mnist_mlops.kfp_executor", json.dumps(executor_input), "--"]
    return subprocess.run([*argv, "sh", "-c", command], capture_output=True, text=True, check=False)


def test_the_launcher_reports_the_output_artifacts_after_the_command_succeeds(tmp_path):
    executor_input = _executor_input(tmp_path)
    report = tmp_path / "task" / "report"
    result = _launch(executor_input, f"echo done > {report}")  # the parent folder exists already
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "task" / "executor_output.json").read_text())
    assert written["artifacts"]["report"]["artifacts"][0]["uri"] == str(report)


def test_a_failing_command_keeps_its_exit_code_and_reports_nothing(tmp_path):
    assert _launch(_executor_input(tmp_path), "exit 3").returncode == 3
    assert not (tmp_path / "task" / "executor_output.json").exists()
    assert _launch({}, "true").returncode == 0
    bad = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.kfp_executor", "{not json", "--", "true"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not JSON" in bad.stderr


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.skipif(
    os.environ.get("MNIST_MLOPS_SKIP_CONTAINER_TESTS") == "1", reason="MNIST_MLOPS_SKIP_CONTAINER_TESTS=1"
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_pipeline_runs_in_the_job_images_under_kfp_local_and_finds_its_champion(
    tmp_path, docker_socket, mlflow_server, monkeypatch
):
    from kfp import local

    for stage in ("ingest", "train"):
        containers.build_job_image(containers.environment_of(stage))
    root = tmp_path / "kfp-root"  # kfp.local mounts the pipeline root into every task at the same path
    drop = root / "raw"
    drop.mkdir(parents=True)
    source = write_png_tree(tmp_path / "src", small_splits(train_per_class=12, test_per_class=4))
    make_tarball(source, drop / "mnist.tar.gz")
    (root / "kpis.json").write_text(json.dumps(LENIENT))
    nodes = kfp_graph()
    apply_overrides(
        nodes,
        [
            f"evaluate.thresholds={root / 'kpis.json'}",
            "train.batch_size=16",
            "preprocess.validation_fraction=0.25",
            "deploy.canary_count=8",
            "deploy.max_canary_p99_ms=1000",
            f"deploy.port={free_port()}",
            f"register.model_name={MODEL}",
            f"resolve_champion.model_name={MODEL}",
        ],
    )
    monkeypatch.setenv("DOCKER_HOST", docker_socket)
    local.init(runner=local.DockerRunner(network_mode="host"), pipeline_root=str(root), raise_on_error=True)
    pipeline = training_pipeline_function(nodes)

    pipeline(raw_data=str(drop), registry=mlflow_server, epochs=6)
    assert production_version(mlflow_server, MODEL) == "1"
    version = client(mlflow_server).get_model_version(MODEL, "1")
    assert version.tags["pipeline_run_id"].startswith("mnist-mlops-training-")
    (record,) = root.rglob("deploy/deployment_record")
    deployed = contracts.read_json(record, "deployment_record")
    assert (deployed["model_uri"], deployed["outcome"]) == (f"models:/{MODEL}/1", "deployed")

    pipeline(raw_data=str(drop), registry=mlflow_server, epochs=6)
    (first, second) = sorted(root.rglob("evaluation_report.json"), key=lambda path: path.stat().st_mtime)
    assert contracts.read_json(first, "evaluation_report")["champion"] is None
    assert contracts.read_json(second, "evaluation_report")["champion"]["version"] == "1"
    assert production_version(mlflow_server, MODEL) == "2"
