"""deploy's canaries fit one batch request of a server with the default limits, in images and bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlops.components.deploy.executor import _canaries, run_deploy
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.ports import load_spec
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import LoadedModel
from tests.datasets import colour_splits, write_png_tree


def test_every_canary_fits_one_batch_request_of_the_default_server():
    largest = load_spec("deploy")["inputs"]["canary_count"]["max"]
    assert 2 * largest <= Limits().max_batch  # as many again come from production's test split


def test_more_canaries_than_fit_are_refused_before_any_work(tmp_path):
    with pytest.raises(UserInputError, match=r"parameter canary_count=129: above the maximum 128"):
        run_deploy("models:/mnist-mlops/1", tmp_path / "missing", tmp_path / "record.json", canary_count=129)
    assert not (tmp_path / "record.json").exists()


def test_canaries_of_large_images_are_as_many_as_one_batch_request_carries(tmp_path, capsys):
    """128 canaries of 64x64x3 images would be a 7.9 MiB JSON batch: refused (413) by a 4 MiB server."""
    splits = colour_splits(classes=2, train_per_class=8, test_per_class=40, size=64)
    run_ingest(str(write_png_tree(tmp_path / "src", splits)), tmp_path / "dataset", tmp_path / "report.json")
    run_preprocess(tmp_path / "dataset", tmp_path / "preprocessed", validation_fraction=0.25)
    interface = ModelInterface((64, 64, 3), ("0", "1"))
    loaded = LoadedModel("shop", "1", lambda images: np.eye(2)[images[:, 0, 0, 0] % 2], interface)

    images, expected, sources = _canaries(loaded, tmp_path / "preprocessed", 128, "unused", None)
    assert sources["test_split"] == len(images) == len(expected) == 60
    assert len(json.dumps({"instances": images.astype(int).tolist()})) <= Limits().max_body_bytes
    assert "(one batch request carries at most 60 64x64x3 images)" in capsys.readouterr().out
