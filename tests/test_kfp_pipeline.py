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
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.graph import Param, Ref, apply_overrides
from mnist_mlops.pipelines.kfp import (
    PIPELINE_FILE,
    command_arguments,
    compile_kfp,
    component,
    job_images,
    kfp_graph,
    training_pipeline_function,
)
from mnist_mlops.ports import load_metadata, load_spec
from mnist_mlops.provenance import CODE_VERSION_ENV
from mnist_mlops.registry import client
from mnist_mlops.snapshot import snapshot_files
from tests import models
from tests.datasets import make_tarball, small_splits, write_png_tree
from tests.test_kfp_reports import logged_confusion_matrix, logged_metrics

LENIENT = models.LENIENT | {"min_accuracy": 0.2}
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


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        ("run $[[--log '${{outputs.log}}']]", "output 'log' inside the optional block"),
        ("run $[[--label '${{inputs.label}}' --log '${{outputs.log}}']]", "output 'log'"),
        ("run --log '${{outputs.log}}' $[[--label '${{inputs.label}}']]", None),
    ],
)
def test_an_output_inside_an_optional_block_is_refused(command, refused):
    spec = {
        "name": "example",
        "inputs": {"label": {"type": "string", "optional": True}},
        "outputs": {"log": {"type": "uri_file"}},
        "command": command,
    }
    if refused is None:
        assert {"if": {"cond": {"isPresent": "label"}, "then": ["--label", {"inputValue": "label"}]}} in (
            command_arguments(spec)
        )
    else:
        with pytest.raises(UserInputError, match=refused):
            command_arguments(spec)


def test_the_job_image_tag_covers_the_stamped_code_version(tmp_path, monkeypatch):
    (tmp_path / "module.py").write_text("VALUE = 1\n")
    code = {"module.py": tmp_path / "module.py"}
    environment = containers.environment_of("ingest")
    monkeypatch.setenv(CODE_VERSION_ENV, "1111111")
    first = containers.job_image_tag(environment, code=code)
    assert containers.job_image_tag(environment, code=code) == first, "the same inputs, the same tag"
    monkeypatch.setenv(CODE_VERSION_ENV, "2222222")
    assert containers.job_image_tag(environment, code=code) != first


TREE = [
    ".amlignore",
    "top.txt",
    ".venv/lib/site.py",
    ".venv/keep/notes.keep",
    "node_modules/a/b.js",
    "pkg/a.py",
    "pkg/a.pyc",
    "pkg/sub/b.py",
    "pkg/tests/test_a.py",
    "pkg/__pycache__/a.cpython-311.pyc",
    "other/c.py",
]


@pytest.mark.parametrize(
    "rules",
    [
        "/*\n!/.amlignore\n!/pkg/\n**/tests/\n__pycache__/\n*.pyc\n",
        "/*\n!/pkg/\n!*.keep\n",  # a `!` rule that reaches into any folder: nothing is skipped
        "/*\n!/pkg/sub/\n",
        "*.py\n",
    ],
)
def test_the_code_snapshot_is_what_the_sdk_uploads_without_entering_dropped_folders(tmp_path, rules):
    from azure.ai.ml._utils._asset_utils import get_upload_files_from_folder
    from azure.ai.ml.entities._component.code import ComponentIgnoreFile

    for name in TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".amlignore").write_text(rules)
    uploaded = get_upload_files_from_folder(tmp_path, ignore_file=ComponentIgnoreFile(tmp_path))
    assert snapshot_files(tmp_path) == {relative: Path(absolute) for absolute, relative in uploaded}


@pytest.mark.parametrize("stage", ["ingest", "train", "evaluate", "deploy"])
def test_a_generated_component_takes_the_spec_ports_with_their_defaults(stage):
    spec = load_spec(stage)
    ported = component(stage, "localhost/example:1").component_spec
    reports = load_metadata(stage).get("kfp_reports", {})
    assert list(ported.inputs) == list(spec["inputs"])
    assert list(ported.outputs) == list(spec["outputs"]) + list(reports), "the KFP-only reports follow"
    for name, port in spec["inputs"].items():
        assert ported.inputs[name].default == port.get("default"), name
        assert ported.inputs[name].optional == ("default" in port or bool(port.get("optional"))), name
    container = ported.implementation.container
    assert container.image == "localhost/example:1"
    launcher = ["python", "-m", "mnist_mlops.kfp_executor", "{{$}}"]
    launcher += ["--reports", json.dumps(reports, separators=(",", ":"))] if reports else []
    assert container.command[: len(launcher) + 3] == [*launcher, "--", "mldesigner", "execute"], (
        "the spec's own command under the launcher"
    )


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
    image_of = job_images("example.azurecr.io/")
    images = {stage: image_of(stage) for stage in ("ingest", "train")}
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
    parameters = ir["root"]["inputDefinitions"]["parameters"]
    assert parameters["raw_data"]["parameterType"] == "STRING"
    graph_parameters = {
        value.name for node in graph for value in node.inputs.values() if isinstance(value, Param)
    }
    assert set(parameters) == graph_parameters - {"pipeline_run_id"}, "no parameter dropped"
    assert {"batch_size", "learning_rate", "model_name", "endpoint_name", "canary_count"} <= set(parameters)
    assert parameters["endpoint_name"] == {"isOptional": True, "parameterType": "STRING"}, "unset by default"
    for node in graph:
        bindings = tasks[node.name.replace("_", "-")]["inputs"].get("parameters", {})
        for port, value in node.inputs.items():
            if isinstance(value, Param) and value.name in parameters and value.name != "raw_data":
                assert bindings[port] == {"componentInputParameter": value.name}, (node.name, port)


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

    pipeline(raw_data=str(drop), registry=mlflow_server, epochs=6, endpoint_name=MODEL)
    assert production_version(mlflow_server, MODEL) == "1"
    version = client(mlflow_server).get_model_version(MODEL, "1")
    assert version.tags["pipeline_run_id"].startswith("mnist-mlops-training-")
    (record,) = root.rglob("deploy/deployment_record")
    deployed = contracts.read_json(record, "deployment_record")
    assert (deployed["model_uri"], deployed["outcome"]) == (f"models:/{MODEL}/1", "deployed")

    pipeline(raw_data=str(drop), registry=mlflow_server, epochs=6, endpoint_name=MODEL)
    (first, second) = sorted(root.rglob("evaluation_report.json"), key=lambda path: path.stat().st_mtime)
    assert contracts.read_json(first, "evaluation_report")["champion"] is None
    assert contracts.read_json(second, "evaluation_report")["champion"]["version"] == "1"
    assert production_version(mlflow_server, MODEL) == "2"
    evaluate_tasks = [path.parent for path in root.rglob("evaluate/executor_output.json")]
    assert len(evaluate_tasks) == 2
    for task in evaluate_tasks:
        _assert_the_kfp_reports_show_the_evaluation(task)


def _assert_the_kfp_reports_show_the_evaluation(task: Path) -> None:
    """evaluate's Metrics, ClassificationMetrics and Markdown artifacts, as the task reported them to
    kfp.local, hold what KFP's own API would have logged from its evaluation report and model card."""
    artifacts = json.loads((task / "executor_output.json").read_text())["artifacts"]
    reported = {name: listing["artifacts"][0] for name, listing in artifacts.items()}
    report = contracts.read_json(task / "evaluation" / "evaluation_report.json", "evaluation_report")
    assert reported["metrics"]["metadata"] == logged_metrics(report)
    assert reported["confusion_matrix"]["metadata"] == logged_confusion_matrix(report)
    card = (task / "evaluation" / "model_card.md").read_text()
    assert Path(reported["model_card"]["uri"]).read_text() == card
