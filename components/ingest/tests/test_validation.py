"""Data validation: age, duplicates, leakage, schema changes and shift against a reference report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.ingest.executor import DataValidationError, run_ingest
from tests.datasets import small_splits, write_png_tree


def ingest(tmp_path: Path, source: Path, name: str = "out", **options) -> dict:
    out = tmp_path / name
    run_ingest(str(source), out / "dataset", out / "data_report.json", **options)
    return contracts.read_json(out / "data_report.json", "data_report")


def check(report: dict, name: str) -> dict:
    return next(item for item in report["checks"] if item["name"] == name)


def test_stale_data_fails_under_on_stale_fail_and_warns_otherwise(tmp_path, png_dataset):
    later = datetime.now(UTC) + timedelta(days=400)
    with pytest.raises(DataValidationError, match="data_age"):
        ingest(tmp_path, png_dataset, max_age_days=365, on_stale="fail", now=later)
    assert not (tmp_path / "out").exists()
    report = ingest(tmp_path, png_dataset, max_age_days=365, on_stale="warn", now=later)
    assert check(report, "data_age")["outcome"] == "warn" and report["outcome"] == "warn"
    assert check(report, "data_age")["value"] >= 399


def test_duplicates_and_leakage_are_counted(tmp_path):
    splits = small_splits()
    train_images, _ = splits["training"]
    test_images, _ = splits["testing"]
    train_images[1] = train_images[0]
    test_images[0] = train_images[5]
    report = ingest(tmp_path, write_png_tree(tmp_path / "src", splits))
    assert report["splits"]["training"]["duplicates"] == 1
    assert check(report, "training_duplicates")["outcome"] == "warn"
    assert check(report, "train_test_leakage")["value"] == 1


def test_missing_class_fails(tmp_path):
    splits = small_splits()
    images, labels = splits["testing"]
    splits["testing"] = (images[labels != 7], labels[labels != 7])
    with pytest.raises(DataValidationError, match=r"testing has no images of class '7'"):
        ingest(tmp_path, write_png_tree(tmp_path / "src", splits))


def test_reference_report_flags_schema_change_and_shift(tmp_path, png_dataset):
    reference = ingest(tmp_path, png_dataset, name="v1")
    same = ingest(tmp_path, png_dataset, name="v2", reference_report=tmp_path / "v1" / "data_report.json")
    assert same["reference_dataset_version"] == reference["dataset_version"]
    assert all(item["outcome"] == "pass" for item in same["checks"] if item["name"].endswith("_shift"))

    shifted = small_splits()
    images, labels = shifted["testing"]
    keep = (labels != 3) | (np.arange(len(labels)) % 3 == 0)
    brighter = np.clip(images[keep].astype(np.int16) + 60, 0, 255).astype(np.uint8)
    shifted["testing"] = (brighter, labels[keep])
    report = ingest(
        tmp_path,
        write_png_tree(tmp_path / "shifted", shifted),
        name="v3",
        reference_report=tmp_path / "v1" / "data_report.json",
    )
    assert check(report, "testing_pixel_mean_shift")["outcome"] == "warn"
    assert check(report, "testing_class_prior_shift")["outcome"] == "warn"
    assert check(report, "training_pixel_mean_shift")["outcome"] == "pass"
    assert report["outcome"] == "warn"


def test_a_bad_reference_report_names_file_and_field(tmp_path, png_dataset):
    bad = tmp_path / "reference.json"
    bad.write_text('{"schema_version": 1, "dataset_version": "abc"}')
    with pytest.raises(contracts.ContractError, match=r"reference\.json: field \$"):
        ingest(tmp_path, png_dataset, reference_report=bad)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(contracts.ContractError, match="not valid JSON"):
        ingest(tmp_path, png_dataset, reference_report=tmp_path / "broken.json")


def test_files_dated_in_the_future_fail_the_age_check(tmp_path, png_dataset):
    earlier = datetime.now(UTC) - timedelta(days=30)
    with pytest.raises(DataValidationError, match="in the future"):
        ingest(tmp_path, png_dataset, now=earlier)
