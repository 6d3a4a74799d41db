"""The artifact JSON Schemas: every schema is well-formed, and each later-stage schema (and the component
metadata's) accepts a realistic document and rejects targeted mistakes with a ContractError that names the
offending field."""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator
from PIL import Image

from mnist_mlops import contracts
from mnist_mlops.errors import ContractError

SCHEMA_BASE = "https://mnist-mlops.dev/schemas/"
NOW = "2025-03-14T09:26:53Z"
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4
DATASET_VERSION = "3f2a9c1e" * 8  # sha256 over the (image, label) pairs, as in dataset_manifest

LATER_STAGE_SCHEMAS = [
    "training_summary",
    "kpi_thresholds",
    "evaluation_report",
    "blessing",
    "registration_record",
    "deployment_record",
    "scoring_request",
    "scoring_response",
    "run_record",
]


# --- realistic valid documents ---------------------------------------------------------------------------


def training_summary() -> dict[str, Any]:
    epoch = {"loss": 0.21, "accuracy": 0.94, "val_loss": 0.09, "val_accuracy": 0.973, "seconds": 11.8}
    return {
        "schema_version": 1,
        "seed": 42,
        "tf_version": "2.17.0",
        "keras_version": "3.4.1",
        "environment_hash": SHA_A,
        "dataset_version": DATASET_VERSION,
        "code_version": "9e1c2b7",
        "hyperparameters": {"epochs": 2, "batch_size": 256, "learning_rate": 0.001, "optimizer": "adam"},
        "history": [
            {"epoch": 1, **epoch},
            {"epoch": 2, **epoch, "loss": 0.07, "accuracy": 0.978, "val_accuracy": 0.982},
        ],
        "wall_time_seconds": 25.1,
        "images_per_second": 4780.5,
        "metrics": {"loss": 0.07, "accuracy": 0.978, "val_loss": 0.06, "val_accuracy": 0.982},
        "distributed": {"strategy": "MultiWorkerMirroredStrategy", "worker_count": 2, "is_chief": True},
    }


def kpi_thresholds() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "min_accuracy": 0.98,
        "min_class_recall": 0.95,
        "max_regression": 0.005,
        "max_p99_latency_ms": 50,
    }


def _figures() -> dict[str, Any]:
    per_class = [
        {"class": c, "name": str(c), "precision": 0.99, "recall": 0.985, "support": 1000} for c in range(10)
    ]
    matrix = [
        [985 if row == col else (15 if col == (row + 1) % 10 else 0) for col in range(10)]
        for row in range(10)
    ]
    return {
        "test_count": 10000,
        "accuracy": 0.985,
        "per_class": per_class,
        "confusion_matrix": matrix,
        "latency": {"p50_ms": 2.1, "p99_ms": 7.9, "samples": 500},
    }


def evaluation_report() -> dict[str, Any]:
    champion = {"name": "mnist-classifier", "version": "3", "uri": "models:/mnist-classifier@champion"}
    return {
        "schema_version": 1,
        "model": {
            "name": "mnist-classifier",
            "uri": "azureml://jobs/train-7f3a/outputs/model",
            "image_shape": [28, 28],
            "classes": [str(digit) for digit in range(10)],
        },
        "dataset_version": DATASET_VERSION,
        **_figures(),
        "champion": {**champion, **_figures(), "accuracy": 0.983},
        "thresholds_source": "given",
        "thresholds": [
            {
                "name": "min_accuracy",
                "threshold": 0.98,
                "value": 0.985,
                "outcome": "pass",
                "reason": "0.985 >= 0.98",
            },
            {
                "name": "min_class_recall",
                "threshold": 0.95,
                "value": 0.985,
                "outcome": "pass",
                "reason": "ok",
            },
            {
                "name": "max_regression",
                "threshold": 0.005,
                "value": -0.002,
                "outcome": "pass",
                "reason": "ok",
            },
            {"name": "max_p99_latency_ms", "threshold": 50, "value": 7.9, "outcome": "pass", "reason": "ok"},
            {
                "name": "max_data_shift",
                "threshold": 0.02,
                "value": 0.0012,
                "outcome": "pass",
                "reason": "training data like mnist-classifier v3's (dataset 3f2a9c1e3f2a): closest to its "
                "limit is mean_image mean absolute pixel difference 0.0012 <= 0.02",
            },
            {
                "name": "max_traffic_shift",
                "threshold": None,
                "value": None,
                "outcome": "no_reference",
                "reason": "only 12 images served recently, fewer than 100",
            },
            {
                "name": "max_reference_regression",
                "threshold": 0.01,
                "value": 0.0004,
                "outcome": "pass",
                "reason": "challenger 0.9851 vs champion mnist-classifier v3 0.9855 on the champion's own "
                "test split (10000 images of dataset 3f2a9c1e3f2a): drop +0.0004 (within the allowed 0.01)",
            },
        ],
        "data_shift": {
            "decision": "within_limits",
            "accepted": False,
            "reference": {
                "model_version": "3",
                "dataset_version": DATASET_VERSION,
                "found": True,
                "reason": "mnist-classifier v3 was trained on dataset 3f2a9c1e3f2a",
            },
            "training_data": [
                {
                    "feature": "mean_intensity",
                    "measure": "PSI",
                    "value": 0.004,
                    "limit": 0.2,
                    "shifted": False,
                    "means": [33.3, 33.5],
                },
                {
                    "feature": "mean_image",
                    "measure": "mean absolute pixel difference",
                    "value": 0.0012,
                    "limit": 0.02,
                    "shifted": False,
                    "means": None,
                },
            ],
            "traffic": None,
            "reference_split": {
                "dataset_version": DATASET_VERSION,
                "test_count": 10000,
                "challenger_accuracy": 0.9851,
                "champion_accuracy": 0.9855,
            },
        },
        "blessed": True,
        "generated_at": NOW,
    }


def evaluation_report_first_run() -> dict[str, Any]:
    report = evaluation_report()
    report["champion"] = None
    report["thresholds"][2] = {
        "name": "max_regression",
        "threshold": 0.005,
        "value": None,
        "outcome": "skipped",
        "reason": "no champion registered yet",
    }
    for gate in report["thresholds"][4:]:
        gate.update(value=None, outcome="no_reference", reason="no production model: nothing to compare")
    report["thresholds"][4]["threshold"] = None
    report["data_shift"] |= {
        "decision": "no_reference",
        "reference": {"model_version": None, "dataset_version": None, "found": False, "reason": "none"},
        "training_data": [],
        "reference_split": None,
    }
    return report


def evaluation_report_not_blessed() -> dict[str, Any]:
    report = evaluation_report()
    report["thresholds"][0].update(value=0.97, outcome="fail", reason="accuracy 0.97 < 0.98")
    report["blessed"] = False
    return report


def evaluation_report_shift_accepted() -> dict[str, Any]:
    report = evaluation_report()
    report["thresholds"][4].update(
        value=15.9, threshold=0.2, outcome="accepted", reason="accepted by evaluate.accept_data_shift: ..."
    )
    report["data_shift"]["training_data"][0].update(value=15.9, shifted=True, means=[33.3, 190.2])
    report["data_shift"] |= {"decision": "accepted", "accepted": True}
    return report


def blessing() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "blessed": True,
        "reasons": ["all 4 KPI gates passed"],
        "first_run_without_champion": False,
        "model_uri": "azureml://jobs/train-7f3a/outputs/model",
        "dataset_version": DATASET_VERSION,
        "evaluation_report_sha256": SHA_B,
        "data_shift": {
            "decision": "accepted",
            "accepted": True,
            "reference_model_version": "3",
            "reference_dataset_version": SHA_A,
            "reasons": [
                "max_data_shift: accepted by evaluate.accept_data_shift: training data shifted from "
                "mnist-classifier v3's (dataset aaaaaaaaaaaa): mean_intensity PSI 15.9 > 0.2 "
                "(mean 33.3 -> 190.2)"
            ],
        },
        "generated_at": "2025-03-14T09:26:53.123456+00:00",
    }


def registration_record() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "registered": True,
        "model_name": "mnist-classifier",
        "version": "4",
        "aliases": ["champion"],
        "registry_uri": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/g",
        "reasons": ["blessed: all 4 KPI gates passed"],
        "lineage": {
            "dataset_version": DATASET_VERSION,
            "data_report_sha256": SHA_A,
            "code_version": "9e1c2b7",
            "component_versions": {"ingest": "0.1.0", "preprocess": "0.1.0", "train": "0.1.0"},
            "environment_hash": SHA_B,
            "pipeline_run_id": "run-20250314-092653",
            "interface": {"image_shape": [32, 32, 3], "classes": ["apple", "bread", "cheese"]},
            "metrics": {"accuracy": 0.985, "p99_ms": 7.9},
            "blessed": True,
            "data_shift": {
                "decision": "within_limits",
                "reference_model_version": "3",
                "reference_dataset_version": DATASET_VERSION,
            },
        },
    }


def registration_record_refused() -> dict[str, Any]:
    record = registration_record()
    record.update(registered=False, version=None, aliases=[], reasons=["not blessed: accuracy 0.97 < 0.98"])
    record["lineage"]["blessed"] = False
    return record


def deployment_record() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "action": "deploy",
        "target": "azureml",
        "model_uri": "models:/mnist-classifier/4",
        "model_name": "mnist-classifier",
        "model_version": "4",
        "endpoint": "https://mnist.eastus.inference.ml.azure.com/score",
        "deployed_at": NOW,
        "previous_version": "3",
        "infra_validation": {
            "canary_requests": 20,
            "canary_correct": 20,
            "p99_ms": 38.5,
            "invalid_requests": 3,
            "invalid_rejected": 3,
            "passed": True,
        },
        "traffic": {"blue": 0, "green": 100},
        "outcome": "deployed",
    }


def deployment_record_local_first() -> dict[str, Any]:
    record = deployment_record()
    record.update(
        target="local",
        model_uri="models:/mnist-classifier@champion",
        endpoint="http://127.0.0.1:8080/score",
        previous_version=None,
        traffic={"default": 100},
    )
    return record


def deployment_record_rollback() -> dict[str, Any]:
    record = deployment_record_local_first()
    record.update(
        action="rollback",
        model_uri="models:/mnist-classifier/3",
        model_version="3",
        previous_version="4",
        infra_validation=None,
        outcome="rolled_back",
    )
    return record


def _image(value: int = 0) -> list[list[int]]:
    return [[(value + row + col) % 256 for col in range(28)] for row in range(28)]


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), color=0).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def scoring_request() -> dict[str, Any]:
    return {"instances": [_image(0), _image(7)]}


def scoring_request_hwc() -> dict[str, Any]:
    return {"schema_version": 1, "instances": [[[[p] for p in row] for row in _image(3)]]}


def scoring_request_rgb() -> dict[str, Any]:
    return {"instances": [[[[row, col, 255 - row] for col in range(32)] for row in range(32)]]}


def scoring_response_named_classes() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "predictions": [{"class": 2, "label": "heron", "probabilities": [0.1, 0.2, 0.7]}],
        "model_name": "birds",
        "model_version": "1",
    }


def scoring_request_png() -> dict[str, Any]:
    return {"images": [_png_base64(), _png_base64()]}


def scoring_response() -> dict[str, Any]:
    probabilities = [0.001] * 10
    probabilities[7] = 0.991
    return {
        "schema_version": 1,
        "predictions": [{"class": 7, "label": "7", "probabilities": probabilities}],
        "model_name": "mnist-classifier",
        "model_version": "4",
    }


def _node(name: str, status: str = "done", **overrides: Any) -> dict[str, Any]:
    node = {
        "name": name,
        "component": f"mnist_{name}",
        "component_version": "0.1.0",
        "status": status,
        "cache_key": SHA_A,
        "seconds": 12.5,
        "inputs": {"data": {"path": "runs/r1/ingest/data", "sha256": SHA_B}},
        "parameters": {"seed": 42, "validation_fraction": 0.1, "augment": False},
        "outputs": {"model": {"path": f"runs/r1/{name}/model", "sha256": SHA_A}},
        "log": f"runs/r1/{name}/log.txt",
    }
    node.update(overrides)
    return node


def run_record() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "run_id": "run-20250314-092653",
        "pipeline": "mnist_training",
        "started_at": "2025-03-14T09:20:00Z",
        "finished_at": NOW,
        "status": "succeeded",
        "nodes": [
            _node(
                "ingest", "cached", seconds=0, inputs={}, parameters={"source": "azureml://datastores/raw"}
            ),
            _node("train"),
        ],
        "lineage": {"dataset_version": DATASET_VERSION, "model_version": "4", "deployed": True},
        "outcome": "deployed mnist-classifier v4",
    }


def run_record_running() -> dict[str, Any]:
    record = run_record()
    record.update(status="running", finished_at=None, outcome="running: train")
    record["nodes"].append(_node("deploy", "skipped", cache_key=None, seconds=0, outputs={}, log=None))
    record["lineage"].update(model_version=None, deployed=False)
    return record


def component_metadata() -> dict[str, Any]:
    """A metadata.yaml as `ports.load_metadata` reads it: catalog fields and the runner's policy."""
    return {
        "stability": "beta",
        "owners": ["mnist-mlops maintainers"],
        "tags": ["data", "validation"],
        "last_verified": "2026-12-06",
        "local_cache": "source",
    }


VALID: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("training_summary", training_summary),
    ("kpi_thresholds", kpi_thresholds),
    ("evaluation_report", evaluation_report),
    ("evaluation_report", evaluation_report_first_run),
    ("evaluation_report", evaluation_report_not_blessed),
    ("evaluation_report", evaluation_report_shift_accepted),
    ("blessing", blessing),
    ("registration_record", registration_record),
    ("registration_record", registration_record_refused),
    ("deployment_record", deployment_record),
    ("deployment_record", deployment_record_local_first),
    ("deployment_record", deployment_record_rollback),
    ("scoring_request", scoring_request),
    ("scoring_request", scoring_request_hwc),
    ("scoring_request", scoring_request_png),
    ("scoring_request", scoring_request_rgb),
    ("scoring_response", scoring_response),
    ("scoring_response", scoring_response_named_classes),
    ("run_record", run_record),
    ("run_record", run_record_running),
    ("component_metadata", component_metadata),
]


# --- targeted invalid variants ---------------------------------------------------------------------------

FieldPath = tuple[str | int, ...]
DELETE = object()


def _set(doc: dict[str, Any], path: FieldPath, value: Any) -> dict[str, Any]:
    """A deep copy of `doc` with the field at `path` replaced by `value` (or removed if `value` is DELETE)."""
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _blessed_with_failed_gate() -> dict[str, Any]:
    report = evaluation_report_not_blessed()
    report["blessed"] = True
    return report


def _hwc_with_flat_pixel() -> dict[str, Any]:
    request = scoring_request_hwc()
    request["instances"][0][5][6] = 12
    return request


def _succeeded_without_finish() -> dict[str, Any]:
    return _set(run_record(), ("finished_at",), None)


# (schema, id, invalid document, JSON path expected in the message, other text expected in the message)
INVALID: list[tuple[str, str, Callable[[], Any], str, str]] = [
    # training_summary
    (
        "training_summary",
        "missing",
        lambda: _set(training_summary(), ("keras_version",), DELETE),
        "$",
        "keras_version",
    ),
    (
        "training_summary",
        "accuracy>1",
        lambda: _set(training_summary(), ("history", 1, "val_accuracy"), 1.2),
        "$.history[1].val_accuracy",
        "maximum",
    ),
    (
        "training_summary",
        "enum",
        lambda: _set(training_summary(), ("distributed", "strategy"), "Horovod"),
        "$.distributed.strategy",
        "Horovod",
    ),
    (
        "training_summary",
        "batch0",
        lambda: _set(training_summary(), ("hyperparameters", "batch_size"), 0),
        "$.hyperparameters.batch_size",
        "minimum",
    ),
    (
        "training_summary",
        "version",
        lambda: _set(training_summary(), ("schema_version",), 2),
        "$.schema_version",
        "1 was expected",
    ),
    # kpi_thresholds
    (
        "kpi_thresholds",
        "missing",
        lambda: _set(kpi_thresholds(), ("max_regression",), DELETE),
        "$",
        "max_regression",
    ),
    (
        "kpi_thresholds",
        "accuracy>1",
        lambda: _set(kpi_thresholds(), ("min_accuracy",), 1.5),
        "$.min_accuracy",
        "1.5",
    ),
    (
        "kpi_thresholds",
        "negative",
        lambda: _set(kpi_thresholds(), ("max_regression",), -0.01),
        "$.max_regression",
        "minimum",
    ),
    ("kpi_thresholds", "unknown", lambda: _set(kpi_thresholds(), ("min_recall",), 0.9), "$", "min_recall"),
    # evaluation_report
    (
        "evaluation_report",
        "1 class",
        lambda: _set(evaluation_report(), ("per_class",), _figures()["per_class"][:1]),
        "$.per_class",
        "too short",
    ),
    (
        "evaluation_report",
        "negative count",
        lambda: _set(evaluation_report(), ("confusion_matrix", 3, 4), -1),
        "$.confusion_matrix[3][4]",
        "minimum",
    ),
    (
        "evaluation_report",
        "outcome enum",
        lambda: _set(evaluation_report(), ("thresholds", 0, "outcome"), "warn"),
        "$.thresholds[0].outcome",
        "warn",
    ),
    (
        "evaluation_report",
        "champion accuracy",
        lambda: _set(evaluation_report(), ("champion", "accuracy"), 1.1),
        "$.champion.accuracy",
        "maximum",
    ),
    (
        "evaluation_report",
        "missing value",
        lambda: _set(evaluation_report(), ("thresholds", 1, "value"), None),
        "$.thresholds[1].value",
        "None",
    ),
    (
        "evaluation_report",
        "blessed despite fail",
        _blessed_with_failed_gate,
        "$.thresholds",
        "should not be valid",
    ),
    (
        "evaluation_report",
        "timestamp",
        lambda: _set(evaluation_report(), ("generated_at",), "14/03/2025"),
        "$.generated_at",
        "14/03/2025",
    ),
    (
        "evaluation_report",
        "failed KPI gate without a value",
        lambda: _set(
            _set(_set(evaluation_report(), ("thresholds", 0, "outcome"), "fail"), ("blessed",), False),
            ("thresholds", 0, "value"),
            None,
        ),
        "$.thresholds[0].value",
        "None",
    ),
    (
        "evaluation_report",
        "finding feature",
        lambda: _set(evaluation_report(), ("data_shift", "training_data", 0, "feature"), "brightness"),
        "$.data_shift.training_data[0].feature",
        "brightness",
    ),
    # blessing
    (
        "blessing",
        "shifted yet blessed",
        lambda: _set(blessing(), ("data_shift", "decision"), "shifted"),
        "$.blessed",
        "False was expected",
    ),
    (
        "blessing",
        "accepted without the flag",
        lambda: _set(blessing(), ("data_shift", "accepted"), False),
        "$.data_shift.accepted",
        "True was expected",
    ),
    (
        "blessing",
        "no reasons",
        lambda: _set(blessing(), ("reasons",), []),
        "$.reasons",
        "should be non-empty",
    ),
    (
        "blessing",
        "bad sha",
        lambda: _set(blessing(), ("evaluation_report_sha256",), "abc123"),
        "$.evaluation_report_sha256",
        "abc123",
    ),
    (
        "blessing",
        "missing",
        lambda: _set(blessing(), ("first_run_without_champion",), DELETE),
        "$",
        "first_run_without_champion",
    ),
    (
        "blessing",
        "dataset version not a sha256",
        lambda: _set(blessing(), ("dataset_version",), "mnist-v2"),
        "$.dataset_version",
        "mnist-v2",
    ),
    # registration_record
    (
        "registration_record",
        "version when refused",
        lambda: _set(registration_record_refused(), ("version",), "5"),
        "$.version",
        "'null'",
    ),
    (
        "registration_record",
        "no version",
        lambda: _set(registration_record(), ("version",), None),
        "$.version",
        "string",
    ),
    (
        "registration_record",
        "uppercase sha",
        lambda: _set(registration_record(), ("lineage", "data_report_sha256"), SHA_A.upper()),
        "$.lineage.data_report_sha256",
        "does not match",
    ),
    (
        "registration_record",
        "component version type",
        lambda: _set(registration_record(), ("lineage", "component_versions", "train"), 3),
        "$.lineage.component_versions.train",
        "string",
    ),
    (
        "registration_record",
        "missing lineage field",
        lambda: _set(registration_record(), ("lineage", "blessed"), DELETE),
        "$.lineage",
        "blessed",
    ),
    # deployment_record
    (
        "deployment_record",
        "target enum",
        lambda: _set(deployment_record(), ("target",), "aws"),
        "$.target",
        "aws",
    ),
    (
        "deployment_record",
        "not a registry uri",
        lambda: _set(deployment_record(), ("model_uri",), "runs:/abc/model"),
        "$.model_uri",
        "runs:/abc/model",
    ),
    (
        "deployment_record",
        "traffic>100",
        lambda: _set(deployment_record(), ("traffic", "green"), 101),
        "$.traffic.green",
        "maximum",
    ),
    (
        "deployment_record",
        "action enum",
        lambda: _set(deployment_record(), ("action",), "promote"),
        "$.action",
        "promote",
    ),
    (
        "deployment_record",
        "outcome enum",
        lambda: _set(deployment_record(), ("outcome",), "partial"),
        "$.outcome",
        "partial",
    ),
    (
        "deployment_record",
        "negative count",
        lambda: _set(deployment_record(), ("infra_validation", "canary_requests"), -1),
        "$.infra_validation.canary_requests",
        "minimum",
    ),
    # scoring_request
    (
        "scoring_request",
        "empty image",
        lambda: {"instances": [_image(), []]},
        "$.instances[1]",
        "should be non-empty",
    ),
    (
        "scoring_request",
        "empty row",
        lambda: _set(scoring_request(), ("instances", 0, 4), []),
        "$.instances[0][4]",
        "should be non-empty",
    ),
    (
        "scoring_request",
        "two channels",
        lambda: {"instances": [[[[1, 2]]]]},
        "$.instances[0][0][0]",
        "too short",
    ),
    (
        "scoring_request",
        "rgb then gray pixel",
        lambda: _set(scoring_request_rgb(), ("instances", 0, 3, 4), [9]),
        "$.instances[0][3][4]",
        "too short",
    ),
    (
        "scoring_request",
        "value 256",
        lambda: _set(scoring_request(), ("instances", 0, 3, 4), 256),
        "$.instances[0][3][4]",
        "256",
    ),
    (
        "scoring_request",
        "float pixel",
        lambda: _set(scoring_request(), ("instances", 1, 0, 0), 0.5),
        "$.instances[1][0][0]",
        "integer",
    ),
    (
        "scoring_request",
        "hwc value 300",
        lambda: _set(scoring_request_hwc(), ("instances", 0, 5, 6), [300]),
        "$.instances[0][5][6][0]",
        "300",
    ),
    ("scoring_request", "mixed layout", _hwc_with_flat_pixel, "$.instances[0][5][6]", "array"),
    (
        "scoring_request",
        "both keys",
        lambda: {**scoring_request(), **scoring_request_png()},
        "$.images",
        "should not be valid",
    ),
    ("scoring_request", "neither key", lambda: {}, "$", "not valid under any"),
    ("scoring_request", "empty batch", lambda: {"instances": []}, "$.instances", "should be non-empty"),
    (
        "scoring_request",
        "not a png",
        lambda: {"images": [base64.b64encode(b"GIF89a...").decode()]},
        "$.images[0]",
        "does not match",
    ),
    # scoring_response
    (
        "scoring_response",
        "1 probability",
        lambda: _set(scoring_response(), ("predictions", 0, "probabilities"), [1.0]),
        "$.predictions[0].probabilities",
        "too short",
    ),
    (
        "scoring_response",
        "class 255",
        lambda: _set(scoring_response(), ("predictions", 0, "class"), 255),
        "$.predictions[0].class",
        "maximum",
    ),
    (
        "scoring_response",
        "no label",
        lambda: _set(scoring_response(), ("predictions", 0, "label"), DELETE),
        "$.predictions[0]",
        "label",
    ),
    (
        "scoring_response",
        "missing",
        lambda: _set(scoring_response(), ("model_version",), DELETE),
        "$",
        "model_version",
    ),
    # run_record
    (
        "run_record",
        "status enum",
        lambda: _set(run_record(), ("nodes", 0, "status"), "ok"),
        "$.nodes[0].status",
        "ok",
    ),
    (
        "run_record",
        "short cache key",
        lambda: _set(run_record(), ("nodes", 1, "cache_key"), "abc"),
        "$.nodes[1].cache_key",
        "abc",
    ),
    (
        "run_record",
        "no cache key when done",
        lambda: _set(run_record(), ("nodes", 1, "cache_key"), None),
        "$.nodes[1].cache_key",
        "string",
    ),
    (
        "run_record",
        "output sha",
        lambda: _set(run_record(), ("nodes", 1, "outputs", "model", "sha256"), "x" * 64),
        "$.nodes[1].outputs.model.sha256",
        "does not match",
    ),
    (
        "run_record",
        "negative seconds",
        lambda: _set(run_record(), ("nodes", 1, "seconds"), -1),
        "$.nodes[1].seconds",
        "minimum",
    ),
    ("run_record", "finished without time", _succeeded_without_finish, "$.finished_at", "None"),
    ("run_record", "run status enum", lambda: _set(run_record(), ("status",), "done"), "$.status", "done"),
    # the shared definitions (definitions.schema.json), reached through a $ref
    (
        "evaluation_report",
        "zero-height image shape",
        lambda: _set(evaluation_report(), ("model", "image_shape", 0), 0),
        "$.model.image_shape[0]",
        "minimum",
    ),
    (
        "registration_record",
        "colour images with four channels",
        lambda: _set(registration_record(), ("lineage", "interface", "image_shape"), [32, 32, 4]),
        "$.lineage.interface.image_shape[2]",
        "3 was expected",
    ),
    (
        "evaluation_report",
        "a class named twice",
        lambda: _set(evaluation_report(), ("model", "classes"), ["0", "0"]),
        "$.model.classes",
        "non-unique",
    ),
    # component_metadata
    (
        "component_metadata",
        "no such day",
        lambda: _set(component_metadata(), ("last_verified",), "2026-13-06"),
        "$.last_verified",
        "is not a 'date'",
    ),
    (
        "component_metadata",
        "not iso",
        lambda: _set(component_metadata(), ("last_verified",), "06/12/2026"),
        "$.last_verified",
        "is not a 'date'",
    ),
    (
        "component_metadata",
        "never verified",
        lambda: _set(component_metadata(), ("last_verified",), DELETE),
        "$",
        "last_verified",
    ),
    (
        "component_metadata",
        "stability enum",
        lambda: _set(component_metadata(), ("stability",), "experimental"),
        "$.stability",
        "experimental",
    ),
    (
        "component_metadata",
        "a copy of the spec's version",
        lambda: _set(component_metadata(), ("version",), "0.1.0"),
        "$",
        "'version' was unexpected",
    ),
    (
        "component_metadata",
        "comma in an owner",
        lambda: _set(component_metadata(), ("owners", 0), "data team, ml team"),
        "$.owners[0]",
        "does not match",
    ),
    (
        "component_metadata",
        "no tags",
        lambda: _set(component_metadata(), ("tags",), []),
        "$.tags",
        "should be non-empty",
    ),
    (
        "component_metadata",
        "tag with a space",
        lambda: _set(component_metadata(), ("tags", 1), "data validation"),
        "$.tags[1]",
        "does not match",
    ),
]


# --- tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", contracts.schema_names())
def test_schema_is_valid_draft_2020_12_with_metadata(name: str) -> None:
    schema = contracts.load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    assert schema.get("$id") == f"{SCHEMA_BASE}{name}.schema.json"
    assert schema.get("title")
    assert schema.get("description")


def test_later_stage_schemas_are_shipped() -> None:
    assert set(LATER_STAGE_SCHEMAS) <= set(contracts.schema_names())


@pytest.mark.parametrize("name", LATER_STAGE_SCHEMAS)
def test_later_stage_schema_conventions(name: str) -> None:
    schema = contracts.load_schema(name)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["schema_version"]["const"] == 1
    # Scoring requests keep schema_version optional so TF-Serving-style clients work unchanged.
    assert ("schema_version" in schema.get("required", [])) is (name != "scoring_request")


@pytest.mark.parametrize(("name", "example"), VALID, ids=[example.__name__ for _, example in VALID])
def test_valid_example(name: str, example: Callable[[], dict[str, Any]]) -> None:
    document = json.loads(json.dumps(example()))  # what a reader of the written file sees
    contracts.validate(document, name, source=f"{name}.json")


@pytest.mark.parametrize(
    ("name", "make", "json_path", "text"),
    [pytest.param(name, make, path, text, id=f"{name}-{case}") for name, case, make, path, text in INVALID],
)
def test_invalid_variant_names_the_field(
    name: str, make: Callable[[], Any], json_path: str, text: str
) -> None:
    with pytest.raises(ContractError) as caught:
        contracts.validate(make(), name, source=f"{name}.json")
    message = str(caught.value)
    assert f"{name}.json: field {json_path} does not match the {name} schema" in message
    assert text in message


def test_invalid_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "blessing.json"
    path.write_text(json.dumps(_set(blessing(), ("blessed",), "yes")))
    with pytest.raises(ContractError, match=r"blessing\.json: field \$\.blessed "):
        contracts.read_json(path, "blessing")
