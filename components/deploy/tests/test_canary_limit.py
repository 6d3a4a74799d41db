"""deploy's canaries fit one batch request of a server with the default limits."""

from __future__ import annotations

import pytest

from mnist_mlops.components.deploy.executor import run_deploy
from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import load_spec
from mnist_mlops.serving.payloads import Limits


def test_every_canary_fits_one_batch_request_of_the_default_server():
    largest = load_spec("deploy")["inputs"]["canary_count"]["max"]
    assert 2 * largest <= Limits().max_batch  # as many again come from production's test split


def test_more_canaries_than_fit_are_refused_before_any_work(tmp_path):
    with pytest.raises(UserInputError, match=r"parameter canary_count=129: above the maximum 128"):
        run_deploy("models:/mnist-mlops/1", tmp_path / "missing", tmp_path / "record.json", canary_count=129)
    assert not (tmp_path / "record.json").exists()
