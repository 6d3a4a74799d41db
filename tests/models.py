"""A tiny model taken through ingest -> preprocess -> train -> evaluate, and its registration: the
starting point of every test of the stages after evaluate (register, deploy, monitor, batch_score)."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_mlops.components.evaluate.executor import run_evaluate
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.register.executor import run_register
from mnist_mlops.components.train.executor import run_train
from tests.datasets import small_splits, write_png_tree


def judged_model(
    root: Path, thresholds: dict, *, train_per_class: int, test_per_class: int, epochs: int
) -> Path:
    """Train on generated digits and evaluate against `thresholds`; outputs live in `root` (returned):
    src/, dataset/, data_report.json, preprocessed/, model/, summary.json, evaluation/, blessing.json."""
    source = write_png_tree(
        root / "src", small_splits(train_per_class=train_per_class, test_per_class=test_per_class)
    )
    run_ingest(str(source), root / "dataset", root / "data_report.json")
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    run_train(
        root / "preprocessed",
        root / "model",
        root / "summary.json",
        root / "curves.png",
        epochs=epochs,
        batch_size=16,
    )
    (root / "thresholds.json").write_text(json.dumps(thresholds))
    run_evaluate(
        root / "model",
        root / "preprocessed",
        root / "evaluation",
        root / "blessing.json",
        thresholds=root / "thresholds.json",
    )
    return root


def register_model(root: Path, registry: str, record: Path) -> dict:
    """Register the model `judged_model` left in `root`; returns the registration record."""
    return run_register(
        root / "model",
        root / "blessing.json",
        root / "evaluation",
        root / "summary.json",
        root / "data_report.json",
        root / "preprocessed",
        record,
        registry=registry,
    )


def champion_folder(model_dir: Path, destination: Path, version: str) -> Path:
    """A champion folder as resolve_champion writes it, for a model registered as `version`."""
    import shutil

    from mnist_mlops import contracts

    shutil.copytree(model_dir, destination / "model")
    record = {
        "schema_version": 1,
        "found": True,
        "model_name": "mnist-mlops",
        "pointer": "production",
        "version": version,
        "model_uri": f"models:/mnist-mlops/{version}",
        "registry_uri": "sqlite:///elsewhere/mlflow.db",
        "reason": f"mnist-mlops@production is version {version}",
    }
    contracts.write_json(destination / "champion.json", record, "champion_record")
    return destination
