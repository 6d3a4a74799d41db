"""What each artifact port carries: the typed artifact specs of every component, in one place.

AML and KFP check only the port *type* of an edge (uri_file to uri_file); both would happily wire
evaluate's blessing into deploy's registration_record. Each artifact here is named by the contract of
its content: a JSON Schema in `schemas/` (for a folder, the schema of its manifest), `mlflow_model`, or
`png`. Pipelines are checked edge by edge against this table before submission. A file output is named
after its content too: `training_curves.png`, `predictions.csv`, `blessing.json` (`file_name`).
"""

from __future__ import annotations

from mnist_mlops.contracts import schema_names

ARTIFACTS: dict[tuple[str, str], str] = {
    ("ingest", "source_data"): "raw_mnist",
    ("ingest", "reference_report"): "data_report",
    ("ingest", "dataset"): "dataset_manifest",
    ("ingest", "data_report"): "data_report",
    ("preprocess", "dataset"): "dataset_manifest",
    ("preprocess", "preprocessed"): "preprocessed_manifest",
    ("train", "preprocessed"): "preprocessed_manifest",
    ("train", "model"): "mlflow_model",
    ("train", "training_summary"): "training_summary",
    ("train", "training_curves"): "png",
    ("evaluate", "challenger"): "mlflow_model",
    ("evaluate", "champion"): "champion_record",
    ("resolve_champion", "champion"): "champion_record",
    ("resolve_champion", "request_log"): "request_record",
    ("evaluate", "preprocessed"): "preprocessed_manifest",
    ("evaluate", "thresholds"): "kpi_thresholds",
    ("evaluate", "evaluation"): "evaluation_report",
    ("evaluate", "blessing"): "blessing",
    ("register", "model"): "mlflow_model",
    ("register", "blessing"): "blessing",
    ("register", "evaluation"): "evaluation_report",
    ("register", "training_summary"): "training_summary",
    ("register", "data_report"): "data_report",
    ("register", "preprocessed"): "preprocessed_manifest",
    ("register", "registration_record"): "registration_record",
    ("deploy", "test_data"): "preprocessed_manifest",
    ("deploy", "registration_record"): "registration_record",
    ("deploy", "deployment_record"): "deployment_record",
    ("batch_score", "images"): "raw_images",
    ("batch_score", "predictions"): "predictions_csv",
    ("batch_score", "summary"): "batch_score_summary",
    ("monitor", "requests"): "request_record",
    ("monitor", "baseline"): "preprocessed_manifest",
    ("monitor", "thresholds"): "monitor_thresholds",
    ("monitor", "report"): "monitor_report",
}


def artifact_of(component: str, port: str) -> str:
    """The artifact kind of a component's port; `component` may be a stage or its full name."""
    return ARTIFACTS[(component.removeprefix("mnist_mlops_"), port)]


NOT_JSON_EXTENSIONS = {"png": ".png", "predictions_csv": ".csv"}
"""File artifacts that are not JSON documents, by kind; any other file artifact is named by its schema."""


def file_name(component: str, port: str) -> str:
    """The name of a file output (uri_file) where a run keeps it: the port, with its content's extension."""
    kind = artifact_of(component, port)
    if kind in NOT_JSON_EXTENSIONS:
        return port + NOT_JSON_EXTENSIONS[kind]
    if kind in schema_names():
        return f"{port}.json"
    raise KeyError(f"{component}.{port} holds {kind!r}: no schema of that name and no known extension")
