"""register: put a blessed model in the registry with its lineage, verified, or decline with reasons.

Framework-free interface. Only a blessed model is registered (an unblessed one ends cleanly with
"not registered" and the evaluate gate's reasons). The new version carries lineage tags, evaluate's
data-shift decision among them, and its reference bundle (`mnist_mlops.references`: what it was
trained and tested on, logged in the same run as the model and named by the `reference_uri` tag), so a
later run can compare new data with production's without this run's folder. It is loaded back from the
registry and must reproduce the trained model's predictions on a golden batch of test images before it
is tagged `validation_status=ready` and given the alias `challenger`; any failure deletes the version,
so a half-registered version is never usable. A registration killed before its check cannot delete
its own: the version stays `pending` (unusable) until the next registration on the same embedded
registry deletes it, under the registry's lock. The logged model carries its scoring copy
(`mnist_mlops.onnx_export`: an ONNX export checked on the same golden images before logging, and again
as the server loads it from the registry); a model tf2onnx cannot convert is registered to be scored
through TensorFlow, the reason in its export record, the registration record and a warning; any other
failure of the export fails the registration. Concurrent registrations get distinct versions (the
registry numbers them; SQLite lock contention is retried).
The version's tags say what the model takes and answers (`image_shape`, `classes`), so a registry user
sees it without opening the model, and what scores it (`scoring_runtime`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import contracts, references
from mnist_mlops.dataset import classes_of, describe_shape, load_split
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.onnx_export import export_onnx, same_predictions
from mnist_mlops.ports import checked, load_spec
from mnist_mlops.provenance import code_version, environment_hash
from mnist_mlops.registry import (
    JUDGEMENT_FILES,
    JUDGEMENT_TAG,
    READY_TAG,
    SHIFT_REFERENCE_DATASET_TAG,
    SHIFT_REFERENCE_VERSION_TAG,
    SHIFT_TAG,
    client,
    exclusive,
    experiment_id,
    registry_uri,
    set_pointer,
    sqlite_file,
    with_retries,
)
from mnist_mlops.serving.scorer import RegistryModels
from mnist_mlops.uris import redact

COMPONENT_NAME = "mnist_mlops_register"
CHALLENGER_ALIAS = "challenger"
GOLDEN_BATCH = 256
EXPERIMENT = "mnist-mlops"
JUDGEMENT_PATH = "evaluation"
"""Run artifact folder of the blessing, model card and evaluation report the version was registered on."""
PRODUCERS = ("ingest", "preprocess", "train", "evaluate", "register")
"""The components whose versions a registered model's lineage records."""
SCORING_RUNTIME_TAG = "scoring_runtime"
"""What scores the version in the server and batch scoring: onnxruntime (its export) or tensorflow."""
CLASSES_TAG_LENGTH = 1000
"""The longest `classes` tag: registry UIs show a tag on one line; the full list is in the registration
record and the model's MLmodel metadata."""


@checked("register")
def run_register(
    model: str | Path,
    blessing: str | Path,
    evaluation: str | Path,
    training_summary: str | Path,
    data_report: str | Path,
    preprocessed: str | Path,
    registration_record: str | Path,
    *,
    model_name: str = "mnist-mlops",
    registry: str | None = None,
    pipeline_run_id: str | None = None,
) -> dict[str, Any]:
    """Register the model if blessed; always write the registration record. Returns the record."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    blessing_document = contracts.read_json(blessing, "blessing")
    report_path = Path(evaluation) / "evaluation_report.json"
    report = contracts.read_json(report_path, "evaluation_report")
    summary = contracts.read_json(training_summary, "training_summary")
    ingest_report = contracts.read_json(data_report, "data_report")
    if blessing_document["evaluation_report_sha256"] != sha256_file(report_path):
        raise UserInputError(f"{blessing}: was issued for another evaluation report than {report_path}")
    versions = {report["dataset_version"], summary["dataset_version"], ingest_report["dataset_version"]}
    if len(versions) != 1:
        raise UserInputError(
            "lineage mismatch: the report, training summary and data report name different datasets"
        )
    uri = registry_uri(registry)
    lineage = {
        "dataset_version": report["dataset_version"],
        "data_report_sha256": sha256_file(data_report),
        "code_version": code_version(),
        "component_versions": {name: load_spec(name)["version"] for name in PRODUCERS},
        "environment_hash": environment_hash(),
        "pipeline_run_id": pipeline_run_id or os.environ.get("AZUREML_ROOT_RUN_ID") or "manual",
        "interface": {key: report["model"][key] for key in ("image_shape", "classes")},
        "metrics": {
            "accuracy": report["accuracy"],
            "p99_ms": report["latency"]["p99_ms"],
            "val_accuracy": summary["metrics"]["val_accuracy"],
        },
        "blessed": blessing_document["blessed"],
        "data_shift": {
            key: blessing_document["data_shift"][key]
            for key in ("decision", "reference_model_version", "reference_dataset_version")
        },
    }
    record = {
        "schema_version": 1,
        "registered": False,
        "model_name": model_name,
        "version": None,
        "aliases": [],
        "registry_uri": redact(uri),
        "reasons": [],
        "lineage": lineage,
    }
    if not blessing_document["blessed"]:
        record["reasons"] = ["not registered: the model was not blessed", *blessing_document["reasons"]]
        contracts.write_json(registration_record, record, "registration_record")
        print("; ".join(record["reasons"]), flush=True)
        return record

    preprocessed = Path(preprocessed)
    manifest = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    golden, _ = load_split(preprocessed, manifest, "test")
    _check_interface(Path(model), lineage["interface"], manifest, golden, preprocessed)
    with tempfile.TemporaryDirectory(prefix="reference-") as bundle:
        references.write_bundle(Path(bundle), preprocessed, Path(data_report))
        with exclusive(uri):
            given = (Path(blessing), Path(evaluation) / "model_card.md", report_path)
            judgement = dict(zip(JUDGEMENT_FILES, given, strict=True))
            version, export = _register_verified(
                Path(model), Path(bundle), judgement, golden[:GOLDEN_BATCH], model_name, uri, lineage
            )
    reasons = [
        f"registered {model_name} version {version}: blessed, verified on {GOLDEN_BATCH} golden images"
    ]
    if export["runtime"] != "onnxruntime":  # served, but at the TensorFlow server's memory: a warning
        reasons.append(f"no ONNX export, scored through TensorFlow: {export['reason']}")
        print(f"warning: {model_name} version {version}: {reasons[-1]}", file=sys.stderr, flush=True)
    record |= {"registered": True, "version": version, "aliases": [CHALLENGER_ALIAS], "reasons": reasons}
    contracts.write_json(registration_record, record, "registration_record")
    print("; ".join(reasons), flush=True)
    return record


def _register_verified(
    model_dir: Path,
    reference: Path,
    judgement: dict[str, Path],
    golden: np.ndarray,
    name: str,
    uri: str,
    lineage: dict,
) -> tuple[str, dict[str, Any]]:
    """Log the model with its scoring export, its `reference` bundle and the gate's `judgement`
    (blessing, model card, report) in one run (the node's own, when the platform or the runner made
    one), create the version (tagged with where each is) and verify it; returns the version and the
    export record."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    trained = mlflow.pyfunc.load_model(str(model_dir))
    expected = np.asarray(trained.predict(golden))
    registry = client(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with_retries(lambda: registry.create_registered_model(name))
    except MlflowException as error:
        if "already exists" not in str(error).lower():
            raise
    if sqlite_file(uri) is not None:  # `exclusive` holds its lock: no other registration is under way
        _delete_interrupted(registry, name)
    with tempfile.TemporaryDirectory(prefix="model-") as staged:
        logged = Path(staged) / "model"
        shutil.copytree(model_dir, logged)
        interface = ModelInterface.of_model(model_dir)
        export = export_onnx(logged, trained.get_raw_model(), interface, golden, expected)
        with _job_run(uri) as run:
            mlflow.log_artifacts(str(logged), artifact_path="model")
            mlflow.log_artifacts(str(reference), artifact_path=references.ARTIFACT_PATH)
            with tempfile.TemporaryDirectory(prefix="judgement-") as kept:
                for kept_as, path in judgement.items():
                    shutil.copyfile(path, Path(kept) / kept_as)
                mlflow.log_artifacts(kept, artifact_path=JUDGEMENT_PATH)
            mlflow.log_metrics(lineage["metrics"])
            source = f"runs:/{run.info.run_id}/model"
    tags = {
        **_lineage_tags(lineage),
        references.TAG: f"runs:/{run.info.run_id}/{references.ARTIFACT_PATH}",
        JUDGEMENT_TAG: f"runs:/{run.info.run_id}/{JUDGEMENT_PATH}",
        READY_TAG: "pending",
        SCORING_RUNTIME_TAG: export["runtime"],
    }
    created = with_retries(
        lambda: registry.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    )
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{created.version}")
        if not same_predictions(np.asarray(loaded.predict(golden)), expected):
            raise UserInputError(
                f"{name} version {created.version}: the registered copy predicts differently"
            )
        served = RegistryModels(f"models:/{name}/{created.version}", uri).load(str(created.version))
        if not same_predictions(np.asarray(served.predict(golden)), expected):
            raise UserInputError(
                f"{name} version {created.version}: the registered copy predicts differently when scored"
                f" the way the server scores it ({export['runtime']})"
            )
        with_retries(lambda: registry.set_model_version_tag(name, created.version, READY_TAG, "ready"))
        with_retries(lambda: set_pointer(uri, name, CHALLENGER_ALIAS, str(created.version)))
    except BaseException:
        with_retries(lambda: registry.delete_model_version(name, created.version))
        raise
    return str(created.version), export


def _delete_interrupted(registry: Any, name: str) -> None:
    """Delete the versions a killed registration left `pending` (created, never verified, so never
    usable): a registration killed before its check cannot delete its own version. Only where no other
    registration can be under way: pending means interrupted there, elsewhere it may mean in progress."""
    for version in registry.search_model_versions(f"name='{name}'"):
        if (version.tags or {}).get(READY_TAG) == "pending":
            with_retries(lambda number=version.version: registry.delete_model_version(name, number))
            print(
                f"warning: deleted {name} version {version.version}: its registration was interrupted"
                " before its check",
                file=sys.stderr,
                flush=True,
            )


def _check_interface(
    model_dir: Path, evaluated: dict, manifest: dict, golden: np.ndarray, preprocessed: Path
) -> None:
    """Refuse a model other than the one evaluate judged (it takes or answers something else), or data
    it cannot take, before anything reaches the registry."""
    interface = ModelInterface.of_model(model_dir)
    judged = ModelInterface(tuple(evaluated["image_shape"]), tuple(evaluated["classes"]))
    if interface != judged:
        raise UserInputError(
            f"{model_dir}: takes {interface.describe()}; the evaluation report judged a model that takes "
            f"{judged.describe()}: not the evaluated model"
        )
    source = f"register: model {model_dir} on the test split of {preprocessed}"
    interface.check_answers(classes_of(manifest), source)
    interface.check_images(golden, source)


def _job_run(uri: str):
    """The run to log the model in: the one the platform made for this job (Azure ML sets
    MLFLOW_RUN_ID), else a new run in the project's experiment."""
    import mlflow

    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
    experiment = with_retries(lambda: experiment_id(uri, EXPERIMENT))
    return mlflow.start_run(experiment_id=experiment, run_name="register")


def _lineage_tags(lineage: dict) -> dict[str, str]:
    """The lineage as flat version tags; the interface as `image_shape` ("32x32x3") and `classes`; the
    data-shift decision as `data_shift` (what `mnist-mlops models` lists) and the reference it was
    judged against ("-" when there was none)."""
    nested = ("metrics", "component_versions", "data_shift", "interface")
    tags = {key: str(value) for key, value in lineage.items() if key not in nested}
    tags |= {
        "image_shape": describe_shape(lineage["interface"]["image_shape"]),
        "classes": classes_tag(lineage["interface"]["classes"]),
    }
    tags |= {f"component.{name}": version for name, version in lineage["component_versions"].items()}
    tags |= {f"metric.{name}": f"{value:.6g}" for name, value in lineage["metrics"].items()}
    shift = lineage["data_shift"]
    tags |= {
        SHIFT_TAG: shift["decision"],
        SHIFT_REFERENCE_VERSION_TAG: shift["reference_model_version"] or "-",
        SHIFT_REFERENCE_DATASET_TAG: shift["reference_dataset_version"] or "-",
    }
    return tags


def classes_tag(classes: list[str]) -> str:
    """The class names comma-separated, as many as fit in CLASSES_TAG_LENGTH, then the count as
    `dataset.listed` gives it (a budget of characters here, not of names)."""
    joined = ", ".join(classes)
    if len(joined) <= CLASSES_TAG_LENGTH:
        return joined
    suffix = f", ... ({len(classes)} in all)"
    shown = ""
    for name in classes:
        longer = f"{shown}, {name}" if shown else name
        if len(longer) + len(suffix) > CLASSES_TAG_LENGTH:
            break
        shown = longer
    return shown + suffix
