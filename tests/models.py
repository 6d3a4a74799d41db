"""A tiny model taken through ingest -> preprocess -> train -> evaluate, and its registration: the
starting point of every test of the stages after evaluate (register, deploy, monitor, batch_score), and
the KPI thresholds those tests judge it by."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_mlops.components.evaluate.executor import run_evaluate
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.register.executor import run_register
from mnist_mlops.components.train.executor import run_train
from tests.datasets import colour_splits, small_splits, write_png_tree

LENIENT = {
    "schema_version": 1,
    "min_accuracy": 0.5,
    "min_class_recall": 0.0,
    "max_regression": 1.0,
    "max_p99_latency_ms": 1000.0,
}
"""KPI thresholds (schema `kpi_thresholds`) a tiny model of generated digits passes: the stages after
evaluate need a blessed model, not a good one. Tests that need other limits override only those."""
ANY_MODEL = LENIENT | {"min_accuracy": 0.0, "max_p99_latency_ms": 10000.0}
"""Thresholds every model passes, however slow: for tests where its quality is beside the point."""


def preprocessed_digits(root: Path, splits: dict) -> Path:
    """`splits` written as PNGs, ingested and preprocessed in `root`; returns the preprocessed folder
    (beside it: src/, dataset/, data_report.json)."""
    run_ingest(str(write_png_tree(root / "src", splits)), root / "dataset", root / "data_report.json")
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    return root / "preprocessed"


def judged_model(
    root: Path, thresholds: dict, *, train_per_class: int, test_per_class: int, epochs: int
) -> Path:
    """Train on generated digits and evaluate against `thresholds`; outputs live in `root` (returned):
    src/, dataset/, data_report.json, preprocessed/, model/, summary.json, evaluation/, blessing.json."""
    preprocessed = preprocessed_digits(
        root, small_splits(train_per_class=train_per_class, test_per_class=test_per_class)
    )
    run_train(
        preprocessed, root / "model", root / "summary.json", root / "curves.png", epochs=epochs, batch_size=16
    )
    judge(root, thresholds, root)
    return root


def judge(root: Path, thresholds: dict, verdict: Path) -> Path:
    """Evaluate the model `judged_model` trained in `root` against `thresholds` into `verdict` (returned):
    thresholds.json, evaluation/, blessing.json. One model judged by several gates, each in its folder."""
    verdict.mkdir(parents=True, exist_ok=True)
    (verdict / "thresholds.json").write_text(json.dumps(thresholds))
    run_evaluate(
        root / "model",
        root / "preprocessed",
        verdict / "evaluation",
        verdict / "blessing.json",
        thresholds=verdict / "thresholds.json",
    )
    return verdict


def register_model(
    root: Path, registry: str, record: Path, *, verdict: Path | None = None, **options: str
) -> dict:
    """Register the model `judged_model` left in `root` with the blessing in `verdict` (`root` itself
    unless `judge` wrote another); returns the registration record."""
    verdict = verdict or root
    return run_register(
        root / "model",
        verdict / "blessing.json",
        verdict / "evaluation",
        root / "summary.json",
        root / "data_report.json",
        root / "preprocessed",
        record,
        registry=registry,
        **options,
    )


def champion_folder(
    model_dir: Path,
    destination: Path,
    version: str,
    *,
    trained_on: Path | None = None,
    traffic: dict | None = None,
) -> Path:
    """A champion folder as resolve_champion writes it, for a model registered as `version`: with the
    reference bundle of the data it was `trained_on` (a `preprocessed_digits` folder, its
    data_report.json beside it) and a `traffic_summary`, when given."""
    import shutil

    from mnist_mlops import contracts, references
    from mnist_mlops.champions import MODEL, RECORD, REFERENCE, TRAFFIC

    shutil.copytree(model_dir, destination / MODEL)
    reference = {"found": False, "uri": None, "dataset_version": None, "reason": "no reference given"}
    if trained_on is not None:
        bundle = references.write_bundle(
            destination / REFERENCE, trained_on, trained_on.parent / "data_report.json"
        )
        reference = {
            "found": True,
            "uri": "runs:/0123/reference",
            "dataset_version": bundle["dataset_version"],
            "reason": f"mnist-mlops v{version} was trained on dataset {bundle['dataset_version'][:12]}",
        }
    seen = {"found": False, "folder": None, "log_state": None, "images": 0, "reason": "no traffic given"}
    if traffic is not None:
        contracts.write_json(destination / TRAFFIC, traffic, "traffic_summary")
        seen = {
            "found": True,
            "folder": traffic["folder"],
            "log_state": "0" * 64,
            "images": traffic["images"],
            "reason": f"{traffic['images']} recent images",
        }
    record = {
        "schema_version": 1,
        "found": True,
        "model_name": "mnist-mlops",
        "pointer": "production",
        "version": version,
        "model_uri": f"models:/mnist-mlops/{version}",
        "registry_uri": "sqlite:///elsewhere/mlflow.db",
        "reason": f"mnist-mlops@production is version {version}",
        "reference": reference,
        "traffic": seen,
    }
    contracts.write_json(destination / RECORD, record, "champion_record")
    return destination


def colour_model(root: Path, classes: list[str], prefix: str = "mnist_png", epochs: int = 2) -> Path:
    """A tiny judged model of 32x32 colour images of `classes` (class-tinted noise), laid out in `root` as
    `judged_model` lays out its digits model; every model passes its thresholds."""
    splits = colour_splits(classes=len(classes), train_per_class=60)
    source = write_png_tree(root / "src", splits, prefix, classes)
    run_ingest(str(source), root / "dataset", root / "data_report.json")
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    run_train(
        root / "preprocessed",
        root / "model",
        root / "summary.json",
        root / "curves.png",
        epochs=epochs,
        batch_size=32,
    )
    return judge(root, ANY_MODEL, root)
