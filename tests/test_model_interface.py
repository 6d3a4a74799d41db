"""A model's interface is read back from its MLmodel file, also from models saved before it was written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mnist_mlops.dataset import MNIST_CLASSES
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface

SHOP = ModelInterface((32, 32, 3), ("apple", "bread", "cheese", "dates", "eggs"))


def write_mlmodel(folder, metadata=None, shape=(-1, 28, 28)):
    inputs = [{"name": "images", "type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": list(shape)}}]
    document = {"flavors": {}, "signature": {"inputs": json.dumps(inputs)}, "metadata": metadata}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    return folder


def test_the_metadata_written_at_training_reads_back(tmp_path):
    folder = write_mlmodel(tmp_path / "m", SHOP.metadata(), (-1, 32, 32, 3))
    assert ModelInterface.of_model(folder) == SHOP
    assert SHOP.describe() == "32x32x3 images of 5 classes (apple, bread, cheese, dates, eggs)"


@pytest.mark.parametrize("shape", [(-1, 28, 28), (-1, 28, 28, 1)])
def test_a_model_saved_before_interfaces_reads_as_mnist(tmp_path, shape):
    folder = write_mlmodel(tmp_path / "m", {"producer": "mnist_mlops_train 0.0.9"}, shape)
    assert ModelInterface.of_model(folder) == ModelInterface((28, 28), MNIST_CLASSES)


def test_a_model_without_a_description_is_refused_naming_the_file(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(UserInputError, match=r"MLmodel: the MLflow model records neither"):
        ModelInterface.of_model(tmp_path)


def test_data_labelled_with_classes_the_model_does_not_answer_is_refused_naming_them():
    with pytest.raises(UserInputError, match=r"the data has 6: classes figs unknown to the model"):
        SHOP.check_answers([*SHOP.classes, "figs"], "test split")
    with pytest.raises(UserInputError, match="another order or a subset"):
        SHOP.check_answers(SHOP.classes[:3], "test split")
    SHOP.check_answers(list(SHOP.classes), "test split")


def test_images_of_another_shape_are_refused_naming_both():
    with pytest.raises(UserInputError, match=r"takes 32x32x3 images, got 28x28 grayscale"):
        SHOP.check_images(np.zeros((2, 28, 28), np.uint8), "canaries")
