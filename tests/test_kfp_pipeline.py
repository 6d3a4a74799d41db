"""The Kubeflow Pipelines target: every stage's KFP component has its spec.yaml ports, the pipeline
compiles to IR naming every component and edge, and it runs end to end under kfp.local."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kfp import local

from mnist_mlops.components.evaluate.executor import DEFAULT_THRESHOLDS
from mnist_mlops.deployments import production_version
from mnist_mlops.pipelines.graph import training_pipeline as training_graph
from mnist_mlops.pipelines.kfp import (
    COMPONENTS,
    PIPELINE_FILE,
    compile_kfp,
    kpi_thresholds,
    training_pipeline,
)
from mnist_mlops.ports import load_spec
from mnist_mlops.registry import client
from tests.datasets import small_splits, write_png_tree

pytestmark = pytest.mark.slow  # trains models or starts servers

PARAMETER_TYPES = {"string": "String", "integer": "Integer", "number": "Float", "boolean": "Boolean"}
ARTIFACT_TYPES = {
    "mlflow_model": {"system.Model@0.0.1"},
    "uri_folder": {"system.Dataset@0.0.1", "system.Artifact@0.0.1"},
    "uri_file": {"system.Artifact@0.0.1"},
}
LENIENT = {
    "schema_version": 1,
    "min_accuracy": 0.5,
    "min_class_recall": 0.0,
    "max_regression": 1.0,
    "max_p99_latency_ms": 1000.0,
}
EDGES = {
    ("ingest", "dataset", "preprocess", "dataset"),
    ("preprocess", "preprocessed", "train", "preprocessed"),
    ("train", "model", "evaluate", "challenger"),
    ("resolve-champion", "champion", "evaluate", "champion"),
    ("preprocess", "preprocessed", "evaluate", "preprocessed"),
    ("kpi-thresholds", "thresholds", "evaluate", "thresholds"),
    ("train", "model", "register", "model"),
    ("evaluate", "blessing", "register", "blessing"),
    ("evaluate", "evaluation", "register", "evaluation"),
    ("train", "training_summary", "register", "training_summary"),
    ("ingest", "data_report", "register", "data_report"),
    ("preprocess", "preprocessed", "register", "preprocessed"),
    ("preprocess", "preprocessed", "deploy", "test_data"),
    ("register", "registration_record", "deploy", "registration_record"),
}
"""(producer, output, consumer, input) artifact edges, as pipelines/local.py binds them."""


TRAINING_STAGES = sorted(node.component for node in training_graph({"source_uri": "data"}))
"""The stages of the training graph; standalone components (monitor, batch_score) are not in it."""


def test_every_stage_of_the_training_graph_has_a_kfp_component():
    assert sorted(COMPONENTS) == TRAINING_STAGES, "each stage needs its wrapper in pipelines/kfp.py"


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_kfp_component_ports_match_the_spec(stage):
    assert stage in COMPONENTS, f"{stage}: no KFP component in pipelines/kfp.py"
    spec = load_spec(stage)
    component = COMPONENTS[stage].component_spec
    assert set(component.inputs) == set(spec["inputs"])
    for name, port in spec["inputs"].items():
        kfp_port = component.inputs[name]
        if port["type"] in PARAMETER_TYPES:
            assert kfp_port.type == PARAMETER_TYPES[port["type"]], name
        else:
            assert kfp_port.type in ARTIFACT_TYPES[port["type"]], name
        # KFP counts a parameter with a default as optional; the spec says optional only without one.
        assert kfp_port.optional == (port.get("optional", False) or "default" in port), name
        assert kfp_port.default == port.get("default"), name
    outputs = component.outputs or {}
    assert set(outputs) == set(spec["outputs"])
    for name, port in spec["outputs"].items():
        assert outputs[name].type in ARTIFACT_TYPES[port["type"]], name


def test_pipeline_parameter_defaults_match_the_ports_they_feed():
    pipeline_inputs = training_pipeline.component_spec.inputs
    checked = set()
    for stage in TRAINING_STAGES:
        for name, port in load_spec(stage)["inputs"].items():
            if name in pipeline_inputs and "default" in port:
                assert pipeline_inputs[name].default == port["default"], f"{stage}.{name}"
                checked.add(f"{stage}.{name}")
    assert checked == {
        "preprocess.validation_fraction",
        "preprocess.seed",
        "train.seed",
        "train.epochs",
        "train.batch_size",
        "train.learning_rate",
        "train.max_train_images",
        "register.model_name",
        "resolve_champion.model_name",
        "deploy.canary_count",
        "deploy.max_canary_p99_ms",
    }


def test_compile_writes_the_ir_with_every_component_and_edge(tmp_path):
    path = compile_kfp(tmp_path / "out")
    assert path == tmp_path / "out" / PIPELINE_FILE
    assert [entry.name for entry in path.parent.iterdir()] == [PIPELINE_FILE]
    ir = yaml.safe_load(path.read_text())
    assert ir["pipelineInfo"]["name"] == "mnist-mlops-training"
    assert {f"comp-{stage.replace('_', '-')}" for stage in TRAINING_STAGES} <= set(ir["components"])
    tasks = ir["root"]["dag"]["tasks"]
    edges = set()
    for consumer, task in tasks.items():
        for port, binding in task.get("inputs", {}).get("artifacts", {}).items():
            source = binding["taskOutputArtifact"]
            edges.add((source["producerTask"], source["outputArtifactKey"], consumer, port))
    assert edges == EDGES
    assert "kpi-thresholds" in tasks["train"]["dependentTasks"]
    assert tasks["register"]["inputs"]["parameters"]["registry"] == {"componentInputParameter": "registry"}
    caching = {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in tasks.items()}
    assert caching["train"] and caching["preprocess"]
    assert not (
        caching["ingest"] or caching["evaluate"] or caching["register"] or caching["resolve-champion"]
    )


def run_locally(root: Path) -> None:
    """kfp.local with components as subprocesses of this interpreter: its packages, no venv, no image."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)


@pytest.fixture
def run_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[str, Path]]:
    """Run the KFP pipeline under kfp.local in this environment on a small learnable data set; returns
    the registry and the run's artifact root."""
    monkeypatch.chdir(tmp_path)
    source = write_png_tree(tmp_path / "src", small_splits(train_per_class=24, test_per_class=6))
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "kfp-root"
    run_locally(root)

    def run(thresholds: dict, **parameters) -> tuple[str, Path]:
        training_pipeline(
            source_uri=str(source),
            registry=registry,
            validation_fraction=0.25,
            batch_size=16,
            thresholds=json.dumps(thresholds),
            canary_count=16,
            max_canary_p99_ms=1000.0,
            **parameters,
        )
        return registry, root

    return run


@pytest.mark.filterwarnings("ignore:.*no effect in the current local runner:UserWarning")
def test_thresholds_default_to_evaluates_and_a_bad_document_fails_its_step(tmp_path):
    run_locally(tmp_path)
    defaults = kpi_thresholds(thresholds_json="").output
    assert json.loads(Path(defaults.path).read_text()) == DEFAULT_THRESHOLDS
    with pytest.raises(RuntimeError, match="kpi-thresholds"):
        kpi_thresholds(thresholds_json=json.dumps(LENIENT | {"min_accuracy": 2}))


def deployment_record(root: Path) -> dict:
    path = max(root.rglob("deploy/deployment_record"), key=lambda found: found.stat().st_mtime)
    return json.loads(path.read_text())


@pytest.mark.filterwarnings("ignore:.*no effect in the current local runner:UserWarning")
def test_a_blessed_model_is_registered_and_deployed_under_kfp_local(run_pipeline):
    registry, root = run_pipeline(LENIENT, epochs=8)
    assert production_version(registry, "mnist-mlops") == "1"
    version = client(registry).get_model_version("mnist-mlops", "1")
    assert version.tags["pipeline_run_id"].startswith("mnist-mlops-training-")
    record = deployment_record(root)
    assert (record["model_uri"], record["outcome"]) == ("models:/mnist-mlops/1", "deployed")

    run_pipeline(LENIENT, epochs=8)
    (first, second) = sorted(root.rglob("evaluation_report.json"), key=lambda path: path.stat().st_mtime)
    assert json.loads(first.read_text())["champion"] is None
    assert json.loads(second.read_text())["champion"]["version"] == "1"  # production, from resolve_champion
