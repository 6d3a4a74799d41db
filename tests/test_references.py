"""The reference bundle says what its data is (image shape and class names) before any array is read,
its test split is checked against that, and a bundle from before it said so reads as MNIST's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_mlops import contracts, references
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface
from tests.datasets import colour_splits, small_splits, write_png_tree

FOOD = ["apple", "bread", "cheese"]


def preprocessed(root: Path, splits: dict, classes: list[str] | None = None) -> Path:
    run_ingest(
        str(write_png_tree(root / "src", splits, classes=classes)), root / "dataset", root / "report.json"
    )
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    return root / "preprocessed"


def without_interface(bundle: Path) -> None:
    """The bundle as register wrote it before bundles recorded their image shape and classes."""
    manifest = json.loads((bundle / references.MANIFEST).read_text())
    del manifest["image_shape"], manifest["classes"]
    (bundle / references.MANIFEST).write_text(json.dumps(manifest))


def test_a_bundle_records_the_shape_and_classes_of_its_data(tmp_path):
    source = preprocessed(tmp_path, colour_splits(classes=3, train_per_class=8, test_per_class=4), FOOD)
    manifest = references.write_bundle(tmp_path / "bundle", source, tmp_path / "report.json")
    assert (manifest["image_shape"], manifest["classes"]) == ([32, 32, 3], FOOD)
    read, _ = references.read_bundle(tmp_path / "bundle")
    assert ModelInterface.of_dataset(read) == ModelInterface((32, 32, 3), tuple(FOOD))
    images, labels = references.test_split(tmp_path / "bundle")
    assert images.shape == (12, 32, 32, 3) and sorted(set(labels.tolist())) == [0, 1, 2]

    without_interface(tmp_path / "bundle")  # now it claims MNIST's 28x28 digits: its arrays disagree
    with pytest.raises(UserInputError, match=r"images must be uint8 \(N, 28, 28\) as the manifest says"):
        references.test_split(tmp_path / "bundle")


def test_a_bundle_from_before_it_recorded_them_reads_as_mnists(tmp_path):
    source = preprocessed(tmp_path, small_splits(train_per_class=4, test_per_class=2))
    references.write_bundle(tmp_path / "bundle", source, tmp_path / "report.json")
    without_interface(tmp_path / "bundle")
    manifest = contracts.read_json(tmp_path / "bundle" / references.MANIFEST, "reference_manifest")
    assert ModelInterface.of_dataset(manifest).describe() == (
        "28x28 grayscale images of 10 classes (0, 1, 2, 3, 4, 5, ... (10 in all))"
    )
    assert references.test_split(tmp_path / "bundle")[0].shape == (20, 28, 28)
