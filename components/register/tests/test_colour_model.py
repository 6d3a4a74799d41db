"""register follows the model (issue 16): a colour model of named classes is verified on its own golden
batch and its version says what it takes and answers; a model other than the evaluated one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mnist_mlops.components.register.executor import CLASSES_TAG_LENGTH, classes_tag, run_register
from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import READY_TAG, client
from tests.models import colour_model, register_model

CLASSES = ["apple", "bread", "cheese", "dates", "eggs"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny colour model of five named classes, judged by thresholds every model passes, laid out as
    `tests.models.judged_model` lays out its digits model."""
    root = tmp_path_factory.mktemp("shop")
    return colour_model(root, CLASSES, "shop")


@pytest.mark.slow
def test_a_colour_model_is_verified_and_its_version_says_what_it_takes_and_answers(tmp_path, shop):
    import mlflow.pyfunc

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register_model(shop, registry, tmp_path / "record.json")
    assert record["registered"] is True
    assert record["lineage"]["interface"] == {"image_shape": [32, 32, 3], "classes": CLASSES}
    tags = client(registry).get_model_version("mnist-mlops", record["version"]).tags
    assert tags[READY_TAG] == "ready"  # the registered copy reproduced the golden batch's answers
    assert (tags["image_shape"], tags["classes"]) == ("32x32x3", "apple, bread, cheese, dates, eggs")
    assert tags["scoring_runtime"] == "onnxruntime"  # exported with a (None, 32, 32, 3) signature, checked
    mlflow.set_tracking_uri(registry)
    model = mlflow.pyfunc.load_model("models:/mnist-mlops@challenger")
    assert model.metadata.signature.inputs.inputs[0].shape == (-1, 32, 32, 3)
    assert model.metadata.signature.outputs.inputs[0].shape == (-1, 5)


@pytest.mark.slow
def test_a_model_other_than_the_evaluated_one_is_refused_and_nothing_is_registered(tmp_path, shop):
    other = tmp_path / "other"
    shutil.copytree(shop / "model", other)
    document = yaml.safe_load((other / "MLmodel").read_text())
    document["metadata"]["classes"] = ["figs", "grapes", "honey", "ice", "jam"]
    (other / "MLmodel").write_text(yaml.safe_dump(document))
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(
        UserInputError, match=r"figs, grapes, honey, ice, jam\); the evaluation report judged"
    ):
        run_register(
            other,
            shop / "blessing.json",
            shop / "evaluation",
            shop / "summary.json",
            shop / "data_report.json",
            shop / "preprocessed",
            tmp_path / "record.json",
            registry=registry,
        )
    assert not (tmp_path / "record.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_long_class_list_is_shortened_in_its_tag_with_the_count():
    classes = [f"product_{index:03d}" for index in range(200)]
    assert classes_tag(classes[:3]) == "product_000, product_001, product_002"
    tag = classes_tag(classes)
    assert tag.startswith("product_000, product_001, ") and tag.endswith("product_074, ... (200 in all)")
    assert len(tag) <= CLASSES_TAG_LENGTH
