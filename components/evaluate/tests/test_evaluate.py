"""evaluate: the blessing, its reasons, and the incidents: better on old data, worse on current data;
and trained on data that no longer describes production (issue 15)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts, data_shift, features
from mnist_mlops.champions import RECORD
from mnist_mlops.components.evaluate.executor import run_evaluate
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.dataset import load_split
from mnist_mlops.errors import UserInputError
from tests import models
from tests.datasets import small_splits
from tests.models import champion_folder, preprocessed_digits

pytestmark = pytest.mark.slow  # trains models or starts servers

LENIENT = models.LENIENT | {"min_accuracy": 0.8, "min_class_recall": 0.5, "max_regression": 0.02}
"""No data-shift limits: a thresholds file without them gets the defaults."""
SHIFT_GATES = ("max_data_shift", "max_traffic_shift", "max_reference_regression")


def rotated(splits: dict) -> dict:
    """The same digits turned a quarter: a distribution the old data never showed."""
    return {
        name: (np.ascontiguousarray(np.rot90(images, axes=(1, 2))), labels)
        for name, (images, labels) in splits.items()
    }


def traffic(images: np.ndarray) -> dict:
    """A traffic_summary of clients sending `images`, as resolve_champion writes it."""
    values = features.per_image(images)
    entries = [{name: float(column[row]) for name, column in values.items()} for row in range(len(images))]
    source = {
        "folder": "requests",
        "requests": len(images),
        "window": 1000,
        "time_range": {"from": "2026-12-01T00:00:00Z", "to": "2026-12-06T00:00:00Z"},
    }
    return data_shift.traffic_summary(entries, source)


def training_images(preprocessed: Path) -> np.ndarray:
    manifest = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    return load_split(preprocessed, manifest, "train")[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Old digits and current (rotated) ones, a model trained on each."""
    root = tmp_path_factory.mktemp("evaluate")
    old = preprocessed_digits(root / "old", small_splits(train_per_class=24, test_per_class=8, seed=1))
    current = preprocessed_digits(
        root / "current", rotated(small_splits(train_per_class=24, test_per_class=8, seed=2))
    )
    for name, data in (("old_model", old), ("current_model", current)):
        run_train(data, root / name, root / f"{name}.json", root / f"{name}.png", epochs=10, batch_size=16)
    thresholds = root / "thresholds.json"
    thresholds.write_text(json.dumps(LENIENT))
    return {
        "root": root,
        "old": old,
        "current": current,
        "old_model": root / "old_model",
        "current_model": root / "current_model",
        "thresholds": thresholds,
    }


def judge(world: dict, out: Path, challenger: str, data: str, **options) -> tuple[dict, dict]:
    options.setdefault("thresholds", world["thresholds"])
    run_evaluate(world[challenger], world[data], out / "evaluation", out / "blessing.json", **options)
    return (
        contracts.read_json(out / "evaluation" / "evaluation_report.json", "evaluation_report"),
        contracts.read_json(out / "blessing.json", "blessing"),
    )


def gates(report: dict) -> dict[str, dict]:
    return {gate["name"]: gate for gate in report["thresholds"]}


def dataset_version(preprocessed: Path) -> str:
    return contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")["dataset_version"]


def test_first_run_without_champion_is_judged_on_thresholds_and_says_so(tmp_path, world):
    report, blessing = judge(world, tmp_path, "old_model", "old")
    assert report["champion"] is None and blessing["first_run_without_champion"] is True
    regression = gates(report)["max_regression"]
    assert regression["outcome"] == "skipped" and "first run" in regression["reason"]
    assert blessing["blessed"] is True and report["accuracy"] >= 0.8
    assert report["model"]["image_shape"] == [28, 28] and report["thresholds_source"] == "given"
    assert [row["name"] for row in report["per_class"]] == [str(digit) for digit in range(10)]
    assert not any(reason.startswith("KPI thresholds") for reason in blessing["reasons"])
    for name in SHIFT_GATES:
        assert gates(report)[name]["outcome"] == "no_reference"
        assert "no champion given" in gates(report)[name]["reason"]
    assert blessing["data_shift"] | {"reasons": []} == {
        "decision": "no_reference",
        "accepted": False,
        "reference_model_version": None,
        "reference_dataset_version": None,
        "reasons": [],
    }
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "evaluation" / name).read_bytes()[:4] == b"\x89PNG"
    card = (tmp_path / "evaluation" / "model_card.md").read_text()
    assert "Blessed" in card and "first model" in card and "## Data shift" in card
    sha = hashlib.sha256((tmp_path / "evaluation" / "evaluation_report.json").read_bytes()).hexdigest()
    assert blessing["evaluation_report_sha256"] == sha


def test_the_incident_better_on_old_data_is_not_blessed_on_current_data(tmp_path, world):
    """The challenger beats the champion on its own old test set, but the gate uses the current one."""
    champion = champion_folder(world["current_model"], tmp_path / "champion-v3", "3")
    old_report, _ = judge(world, tmp_path / "old", "old_model", "old", champion=champion)
    assert old_report["accuracy"] > old_report["champion"]["accuracy"] + 0.2

    report, blessing = judge(world, tmp_path / "current", "old_model", "current", champion=champion)
    assert report["champion"]["version"] == "3" and report["champion"]["accuracy"] > report["accuracy"]
    assert blessing["blessed"] is False and report["blessed"] is False
    assert gates(report)["max_regression"]["outcome"] == "fail"
    assert any(
        "vs champion mnist-mlops v3" in reason and "more than the allowed" in reason
        for reason in blessing["reasons"]
    )
    assert "Not blessed" in (tmp_path / "current" / "evaluation" / "model_card.md").read_text()


def test_training_data_shifted_from_production_s_is_not_blessed_and_the_reasons_name_the_shift(
    tmp_path, world
):
    """Issue 15: production was trained on the old digits; the new delivery is rotated. On its own test
    split the challenger is far better, but the data no longer describes what production was built for."""
    champion = champion_folder(world["old_model"], tmp_path / "champion-v1", "1", trained_on=world["old"])
    report, blessing = judge(world, tmp_path / "run", "current_model", "current", champion=champion)
    assert gates(report)["max_regression"]["outcome"] == "pass"  # better on the new test split
    assert blessing["blessed"] is False and report["data_shift"]["decision"] == "shifted"

    old_version = dataset_version(world["old"])
    shift = gates(report)["max_data_shift"]
    assert shift["outcome"] == "fail" and shift["value"] > shift["threshold"]
    source = f"mnist-mlops v1's (dataset {old_version[:12]})"
    assert shift["reason"].startswith(f"training data shifted from {source}: ")
    assert "mean_image mean absolute pixel difference" in shift["reason"]
    shifted = {finding["feature"] for finding in report["data_shift"]["training_data"] if finding["shifted"]}
    assert "mean_image" in shifted and "class_priors" not in shifted

    split = report["data_shift"]["reference_split"]
    assert split["dataset_version"] == old_version and split["test_count"] == 80
    assert split["champion_accuracy"] > split["challenger_accuracy"] + 0.2
    regression = gates(report)["max_reference_regression"]
    assert regression["outcome"] == "fail" and regression["threshold"] == 0.01  # the default
    for figure in (split["challenger_accuracy"], split["champion_accuracy"]):
        assert f"{figure:.4f}" in regression["reason"]
    assert "80 images of dataset" in regression["reason"]

    assert shift["reason"] in blessing["reasons"] and regression["reason"] in blessing["reasons"]
    assert blessing["data_shift"]["decision"] == "shifted" and blessing["data_shift"]["accepted"] is False
    assert blessing["data_shift"]["reference_model_version"] == "1"
    assert blessing["data_shift"]["reference_dataset_version"] == old_version
    assert f"max_data_shift: {shift['reason']}" in blessing["data_shift"]["reasons"]
    card = (tmp_path / "run" / "evaluation" / "model_card.md").read_text()
    assert "Decision: **shifted**" in card and "| mean_image mean absolute pixel difference |" in card


def test_promoting_shifted_data_is_an_explicit_decision_recorded_everywhere(tmp_path, world):
    champion = champion_folder(
        world["old_model"],
        tmp_path / "champion-v1",
        "1",
        trained_on=world["old"],
        traffic=traffic(training_images(world["current"])),  # clients moved with the data
    )
    report, blessing = judge(
        world, tmp_path / "run", "current_model", "current", champion=champion, accept_data_shift=True
    )
    assert blessing["blessed"] is True and report["blessed"] is True
    outcomes = {name: gates(report)[name]["outcome"] for name in SHIFT_GATES}
    assert outcomes == {
        "max_data_shift": "accepted",
        "max_traffic_shift": "pass",
        "max_reference_regression": "accepted",
    }
    accepted = gates(report)["max_data_shift"]["reason"]
    assert accepted.startswith("accepted by evaluate.accept_data_shift: training data shifted from ")
    assert report["data_shift"]["traffic"]["images"] == len(training_images(world["current"]))
    assert report["data_shift"]["decision"] == "accepted" and report["data_shift"]["accepted"] is True
    assert blessing["data_shift"]["decision"] == "accepted" and blessing["data_shift"]["accepted"] is True
    assert f"max_data_shift: {accepted}" in blessing["data_shift"]["reasons"]
    card = (tmp_path / "run" / "evaluation" / "model_card.md").read_text()
    assert "Decision: **accepted**" in card and "**Promoted although the data shifted" in card


def test_a_challenger_worse_on_production_s_own_test_split_is_not_blessed(tmp_path, world):
    """Limits from the thresholds file let the training data pass; the champion's split still speaks."""
    loose = world["root"] / "loose.json"
    limits = {"mean_intensity": 10.0, "ink_fraction": 10.0, "pixel_values": 10.0, "mean_image": 1.0}
    loose.write_text(json.dumps(LENIENT | {"max_data_shift": limits}))
    champion = champion_folder(world["old_model"], tmp_path / "champion-v1", "1", trained_on=world["old"])
    report, blessing = judge(
        world, tmp_path / "run", "current_model", "current", champion=champion, thresholds=loose
    )
    assert gates(report)["max_data_shift"]["outcome"] == "pass"
    assert {finding["limit"] for finding in report["data_shift"]["training_data"]} >= {1.0, 10.0, 0.05}
    assert gates(report)["max_reference_regression"]["outcome"] == "fail"
    assert blessing["blessed"] is False and blessing["data_shift"]["decision"] == "shifted"
    assert blessing["reasons"] == [gates(report)["max_reference_regression"]["reason"]]


def test_traffic_unlike_the_new_training_data_is_not_blessed(tmp_path, world):
    """The new data is what production was trained on (the champion's model is another, so the
    challenger is not the champion itself), but clients now send brighter images."""
    bright = (training_images(world["old"]) * 0.4 + 120).astype(np.uint8)
    champion = champion_folder(
        world["current_model"],
        tmp_path / "champion-v1",
        "1",
        trained_on=world["old"],
        traffic=traffic(bright),
    )
    report, blessing = judge(world, tmp_path / "run", "old_model", "old", champion=champion)
    assert gates(report)["max_data_shift"]["outcome"] == "pass"
    assert {finding["value"] for finding in report["data_shift"]["training_data"]} == {0}  # the same data
    traffic_gate = gates(report)["max_traffic_shift"]
    assert blessing["blessed"] is False and blessing["reasons"] == [traffic_gate["reason"]]
    seen = f"training data unlike what clients sent ({len(bright)} images, 2026-12-01T00:00:00Z to "
    assert traffic_gate["reason"].startswith(seen)
    assert "mean_intensity PSI" in traffic_gate["reason"] and "ink_fraction PSI" in traffic_gate["reason"]
    assert report["data_shift"]["decision"] == "shifted"


def test_a_reference_that_cannot_be_read_is_a_warning_and_no_reference(tmp_path, world, capsys):
    champion = champion_folder(world["current_model"], tmp_path / "champion-v1", "1", trained_on=world["old"])
    (champion / "reference" / "test" / "images.npy").unlink()
    capsys.readouterr()
    report, blessing = judge(world, tmp_path / "broken", "old_model", "old", champion=champion)
    warning = capsys.readouterr().err
    assert "warning: mnist-mlops v1's reference in" in warning and "cannot be read" in warning
    assert gates(report)["max_data_shift"]["outcome"] == "no_reference"
    assert gates(report)["max_data_shift"]["value"] is None
    assert gates(report)["max_reference_regression"]["outcome"] == "no_reference"
    assert report["data_shift"]["reference"]["found"] is False
    assert blessing["data_shift"]["decision"] == "no_reference" and blessing["blessed"] is True

    unregistered = champion_folder(world["current_model"], tmp_path / "champion-v2", "2")  # no bundle
    report, _ = judge(world, tmp_path / "missing", "old_model", "old", champion=unregistered)
    assert "warning: no reference given" in capsys.readouterr().err
    assert gates(report)["max_data_shift"]["reason"] == "no reference given"


def test_no_production_model_means_no_reference_said_so(tmp_path, world):
    nobody = tmp_path / "champion"
    nobody.mkdir()
    record = {
        "schema_version": 1,
        "found": False,
        "model_name": "mnist-mlops",
        "pointer": "production",
        "version": None,
        "model_uri": None,
        "registry_uri": "sqlite:///elsewhere/mlflow.db",
        "reason": "no champion: mnist-mlops@production names no version",
        "reference": {"found": False, "uri": None, "dataset_version": None, "reason": "no production model"},
        "traffic": {
            "found": False,
            "folder": None,
            "log_state": None,
            "images": 0,
            "reason": "no request log",
        },
    }
    contracts.write_json(nobody / RECORD, record, "champion_record")
    report, blessing = judge(world, tmp_path / "run", "old_model", "old", champion=nobody)
    assert report["champion"] is None and blessing["blessed"] is True
    data_gate = gates(report)["max_data_shift"]
    assert data_gate["outcome"] == "no_reference" and data_gate["reason"].startswith("no production model")
    assert gates(report)["max_traffic_shift"]["reason"] == "no request log"
    assert blessing["data_shift"]["decision"] == "no_reference"


def test_bad_inputs_are_named_and_leave_nothing(tmp_path, world):
    with pytest.raises(UserInputError, match="not an MLflow model"):
        run_evaluate(tmp_path, world["old"], tmp_path / "e", tmp_path / "b.json")
    broken = tmp_path / "thresholds.json"
    for mistake, field in (
        ({"min_accuracy": 1.5}, r"\$\.min_accuracy"),
        ({"max_data_shift": {"mean_brightness": 0.1}}, r"\$\.max_data_shift"),
    ):
        broken.write_text(json.dumps(LENIENT | mistake))
        with pytest.raises(contracts.ContractError, match=rf"thresholds\.json: field {field}"):
            run_evaluate(
                world["old_model"], world["old"], tmp_path / "e", tmp_path / "b.json", thresholds=broken
            )
    champion = champion_folder(world["current_model"], tmp_path / "champion-v3", "3")
    with pytest.raises(contracts.ContractError, match=r"champion\.json"):
        run_evaluate(
            world["old_model"],
            world["old"],
            tmp_path / "e",
            tmp_path / "b.json",
            champion=champion / "model",  # a bare model is not a champion folder
        )
    assert not (tmp_path / "e").exists() and not (tmp_path / "b.json").exists()
