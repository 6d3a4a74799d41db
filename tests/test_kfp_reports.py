"""evaluate's KFP-only views: the generated component declares Metrics, ClassificationMetrics and Markdown
outputs, and `mnist_mlops.kfp_executor` fills them from the files evaluate writes with the metadata
KFP's own `log_metric` / `log_confusion_matrix` set, as kfp.local reads them back."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl
from kfp.local import executor_input_utils, executor_output_utils

from mnist_mlops import contracts
from mnist_mlops.errors import ContractError, UserInputError
from mnist_mlops.kfp_executor import confusion_matrix, metric_values
from mnist_mlops.pipelines.kfp import checked_reports, component, component_document
from mnist_mlops.ports import load_spec
from tests.test_schemas import (
    component_metadata,
    evaluation_report,
    evaluation_report_first_run,
    evaluation_report_not_blessed,
)

CARD = "# Model card: mnist-classifier\n\n| class | recall |\n| --- | --- |\n| 0 | 0.985 |\n"


def named_classes_report() -> dict[str, Any]:
    """A first run's report for three named classes, each with its own recall."""
    report = evaluation_report_first_run()
    classes = ["apple", "bread", "cheese"]
    report["model"] |= {"image_shape": [32, 32, 3], "classes": classes}
    report["per_class"] = [
        {"class": label, "name": name, "precision": 0.9, "recall": recall, "support": 10}
        for label, (name, recall) in enumerate(zip(classes, [0.8, 0.9, 0.7], strict=True))
    ]
    report["confusion_matrix"] = [[8, 1, 1], [0, 9, 1], [2, 1, 7]]
    report["test_count"] = 30
    contracts.validate(report, "evaluation_report", source="named_classes_report")
    return report


def logged_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """What evaluate's Metrics artifact holds when KFP's own API logs the figures."""
    metrics = dsl.Metrics(name="metrics", uri="unused")
    metrics.log_metric("accuracy", report["accuracy"])
    if report["champion"] is not None:
        metrics.log_metric("champion_accuracy", report["champion"]["accuracy"])
    for entry in report["per_class"]:
        metrics.log_metric(f"recall_{entry['name']}", entry["recall"])
    metrics.log_metric("p99_latency_ms", report["latency"]["p99_ms"])
    metrics.log_metric("blessed", 1.0 if report["blessed"] else 0.0)
    return metrics.metadata


def logged_confusion_matrix(report: dict[str, Any]) -> dict[str, Any]:
    matrix = dsl.ClassificationMetrics(name="confusion_matrix", uri="unused")
    matrix.log_confusion_matrix(report["model"]["classes"], report["confusion_matrix"])
    return matrix.metadata


def run_evaluate_task(tmp_path: Path, files: dict[str, str]) -> tuple[subprocess.CompletedProcess, Any, Any]:
    """Run evaluate's generated launcher as kfp.local would, over a command that writes `files` into the
    evaluation output; returns the process, and the executor input and component spec that kfp.local
    reads the task's outputs with."""
    pipeline_spec = component("evaluate", "localhost/example:1").pipeline_spec
    (component_spec,) = pipeline_spec.components.values()
    executor_input = executor_input_utils.construct_executor_input(
        component_spec=component_spec,
        arguments={},
        task_root=str(tmp_path / "evaluate"),
        block_input_artifact=False,
    )
    executor_json = json.dumps(executor_input_utils.executor_input_to_dict(executor_input, component_spec))
    command = component_document("evaluate", "localhost/example:1")["implementation"]["container"]["command"]
    launcher = [executor_json if part == "{{$}}" else part for part in command[: command.index("--")]]
    assert launcher[:3] == ["python", "-m", "mnist_mlops.kfp_executor"]
    source = tmp_path / "written"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    evaluation = executor_input.outputs.artifacts["evaluation"].artifacts[0].uri
    argv = [sys.executable, *launcher[1:], "--", "cp", "-R", str(source), evaluation]
    process = subprocess.run(argv, capture_output=True, text=True, check=False)
    return process, executor_input, component_spec


def test_evaluate_declares_the_reports_as_kfp_outputs_beside_its_spec_ports():
    ported = component("evaluate", "localhost/example:1").component_spec
    assert {name: output.type for name, output in ported.outputs.items()} == {
        "evaluation": "system.Dataset@0.0.1",
        "blessing": "system.Artifact@0.0.1",
        "metrics": "system.Metrics@0.0.1",
        "confusion_matrix": "system.ClassificationMetrics@0.0.1",
        "model_card": "system.Markdown@0.0.1",
    }
    assert list(load_spec("evaluate")["outputs"]) == ["evaluation", "blessing"], "the spec has none of them"
    described = {
        output["name"]: output["description"] for output in component_document("evaluate", "x")["outputs"]
    }
    assert described["model_card"].startswith("KFP-only view of evaluation/model_card.md")
    assert "--reports" not in component_document("train", "x")["implementation"]["container"]["command"]


@pytest.mark.parametrize(
    "make_report",
    [evaluation_report, evaluation_report_first_run, evaluation_report_not_blessed, named_classes_report],
)
def test_the_launcher_fills_the_reports_as_kfps_own_api_would(tmp_path, make_report):
    report = make_report()
    process, executor_input, component_spec = run_evaluate_task(
        tmp_path, {"evaluation_report.json": json.dumps(report), "model_card.md": CARD}
    )
    assert process.returncode == 0, process.stderr
    outputs = executor_output_utils.get_outputs_for_task(executor_input, component_spec)
    assert isinstance(outputs["metrics"], dsl.Metrics)
    assert outputs["metrics"].metadata == logged_metrics(report)
    assert all(type(value) is float for value in outputs["metrics"].metadata.values()), "numbers only"
    assert ("champion_accuracy" in outputs["metrics"].metadata) == (report["champion"] is not None)
    assert isinstance(outputs["confusion_matrix"], dsl.ClassificationMetrics)
    assert outputs["confusion_matrix"].metadata == logged_confusion_matrix(report)
    assert isinstance(outputs["model_card"], dsl.Markdown)
    assert Path(outputs["model_card"].path).read_text() == CARD
    assert json.loads(Path(outputs["metrics"].path).read_text()) == outputs["metrics"].metadata, "its body"
    assert outputs["evaluation"].metadata == {} and Path(outputs["evaluation"].path, "model_card.md").exists()


def test_a_report_that_cannot_be_built_fails_the_task_naming_it_and_reports_nothing(tmp_path):
    process, executor_input, _ = run_evaluate_task(
        tmp_path, {"evaluation_report.json": json.dumps(evaluation_report())}
    )
    assert process.returncode == 2
    assert "KFP report 'model_card': output 'evaluation' has no model_card.md" in process.stderr
    assert not Path(executor_input.outputs.output_file).exists()
    assert not Path(executor_input.outputs.artifacts["metrics"].artifacts[0].uri).exists()


def test_reports_must_be_json():
    argv = [sys.executable, "-m", "mnist_mlops.kfp_executor", "{}", "--reports", "{not json", "--", "true"]
    bad = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "not JSON" in bad.stderr


METRICS = {"accuracy": "accuracy", "recall_{name}": "per_class.*.recall", "champion": "champion.accuracy"}


@pytest.mark.parametrize(
    ("change", "metrics", "refused"),
    [
        (lambda report: report.update(accuracy=math.nan), METRICS, "'accuracy': nan is not a finite number"),
        (lambda report: report.update(accuracy="0.9"), METRICS, "'0.9' is not a finite number"),
        (lambda report: report.pop("accuracy"), METRICS, "no 'accuracy'"),
        (lambda report: report["per_class"][0].pop("name"), METRICS, "has no field 'name'"),
        (lambda report: report.update(per_class={}), METRICS, "'per_class' is not a list of objects"),
        (lambda report: None, {"recall": "per_class.*.recall"}, "two metrics are named 'recall'"),
        (lambda report: None, {"recall_{name}": "accuracy"}, "needs a path through a list"),
        (lambda report: None, {"recall_0": "accuracy", "recall_{name}": "per_class.*.recall"}, "'recall_0'"),
        (lambda report: None, {"latency": "latency"}, "is not a finite number"),
    ],
)
def test_a_metric_that_is_not_one_finite_number_is_refused_naming_it(change, metrics, refused):
    report = copy.deepcopy(evaluation_report())
    change(report)
    with pytest.raises(UserInputError, match=re.escape(refused)):
        metric_values(metrics, report)


def test_a_null_leaves_its_metric_out_and_true_false_are_one_and_zero():
    values = metric_values(
        {"champion": "champion.accuracy", "blessed": "blessed"}, evaluation_report_first_run()
    )
    assert values == {"blessed": 1.0}


def test_a_confusion_matrix_needs_a_count_per_category_and_category():
    with pytest.raises(UserInputError, match="one row of one count per category"):
        confusion_matrix(["a", "b"], [[1, 2], [3]])
    with pytest.raises(UserInputError, match="one row of one count per category"):
        confusion_matrix(["a", "b"], [[1, 2]])
    with pytest.raises(UserInputError, match="counts: whole numbers"):
        confusion_matrix(["a", "b"], [[1, 2], [3, 0.5]])


@pytest.mark.parametrize(
    ("report", "refused"),
    [
        ({"type": "Markdown", "port": "blessing", "file": "x.md"}, "reads 'blessing', not a folder output"),
        ({"type": "Markdown", "port": "nowhere", "file": "x.md"}, "not a folder output (evaluation)"),
    ],
)
def test_a_report_reads_a_folder_output_of_the_spec(report, refused):
    with pytest.raises(UserInputError, match=re.escape(refused)):
        checked_reports(load_spec("evaluate"), {"card": report})
    with pytest.raises(UserInputError, match="'blessing' is named as a port"):
        checked_reports(load_spec("evaluate"), {"blessing": {**report, "port": "evaluation"}})


REPORTS = {
    "metrics": {"type": "Metrics", "port": "evaluation", "file": "r.json", "metrics": METRICS},
    "matrix": {"type": "ClassificationMetrics", "port": "evaluation", "file": "r.json", "categories": "a.b"}
    | {"matrix": "m"},
    "card": {"type": "Markdown", "port": "evaluation", "file": "docs/card.md"},
}


def test_metadata_with_kfp_reports_is_valid():
    contracts.validate(
        component_metadata() | {"kfp_reports": REPORTS}, "component_metadata", source="metadata.yaml"
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"type": "Table"}, "$.kfp_reports.card.type", "'Table' is not one of"),
        ({"type": "Metrics"}, "$.kfp_reports.card", "'metrics' is a required property"),
        ({"matrix": "m"}, "$.kfp_reports.card", "'matrix' is not one of ['type', 'port', 'file']"),
        ({"file": "../card.md"}, "$.kfp_reports.card.file", "does not match"),
        ({"port": None}, "$.kfp_reports.card", "'port' is a required property"),
    ],
)
def test_metadata_with_a_wrong_report_is_refused_naming_the_field(change, field, message):
    card = {key: value for key, value in (REPORTS["card"] | change).items() if value is not None}
    with pytest.raises(ContractError, match=re.escape(f"field {field} ") + ".*" + re.escape(message)):
        contracts.validate(
            component_metadata() | {"kfp_reports": {"card": card}}, "component_metadata", source="metadata"
        )


@pytest.mark.parametrize(
    "metrics",
    [
        {"recall": "per_class.*.*.recall"},
        {"recall": "per_class.*"},
        {"recall {name}": "per_class.*.recall"},
        {"recall_{0}": "per_class.*.recall"},
    ],
)
def test_metadata_with_a_wrong_metric_path_or_name_is_refused(metrics):
    with pytest.raises(ContractError, match=r"field \$\.kfp_reports\.metrics\.metrics"):
        contracts.validate(
            component_metadata() | {"kfp_reports": {"metrics": {**REPORTS["metrics"], "metrics": metrics}}},
            "component_metadata",
            source="metadata.yaml",
        )
