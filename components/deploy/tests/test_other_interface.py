"""deploy of a model that takes other images and answers other classes than production's: canaries of
its own shape checked by class and name in the real server, and production's test split left out, with
both interfaces named in the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlops import contracts
from mnist_mlops.components.deploy.executor import run_deploy
from mnist_mlops.deployments import production_version
from mnist_mlops.errors import UserInputError
from tests.models import ANY_MODEL, colour_model, judged_model, register_model

pytestmark = pytest.mark.slow  # trains models and starts servers

FOOD = ["apple", "bread", "cheese", "dates", "eggs"]
DEPLOY = {"target": "local", "canary_count": 8, "max_canary_p99_ms": 1000.0}


def food_model(root: Path) -> Path:
    """A tiny judged model of 32x32 colour images of `FOOD`, its outputs in `root` as judged_model's."""
    return colour_model(root, FOOD)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "digits": judged_model(
            tmp_path_factory.mktemp("digits"), ANY_MODEL, train_per_class=12, test_per_class=4, epochs=2
        ),
        "food": food_model(tmp_path_factory.mktemp("food")),
    }


def test_production_of_another_interface_gives_no_canaries_and_says_why(tmp_path, trained, capsys):
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    register_model(trained["digits"], uri, tmp_path / "digits.json")
    register_model(trained["food"], uri, tmp_path / "food.json")
    run_deploy(
        "models:/mnist-mlops/1",
        trained["digits"] / "preprocessed",
        tmp_path / "v1.json",
        registry=uri,
        **DEPLOY,
    )
    capsys.readouterr()

    record = run_deploy(
        "models:/mnist-mlops/2",
        trained["food"] / "preprocessed",
        tmp_path / "v2.json",
        registry=uri,
        **DEPLOY,
    )
    assert contracts.read_json(tmp_path / "v2.json", "deployment_record") == record
    assert (record["outcome"], record["previous_version"]) == ("deployed", "1")
    checks = record["infra_validation"]
    assert checks["passed"] and checks["canary_correct"] == checks["canary_requests"] == 9  # 8 alone, 1 batch
    why = (
        "none from production's test split: production v1 takes 28x28 grayscale images of 10 classes"
        " (0, 1, 2, 3, 4, 5, ... (10 in all)), this model 32x32x3 images of 5 classes"
        " (apple, bread, cheese, dates, eggs)"
    )
    assert checks["canary_sources"] == {"test_split": 8, "production_reference": 0, "note": why}
    assert why in capsys.readouterr().out
    assert production_version(uri, "mnist-mlops") == "2"

    with pytest.raises(UserInputError, match=r"the model takes 32x32x3 images, got 28x28 grayscale"):
        run_deploy(
            "models:/mnist-mlops/2",
            trained["digits"] / "preprocessed",
            tmp_path / "v3.json",
            registry=uri,
            **DEPLOY,
        )
    assert not (tmp_path / "v3.json").exists()
