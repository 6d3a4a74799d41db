"""batch_score with a real tiny model of 32x32 colour images of five named classes, registered in a
SQLite registry: rows and summary name the classes, in one process or in workers; class folders the
model was not trained for are not taken as labels, and with labels=folders are refused before anything
is written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.batch_score.executor import COLUMNS, run_batch_score, work_dir
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.serving.scorer import RegistryModels
from tests.datasets import colour_images, make_tarball, png_bytes
from tests.models import colour_model, register_model

pytestmark = pytest.mark.slow  # trains a model

FOOD = ["apple", "bread", "cheese", "dates", "eggs"]
MODEL = "models:/mnist-mlops/1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry holding version 1: a model of `FOOD`, trained on class-tinted colour noise."""
    root = tmp_path_factory.mktemp("food-model")
    colour_model(root, FOOD, epochs=4)  # after two, one class is not learnt yet (0.73 on 15 test images)
    uri = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    register_model(root, uri, root / "registration.json")
    return uri


def food_tree(root: Path, *extra: str) -> dict[str, bytes]:
    """PNGs as a user delivers them: `testing/<class>/<n>.png` (the training split's tints, new noise),
    one unlabelled image, one MNIST-sized grayscale image, and an empty file in each `extra` folder."""
    images, labels = colour_images(5, 3, seed=0)  # seed 0: the tints the model was trained on
    files = {
        f"testing/{FOOD[label]}/{index}.png": png_bytes(image, "RGB")
        for index, (image, label) in enumerate(zip(images, labels, strict=True))
    }
    files["incoming/unlabelled.png"] = png_bytes(images[4], "RGB")
    files["incoming/digit.png"] = png_bytes(np.zeros((28, 28), np.uint8))
    files |= {f"{folder}/1.png": b"" for folder in extra}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS == ("path", "class", "label", "confidence", "expected")
        return list(reader)


def test_rows_and_summary_name_the_models_classes(registry, tmp_path):
    files = food_tree(tmp_path / "images")
    tarball = make_tarball(tmp_path / "images", tmp_path / "images.tar.gz")
    out = tmp_path / "out"
    summary = run_batch_score(
        MODEL, tarball, out / "predictions.csv", out / "summary.json", registry=registry
    )
    rows = read_rows(out / "predictions.csv")

    scored = sorted(path for path in files if path != "incoming/digit.png")
    assert [row["path"] for row in rows] == scored
    assert summary["skipped"] == [
        {"path": "incoming/digit.png", "reason": "wrong size 28x28, expected 32x32"}
    ]
    assert all(row["label"] == FOOD[int(row["class"])] for row in rows)
    assert {row["path"]: row["expected"] for row in rows} == {
        path: path.split("/")[1] if path.startswith("testing/") else "" for path in scored
    }
    predicted = [row["label"] for row in rows]
    assert summary["class_distribution"] == {name: predicted.count(name) for name in FOOD}
    assert list(summary["class_distribution"]) == FOOD  # every class, in label order
    labelled = [row for row in rows if row["expected"]]
    assert summary["labelled"] == len(labelled) == 15
    assert summary["accuracy"] == round(np.mean([row["label"] == row["expected"] for row in labelled]), 6)
    assert summary["accuracy"] >= 0.8  # the tints are easy: the rows are a trained model's, not noise
    assert contracts.read_json(out / "summary.json", "batch_score_summary") == summary

    loaded = RegistryModels(MODEL, registry).load("1")
    images = decode_pngs([files[path] for path in scored], loaded.interface.image_shape).images
    assert [int(row["class"]) for row in rows] == loaded.predict(images).argmax(axis=1).tolist()

    in_workers = tmp_path / "workers"
    again = run_batch_score(
        MODEL,
        tarball,
        in_workers / "predictions.csv",
        in_workers / "summary.json",
        registry=registry,
        mini_batch_size=4,
        workers=2,
    )
    assert (in_workers / "predictions.csv").read_bytes() == (out / "predictions.csv").read_bytes()
    assert again["class_distribution"] == summary["class_distribution"]


def test_class_folders_the_model_was_not_trained_for_are_no_labels_or_refused(registry, tmp_path):
    food_tree(tmp_path / "images", "testing/figs", "testing/grapes")
    out = tmp_path / "out"
    summary = run_batch_score(
        MODEL, tmp_path / "images", out / "predictions.csv", out / "summary.json", registry=registry
    )
    assert (summary["labels"], summary["labelled"], summary["accuracy"]) == ("auto", 0, None)
    assert summary["scored"] == 16  # figs and grapes hold empty files, skipped like the 28x28 digit

    refused_out = tmp_path / "refused"
    with pytest.raises(UserInputError) as refused:
        run_batch_score(
            MODEL,
            tmp_path / "images",
            refused_out / "predictions.csv",
            refused_out / "summary.json",
            registry=registry,
            labels="folders",
        )
    assert str(refused.value) == (
        f"{tmp_path / 'images'}: labels=folders, but the folders incoming, testing/figs, testing/grapes name"
        " no class the model answers: it was trained for 5 classes (apple, bread, cheese, dates, eggs)."
        " Score data of those classes with a model trained on them, or pass labels=auto or none"
    )
    assert not refused_out.exists() and not work_dir(refused_out / "predictions.csv").exists()
