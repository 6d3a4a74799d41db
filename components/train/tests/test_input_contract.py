"""train refuses data its network cannot take, naming both, before any TensorFlow work (no training)."""

from __future__ import annotations

import pytest

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.errors import UserInputError
from tests.datasets import colour_splits, write_png_tree


def test_colour_images_of_other_classes_are_refused_naming_both_shapes(tmp_path):
    source = write_png_tree(tmp_path / "src", colour_splits(classes=5), "shop", ["a", "b", "c", "d", "e"])
    run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    run_preprocess(tmp_path / "dataset", tmp_path / "pre")
    message = (
        r"train: this model takes 28x28 grayscale images of 10 classes; the data has 32x32x3 images of "
        r"5 classes \(a, b, c, d, e; .*pre/manifest\.json\)"
    )
    with pytest.raises(UserInputError, match=message):
        run_train(tmp_path / "pre", tmp_path / "model", tmp_path / "summary.json", tmp_path / "curves.png")
    assert not (tmp_path / "model").exists() and not (tmp_path / "summary.json").exists()
