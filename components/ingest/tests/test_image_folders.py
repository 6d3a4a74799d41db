"""The dataset describes itself: any class names, image size and channel count; mixed shapes are never
taken silently; MNIST keeps its dataset versions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.ingest.executor import DataValidationError, run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import image_digests, labelled_set_digest
from tests.datasets import colour_splits, png_bytes, small_splits, write_png_tree

ANIMALS = ["cat", "dog", "fox"]


def ingest(tmp_path: Path, source: Path, **options) -> tuple[dict, dict, Path]:
    out = tmp_path / "out"
    manifest = run_ingest(str(source), out / "dataset", out / "data_report.json", **options)
    return manifest, contracts.read_json(out / "data_report.json", "data_report"), out / "dataset"


def check(report: dict, name: str) -> dict:
    return next(item for item in report["checks"] if item["name"] == name)


@pytest.fixture
def animals(tmp_path: Path) -> Path:
    """32x32 RGB PNGs in training/<animal>/ and testing/<animal>/."""
    return write_png_tree(tmp_path / "src", colour_splits(classes=len(ANIMALS)), "animals", ANIMALS)


def test_rgb_images_of_named_classes_ingest_with_their_shape_and_sorted_classes(tmp_path, animals):
    manifest, report, dataset = ingest(tmp_path, animals)
    contracts.read_json(dataset / "manifest.json", "dataset_manifest")
    assert manifest["image_shape"] == [32, 32, 3] and manifest["classes"] == ANIMALS
    assert manifest["splits"]["training"]["class_counts"] == [10, 10, 10]
    for split in ("training", "testing"):
        stats = report["splits"][split]
        assert (stats["image_shape"], stats["mode"], stats["classes"]) == ([32, 32, 3], "RGB", ANIMALS)
        assert stats["converted"] == stats["resized"] == 0
    assert check(report, "image_shapes")["reason"] == "every image is 32x32x3"
    images = np.load(dataset / "training" / "images.npy")
    labels = np.load(dataset / "training" / "labels.npy")
    expected_images, expected_labels = colour_splits(classes=len(ANIMALS))["training"]
    assert images.shape == (30, 32, 32, 3)
    assert {(image.tobytes(), int(label)) for image, label in zip(images, labels, strict=True)} == {
        (image.tobytes(), int(label)) for image, label in zip(expected_images, expected_labels, strict=True)
    }


def test_preprocess_copies_the_description_and_counts_per_class(tmp_path, animals):
    _, _, dataset = ingest(tmp_path, animals)
    manifest = run_preprocess(dataset, tmp_path / "pre", validation_fraction=0.2)
    contracts.read_json(tmp_path / "pre" / "manifest.json", "preprocessed_manifest")
    assert manifest["image_shape"] == [32, 32, 3] and manifest["classes"] == ANIMALS
    assert manifest["splits"]["validation"]["class_counts"] == [2, 2, 2]
    baseline = contracts.read_json(tmp_path / "pre" / "baseline_statistics.json", "baseline_statistics")
    assert baseline["class_priors"] == pytest.approx([1 / 3] * 3)
    assert [row["count"] for row in baseline["per_class"]] == [8, 8, 8]
    assert np.asarray(baseline["mean_image"]).shape == (32, 32, 3)


def test_declared_classes_set_the_label_order(tmp_path, animals):
    sorted_manifest, _, _ = ingest(tmp_path / "sorted", animals)
    manifest, _, dataset = ingest(tmp_path / "declared", animals, classes="fox, cat,dog")
    assert manifest["classes"] == ["fox", "cat", "dog"]
    images = np.load(dataset / "testing" / "images.npy")
    labels = np.load(dataset / "testing" / "labels.npy")
    source_images, source_labels = colour_splits(classes=len(ANIMALS))["testing"]
    fox = source_images[source_labels == ANIMALS.index("fox")][0]
    assert labels[next(i for i, image in enumerate(images) if (image == fox).all())] == 0
    assert manifest["dataset_version"] != sorted_manifest["dataset_version"]


def test_class_names_are_part_of_the_dataset_version(tmp_path, animals):
    named, _, _ = ingest(tmp_path / "animals", animals)
    renamed_tree = write_png_tree(
        tmp_path / "renamed", colour_splits(classes=3), "animals", ["ant", "bee", "cow"]
    )
    renamed, _, _ = ingest(tmp_path / "renamed-out", renamed_tree)
    assert renamed["dataset_version"] != named["dataset_version"]


def test_mnist_keeps_its_dataset_version_and_description(tmp_path, png_dataset):
    manifest, report, _ = ingest(tmp_path / "inferred", png_dataset)
    digits = [str(digit) for digit in range(10)]
    assert (manifest["image_shape"], manifest["classes"]) == ([28, 28], digits)
    assert report["splits"]["training"]["mode"] == "L"
    whole = hashlib.sha256()  # the version as it was computed before datasets described themselves
    for split, (images, labels) in small_splits().items():
        whole.update(split.encode() + labelled_set_digest(image_digests(images), labels).digest())
    assert manifest["dataset_version"] == whole.hexdigest()
    declared, _, _ = ingest(tmp_path / "declared", png_dataset, classes=",".join(digits))
    assert declared["dataset_version"] == manifest["dataset_version"]


def test_a_class_folder_in_testing_that_training_lacks_is_named(tmp_path, animals):
    bird = animals / "animals" / "testing" / "bird"
    bird.mkdir()
    (bird / "0.png").write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8), "RGB"))
    with pytest.raises(
        UserInputError, match=r"class folder testing/bird \(e\.g\. animals/testing/bird/0\.png\)"
    ):
        ingest(tmp_path, animals)
    assert not (tmp_path / "out").exists()


def test_a_class_folder_without_images_fails_naming_the_class(tmp_path, animals):
    for split in ("training", "testing"):
        (animals / "animals" / split / "bird").mkdir()
        (animals / "animals" / split / "bird" / "Thumbs.db").write_bytes(b"not an image")
    with pytest.raises(DataValidationError, match="training has no images of class 'bird'"):
        ingest(tmp_path, animals, on_invalid="skip", max_invalid_fraction=0.1)
    assert not (tmp_path / "out").exists()


def test_a_declared_class_without_images_and_an_undeclared_folder_are_named(tmp_path, animals):
    with pytest.raises(DataValidationError, match="training has no images of class 'bird'"):
        ingest(tmp_path, animals, classes="cat,dog,fox,bird")
    with pytest.raises(UserInputError, match=r"training/fox .* not one of the declared classes \(cat, dog\)"):
        ingest(tmp_path, animals, classes="cat,dog")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("cat,,dog", "holds an empty name"),
        ("cat,dog,cat", "names cat more than once"),
        ("cat", "only 1 class"),
        (",".join(f"c{index}" for index in range(256)), "256 classes .* more than the 255"),
    ],
)
def test_bad_declared_classes_are_refused(tmp_path, animals, classes, message):
    with pytest.raises(UserInputError, match=message):
        ingest(tmp_path, animals, classes=classes)
    assert not (tmp_path / "out").exists()


def test_more_class_folders_than_uint8_labels_hold_are_refused(tmp_path):
    pixel = png_bytes(np.zeros((2, 2), np.uint8))
    for split in ("training", "testing"):
        for index in range(256):
            folder = tmp_path / "src" / split / f"c{index:03d}"
            folder.mkdir(parents=True)
            (folder / "0.png").write_bytes(pixel)
    with pytest.raises(
        UserInputError, match=r"training's class folders: 256 classes \(c000, c001, c002, \.\.\.\)"
    ):
        ingest(tmp_path, tmp_path / "src")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def mixed(animals: Path) -> Path:
    """The animals plus a smaller colour image and a grayscale one of the right size."""
    folder = animals / "animals" / "training" / "dog"
    smaller = np.full((30, 30, 3), (200, 100, 50), np.uint8)
    (folder / "smaller.png").write_bytes(png_bytes(smaller, "RGB"))
    (folder / "gray.png").write_bytes(png_bytes(np.full((32, 32), 77, np.uint8)))
    return animals


def test_mixed_shapes_fail_by_default_naming_counts_and_files(tmp_path, mixed):
    with pytest.raises(DataValidationError) as error:
        ingest(tmp_path, mixed)
    message = str(error.value)
    assert "image_shapes: 2 images of another shape than most, 32x32x3: " in message
    assert "30x30x3 (1)" in message and "32x32 grayscale (1)" in message
    assert "animals/training/dog/gray.png (32x32 grayscale)" in message
    assert "animals/training/dog/smaller.png (30x30x3)" in message
    assert not (tmp_path / "out").exists()


def test_mixed_shapes_are_resized_and_converted_on_request_and_reported(tmp_path, mixed):
    manifest, report, dataset = ingest(tmp_path, mixed, on_mixed_shape="resize")
    assert manifest["image_shape"] == [32, 32, 3] and manifest["splits"]["training"]["count"] == 32
    assert (report["splits"]["training"]["resized"], report["splits"]["training"]["converted"]) == (1, 1)
    shapes = check(report, "image_shapes")
    assert shapes["outcome"] == "warn" and report["outcome"] == "warn"
    assert shapes["reason"].startswith("resized or converted 2 images to 32x32x3 (on_mixed_shape=resize)")
    assert report["policy"]["on_mixed_shape"] == "resize"
    images = np.load(dataset / "training" / "images.npy")
    assert any((image == 77).all() for image in images), "the grayscale image, in three equal channels"
    assert any((image == (200, 100, 50)).all() for image in images), "the smaller image, resized"


def test_a_split_wholly_of_another_shape_is_named_and_resized_on_request(tmp_path):
    splits = {
        "training": colour_splits(classes=3)["training"],
        "testing": colour_splits(classes=3, size=28)["testing"],
    }
    source = write_png_tree(tmp_path / "src", splits, "animals", ANIMALS)
    message = (
        r"no testing image is 32x32x3, the dataset's shape \(most images\): testing has 28x28x3 \(9\), "
        r"e\.g\. animals/testing/cat/0\.png; on_mixed_shape=resize"
    )
    with pytest.raises(UserInputError, match=message):
        ingest(tmp_path, source)
    assert not (tmp_path / "out").exists()
    manifest, report, _ = ingest(tmp_path, source, on_mixed_shape="resize")
    assert manifest["splits"]["testing"]["count"] == 9 and report["splits"]["testing"]["resized"] == 9


def test_a_changed_class_list_is_flagged_against_the_reference_report(tmp_path, animals):
    ingest(tmp_path / "v1", animals)
    _, report, _ = ingest(
        tmp_path / "v2",
        animals,
        classes="dog,cat,fox",
        reference_report=tmp_path / "v1" / "out" / "data_report.json",
    )
    schema = check(report, "training_schema")
    assert schema["outcome"] == "warn"
    assert schema["reason"] == "classes ['cat', 'dog', 'fox'] -> ['dog', 'cat', 'fox']"
    assert check(report, "training_class_prior_shift")["value"] == 0, "priors are compared class by class"


def test_a_manifest_whose_labels_exceed_its_classes_is_refused(tmp_path, animals):
    _, _, dataset = ingest(tmp_path, animals)
    manifest = contracts.read_json(dataset / "manifest.json", "dataset_manifest")
    manifest["classes"] = ["cat", "dog"]
    contracts.write_json(dataset / "manifest.json", manifest, "dataset_manifest")
    with pytest.raises(UserInputError, match=r"training: label 2 is outside 0-1 \(2 classes\)"):
        run_preprocess(dataset, tmp_path / "pre")
    assert not (tmp_path / "pre").exists()


def test_the_manifest_schema_takes_grayscale_and_colour_shapes_only(tmp_path, animals):
    manifest, _, _ = ingest(tmp_path, animals)
    with pytest.raises(contracts.ContractError, match=r"image_shape"):
        contracts.validate(
            manifest | {"image_shape": [32, 32, 4]}, "dataset_manifest", source="manifest.json"
        )
