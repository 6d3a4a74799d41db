"""batch_score follows the model's interface, without TensorFlow: a fake colour model of named classes
decodes, predicts and labels rows by name, and class folders the model does not answer are refused."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from mnist_mlops.components.batch_score.executor import check_class_folders, expected_of, score_mini_batch
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.serving.scorer import LoadedModel
from tests.datasets import png_bytes

FOOD = ModelInterface((32, 32, 3), ("apple", "bread", "cheese"))
MNIST = ModelInterface(MNIST_IMAGE_SHAPE, MNIST_CLASSES)


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
    paths = ["testing/bread/a.png", "testing/cheese/b.png", "incoming/c.png", "testing/apple/d.png", "e.png"]
    blobs = [
        png_bytes(tinted(1), "RGB"),
        png_bytes(tinted(2), "RGB"),
        png_bytes(tinted(0), "RGB"),
        png_bytes(tinted(1), "RGB"),  # green, in the apple folder: a wrong answer
        png_bytes(np.zeros((28, 28), np.uint8)),  # an MNIST-sized image
    ]
    scored = score_mini_batch(model, paths, blobs)
    assert list(csv.reader(io.StringIO(scored.rows))) == [
        ["testing/bread/a.png", "1", "bread", "1.000000", "bread"],
        ["testing/cheese/b.png", "2", "cheese", "1.000000", "cheese"],
        ["incoming/c.png", "0", "apple", "1.000000", ""],
        ["testing/apple/d.png", "1", "bread", "1.000000", "apple"],
    ]
    assert scored.skipped == [{"path": "e.png", "reason": "wrong size 28x28, expected 32x32"}]
    assert (scored.class_counts, scored.labelled, scored.correct) == ([1, 2, 1], 3, 2)


def test_a_grayscale_png_of_the_right_size_is_scored_as_colour():
    scored = score_mini_batch(
        LoadedModel("food", "2", brightest_channel, FOOD),
        ["gray.png"],
        [png_bytes(np.full((32, 32), 90, np.uint8))],
    )
    assert scored.skipped == [] and scored.class_counts == [1, 0, 0]  # equal channels: the first wins


def test_the_expected_class_is_a_folder_the_model_answers():
    paths = ("a/apple/x.png", "apple/x.png", "x.png", "a/figs/x.png", "a/Apple/x.png", "apple/b/x.png")
    assert [expected_of(path, FOOD.classes) for path in paths] == [0, 0, None, None, None, None]


@pytest.mark.parametrize(
    ("interface", "paths", "named"),
    [
        (FOOD, ["testing/apple/1.png", "testing/figs/1.png", "testing/figs/2.png"], "testing/figs"),
        (MNIST, [*(f"testing/{digit}/x.png" for digit in range(10)), "testing/10/x.png"], "testing/10"),
        (FOOD, ["apple/1.png", "unsorted/1.png"], "unsorted"),
    ],
)
def test_class_folders_the_model_does_not_answer_are_refused(interface, paths, named):
    with pytest.raises(UserInputError) as refused:
        check_class_folders(paths, interface, "data.tar.gz")
    message = str(refused.value)
    assert message.startswith(f"data.tar.gz: folders {named} sit beside class folders")
    assert interface.describe() in message


def test_many_unknown_class_folders_are_counted_not_all_listed():
    paths = ["testing/apple/x.png", *(f"testing/extra{number}/x.png" for number in range(8))]
    with pytest.raises(UserInputError, match=r"testing/extra4 and 3 more sit beside"):
        check_class_folders(paths, FOOD, "data")


def test_folders_that_name_no_class_are_scored_without_labels():
    check_class_folders(
        [
            "testing/apple/1.png",
            "testing/bread/1.png",
            "testing/notes.txt",  # beside the class folders, but not in a folder of its own
            "incoming/2024/1.png",
            "incoming/2025/1.png",
            "digits/3/1.png",  # an MNIST layout: no class of this model
            "top.png",
            "testing/apple/deeper/1.png",  # below a class folder, not beside it
        ],
        FOOD,
        "data",
    )
