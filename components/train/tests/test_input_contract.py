"""train builds its network from the data's description: other shapes and class lists train, and the
saved MLflow model says what it takes and answers; images too small for the network are refused first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface
from tests.datasets import colour_splits, write_png_tree

SHOP = ["apple", "bread", "cheese", "dates", "eggs"]


def preprocessed_shop(tmp_path, **splits):
    source = write_png_tree(tmp_path / "src", colour_splits(classes=len(SHOP), **splits), "shop", SHOP)
    run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    run_preprocess(tmp_path / "dataset", tmp_path / "pre")
    return tmp_path / "pre"


def test_images_too_small_for_the_network_are_refused_before_training(tmp_path):
    preprocessed = preprocessed_shop(tmp_path, size=8)
    message = r"8x8x3 images are too small for the model \(at least 10x10\)"
    with pytest.raises(UserInputError, match=message):
        run_train(preprocessed, tmp_path / "model", tmp_path / "summary.json", tmp_path / "curves.png")
    assert not (tmp_path / "model").exists() and not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_colour_images_of_named_classes_train_into_a_model_that_describes_itself(tmp_path):
    preprocessed = preprocessed_shop(tmp_path, train_per_class=60, test_per_class=10)
    summary = run_train(
        preprocessed,
        tmp_path / "model",
        tmp_path / "summary.json",
        tmp_path / "curves.png",
        epochs=2,
        batch_size=32,
    )
    interface = ModelInterface.of_model(tmp_path / "model")
    assert interface == ModelInterface((32, 32, 3), tuple(SHOP))
    mlmodel = yaml.safe_load((tmp_path / "model" / "MLmodel").read_text())
    inputs, outputs = (json.loads(mlmodel["signature"][side]) for side in ("inputs", "outputs"))
    assert inputs[0]["tensor-spec"] == {"dtype": "uint8", "shape": [-1, 32, 32, 3]}
    assert outputs[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 5]}
    example = json.loads((tmp_path / "model" / "input_example.json").read_text())
    assert np.asarray(example).shape == (2, 32, 32, 3)
    assert summary["history"][-1]["val_accuracy"] > 0.5
