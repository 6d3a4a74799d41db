"""evaluate: the blessing, its reasons, and the incident: better on old data, worse on current data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.evaluate.executor import run_evaluate
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.errors import UserInputError
from tests import models
from tests.datasets import small_splits
from tests.models import champion_folder, preprocessed_digits

pytestmark = pytest.mark.slow  # trains models or starts servers

LENIENT = models.LENIENT | {"min_accuracy": 0.8, "min_class_recall": 0.5, "max_regression": 0.02}


def rotated(splits: dict) -> dict:
    """The same digits turned a quarter: a distribution the old data never showed."""
    return {
        name: (np.ascontiguousarray(np.rot90(images, axes=(1, 2))), labels)
        for name, (images, labels) in splits.items()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    old = preprocessed_digits(root / "old", small_splits(train_per_class=24, test_per_class=8, seed=1))
    current = preprocessed_digits(
        root / "current", rotated(small_splits(train_per_class=24, test_per_class=8, seed=2))
    )
    for name, data in (("challenger", old), ("champion", current)):
        run_train(data, root / name, root / f"{name}.json", root / f"{name}.png", epochs=10, batch_size=16)
    thresholds = root / "thresholds.json"
    thresholds.write_text(json.dumps(LENIENT))
    return {
        "root": root,
        "old": old,
        "current": current,
        "challenger": root / "challenger",
        "champion": champion_folder(root / "champion", root / "champion-v3", "3"),
        "thresholds": thresholds,
    }


def judge(world: dict, out: Path, data: str, **options) -> tuple[dict, dict]:
    run_evaluate(
        world["challenger"],
        world[data],
        out / "evaluation",
        out / "blessing.json",
        thresholds=world["thresholds"],
        **options,
    )
    return (
        contracts.read_json(out / "evaluation" / "evaluation_report.json", "evaluation_report"),
        contracts.read_json(out / "blessing.json", "blessing"),
    )


def test_first_run_without_champion_is_judged_on_thresholds_and_says_so(tmp_path, world):
    report, blessing = judge(world, tmp_path, "old")
    assert report["champion"] is None and blessing["first_run_without_champion"] is True
    regression = next(gate for gate in report["thresholds"] if gate["name"] == "max_regression")
    assert regression["outcome"] == "skipped" and "first run" in regression["reason"]
    assert blessing["blessed"] is True and report["accuracy"] >= 0.8
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "evaluation" / name).read_bytes()[:4] == b"\x89PNG"
    card = (tmp_path / "evaluation" / "model_card.md").read_text()
    assert "Blessed" in card and "first model" in card
    sha = hashlib.sha256((tmp_path / "evaluation" / "evaluation_report.json").read_bytes()).hexdigest()
    assert blessing["evaluation_report_sha256"] == sha


def test_the_incident_better_on_old_data_is_not_blessed_on_current_data(tmp_path, world):
    """The challenger beats the champion on its own old test set, but the gate uses the current one."""
    old_report, _ = judge(
        world,
        tmp_path / "old",
        "old",
        champion=world["champion"],
    )
    assert old_report["accuracy"] > old_report["champion"]["accuracy"] + 0.2

    report, blessing = judge(
        world,
        tmp_path / "current",
        "current",
        champion=world["champion"],
    )
    assert report["champion"]["version"] == "3" and report["champion"]["accuracy"] > report["accuracy"]
    assert blessing["blessed"] is False and report["blessed"] is False
    regression = next(gate for gate in report["thresholds"] if gate["name"] == "max_regression")
    assert regression["outcome"] == "fail"
    assert any(
        "vs champion mnist-mlops v3" in reason and "more than the allowed" in reason
        for reason in blessing["reasons"]
    )
    assert "Not blessed" in (tmp_path / "current" / "evaluation" / "model_card.md").read_text()


def test_bad_inputs_are_named_and_leave_nothing(tmp_path, world):
    with pytest.raises(UserInputError, match="not an MLflow model"):
        run_evaluate(tmp_path, world["old"], tmp_path / "e", tmp_path / "b.json")
    broken = tmp_path / "thresholds.json"
    broken.write_text(json.dumps(LENIENT | {"min_accuracy": 1.5}))
    with pytest.raises(contracts.ContractError, match=r"thresholds\.json: field \$\.min_accuracy"):
        run_evaluate(
            world["challenger"], world["old"], tmp_path / "e", tmp_path / "b.json", thresholds=broken
        )
    with pytest.raises(contracts.ContractError, match=r"champion\.json"):
        run_evaluate(
            world["challenger"],
            world["old"],
            tmp_path / "e",
            tmp_path / "b.json",
            champion=world["champion"] / "model",  # a bare model is not a champion folder
        )
    assert not (tmp_path / "e").exists() and not (tmp_path / "b.json").exists()
