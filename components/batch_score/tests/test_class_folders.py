"""batch_score follows the model's interface, without TensorFlow: a fake colour model of named classes
decodes, predicts and labels rows by name, and the `labels` modes decide which class folders are labels
(auto), must all be (folders) or none are (none)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from mnist_mlops.components.batch_score.executor import expected_classes, score_mini_batch
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import MNIST, ModelInterface
from mnist_mlops.serving.scorer import LoadedModel
from tests.datasets import png_bytes

FOOD = ModelInterface((32, 32, 3), ("apple", "bread", "cheese"))


def brightest_channel(images: np.ndarray) -> np.ndarray:
    """A stand-in colour model: the class is the channel with the most light (red, green, blue)."""
    assert images.shape[1:] == FOOD.image_shape and images.dtype == np.uint8
    return np.eye(3, dtype=np.float32)[images.reshape(len(images), -1, 3).mean(axis=1).argmax(axis=1)]


def tinted(channel: int) -> np.ndarray:
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., channel] = 200
    return image


def test_a_colour_model_of_named_classes_scores_rows_by_name():
    model = LoadedModel("food", "2", brightest_channel, FOOD)
    files = {
        "testing/bread/a.png": png_bytes(tinted(1), "RGB"),
        "testing/apple/e.png": png_bytes(np.zeros((28, 28), np.uint8)),  # an MNIST-sized image
        "testing/cheese/b.png": png_bytes(tinted(2), "RGB"),
        "incoming/c.png": png_bytes(tinted(0), "RGB"),
        "testing/apple/d.png": png_bytes(tinted(1), "RGB"),  # green, in the apple folder: a wrong answer
        "f.png": png_bytes(tinted(0), "RGB"),
    }
    paths = list(files)
    expected = expected_classes(paths, FOOD, "auto", "data")
    assert expected == [1, 0, 2, None, 0, None]
    scored = score_mini_batch(model, paths, list(files.values()), expected)
    assert list(csv.reader(io.StringIO(scored.rows))) == [
        ["testing/bread/a.png", "1", "bread", "1.000000", "bread"],
        ["testing/cheese/b.png", "2", "cheese", "1.000000", "cheese"],
        ["incoming/c.png", "0", "apple", "1.000000", ""],
        ["testing/apple/d.png", "1", "bread", "1.000000", "apple"],
        ["f.png", "0", "apple", "1.000000", ""],
    ]
    assert scored.skipped == [{"path": "testing/apple/e.png", "reason": "wrong size 28x28, expected 32x32"}]
    assert (scored.class_counts, scored.labelled, scored.correct) == ([2, 2, 1], 3, 2)


def test_a_grayscale_png_of_the_right_size_is_scored_as_colour():
    scored = score_mini_batch(
        LoadedModel("food", "2", brightest_channel, FOOD),
        ["gray.png"],
        [png_bytes(np.full((32, 32), 90, np.uint8))],
        [None],
    )
    assert scored.skipped == [] and scored.class_counts == [1, 0, 0]  # equal channels: the first wins


MONTHS = [f"incoming/2024/{month}/x.png" for month in range(1, 13)]
DIGITS = [f"testing/{digit}/x.png" for digit in range(10)]


@pytest.mark.parametrize(
    ("interface", "labelled", "unlabelled"),
    [
        (MNIST, [*DIGITS, *(f"training/{digit}/y.png" for digit in range(10))], []),
        (MNIST, DIGITS, MONTHS),  # months 1-9 are no digits while 10-12 sit beside them
        (MNIST, [], ["3/x.png", "notes/x.png", "x.png"]),
        (FOOD, ["testing/apple/1.png", "testing/bread/1.png"], ["testing/notes.txt", "top.png"]),
        (FOOD, ["testing/apple/1.png"], ["testing/apple/deeper/1.png", "a/Apple/x.png", "digits/3/1.png"]),
        (FOOD, [], ["testing/apple/1.png", "testing/figs/1.png", "testing/figs/2.png"]),
    ],
)
def test_auto_labels_a_folder_only_when_it_and_its_siblings_all_name_classes(interface, labelled, unlabelled):
    paths = sorted([*labelled, *unlabelled])
    expected = dict(zip(paths, expected_classes(paths, interface, "auto", "data"), strict=True))
    assert {path: expected[path] for path in labelled} == {
        path: interface.classes.index(path.split("/")[-2]) for path in labelled
    }
    assert {path: expected[path] for path in unlabelled} == dict.fromkeys(unlabelled)


def test_folders_labels_every_file_by_its_folder():
    paths = ["testing/apple/1.png", "a/b/cheese/2.png", "bread/3.png"]
    assert expected_classes(paths, FOOD, "folders", "data") == [0, 2, 1]


@pytest.mark.parametrize(
    ("interface", "paths", "named"),
    [
        (MNIST, [*DIGITS, *MONTHS], "incoming/2024/10, incoming/2024/11, incoming/2024/12"),
        (FOOD, ["testing/apple/1.png", "testing/figs/1.png", "testing/figs/2.png"], "testing/figs"),
        (FOOD, ["apple/1.png", "loose.png"], "(top level)"),
        (
            FOOD,
            [f"extra{number}/x.png" for number in range(8)],
            "extra0, extra1, extra2, extra3, extra4, extra5, ... (8 in all)",
        ),
    ],
)
def test_folders_refuses_folders_that_name_no_class_of_the_model(interface, paths, named):
    with pytest.raises(UserInputError) as refused:
        expected_classes(paths, interface, "folders", "data.tar.gz")
    assert str(refused.value) == (
        f"data.tar.gz: labels=folders, but the folders {named} name no class the model answers: it was"
        f" trained for {interface.class_count} classes"
        f" ({'0, 1, 2, 3, 4, 5, ... (10 in all)' if interface is MNIST else 'apple, bread, cheese'})."
        " Score data of those classes with a model trained on them, or pass labels=auto or none"
    )


def test_none_labels_nothing_and_other_modes_are_refused():
    assert expected_classes(DIGITS, MNIST, "none", "data") == [None] * 10
    with pytest.raises(UserInputError, match="labels='Folders': must be one of auto, folders, none"):
        expected_classes(DIGITS, MNIST, "Folders", "data")
