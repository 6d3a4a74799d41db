"""evaluate follows the model (issue 16): per-class figures, plots and the model card for the dataset's own
classes; data the model cannot be judged on is refused; a production model or reference of another
kind is not compared, saying so; MNIST's default thresholds applied to another problem are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_mlops import contracts, data_shift, features
from mnist_mlops.components.evaluate.executor import evaluate_gates, run_evaluate, thresholds_note
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import MNIST, ModelInterface
from tests.datasets import colour_splits, digit_images, small_splits, write_png_tree
from tests.models import ANY_MODEL, champion_folder, preprocessed_digits

CLASSES = ("apple", "bread", "cheese", "dates", "eggs")
SHOP = ModelInterface((32, 32, 3), CLASSES)
SHOP_DESCRIBED = "32x32x3 images of 5 classes (apple, bread, cheese, dates, eggs)"
MNIST_DESCRIBED = "28x28 grayscale images of 10 classes (0, 1, 2, 3, 4, 5, ... (10 in all))"
SHIFT_GATES = ("max_data_shift", "max_traffic_shift", "max_reference_regression")


def preprocessed_shop(root: Path, classes: tuple[str, ...], **sizes: int) -> Path:
    """Colour images of the named `classes` written as PNGs, ingested and preprocessed in `root`."""
    splits = colour_splits(classes=len(classes), **sizes)
    write_png_tree(root / "src", splits, "shop", list(classes))
    run_ingest(str(root / "src"), root / "dataset", root / "data_report.json")
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    return root / "preprocessed"


def described_model(folder: Path, interface: ModelInterface) -> Path:
    """An MLflow model folder holding only its description: enough for what evaluate checks before it
    loads a model (a model it refuses is never loaded)."""
    folder.mkdir(parents=True)
    document = {"flavors": {"tensorflow": {}}, "metadata": interface.metadata()}
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    return folder


def gates(report: dict) -> dict[str, dict]:
    return {gate["name"]: gate for gate in report["thresholds"]}


def judge(model: Path, preprocessed: Path, out: Path, **options) -> tuple[dict, dict]:
    run_evaluate(model, preprocessed, out / "evaluation", out / "blessing.json", **options)
    return (
        contracts.read_json(out / "evaluation" / "evaluation_report.json", "evaluation_report"),
        contracts.read_json(out / "blessing.json", "blessing"),
    )


@pytest.fixture(scope="module")
def shop_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocessed_shop(tmp_path_factory.mktemp("shop-data"), CLASSES[:3])


@pytest.mark.parametrize(
    ("interface", "refusal"),
    [
        (
            ModelInterface((32, 32, 3), ("apple", "bread")),
            r"the model answers 2 classes \(apple, bread\); the data has 3: "
            "classes cheese unknown to the model",
        ),
        (
            ModelInterface((28, 28), CLASSES[:3]),
            r"the model takes 28x28 grayscale images, got 32x32x3",
        ),
    ],
    ids=["more classes than the model answers", "another image shape"],
)
def test_data_the_model_cannot_be_judged_on_is_refused_naming_it_and_nothing_is_written(
    tmp_path, shop_data, interface, refusal
):
    model = described_model(tmp_path / "model", interface)
    with pytest.raises(UserInputError, match=rf"evaluate: model {model} on the test split of .*: {refusal}"):
        run_evaluate(model, shop_data, tmp_path / "evaluation", tmp_path / "blessing.json")
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "blessing.json").exists()


def test_mnist_s_default_thresholds_are_named_when_they_judge_another_problem():
    note = thresholds_note("mnist_defaults", SHOP)
    assert note == (
        "KPI thresholds: MNIST's defaults (min_accuracy 0.99, min_class_recall 0.97, max_regression 0.002, "
        f"max_p99_latency_ms 25.0) applied to {SHOP_DESCRIBED}; give thresholds for this problem "
        "(evaluate's thresholds input, schema kpi_thresholds)"
    )
    assert thresholds_note("mnist_defaults", MNIST) is None
    assert thresholds_note("mnist_defaults", ModelInterface((28, 28), CLASSES)) is not None
    assert thresholds_note("given", SHOP) is None


def test_the_class_recall_gate_names_the_weakest_class():
    recalls = (0.9, 0.4, 1.0)
    figures = {
        "accuracy": 0.8,
        "per_class": [
            {"class": label, "name": name, "precision": 1.0, "recall": recall, "support": 3}
            for label, (name, recall) in enumerate(zip(CLASSES, recalls, strict=False))
        ],
        "latency": {"p99_ms": 1.0},
    }
    recall = gates({"thresholds": evaluate_gates(figures, None, ANY_MODEL | {"min_class_recall": 0.5})})
    assert recall["min_class_recall"]["reason"] == "lowest recall is class bread at 0.4000 (< 0.5)"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny real colour model of five named classes, another one of the same kind (production's), and
    MNIST-shaped digits for a reference of another kind."""
    root = tmp_path_factory.mktemp("shop")
    preprocessed = preprocessed_shop(root, CLASSES, train_per_class=60)
    for name, epochs, seed in (("model", 2, 42), ("previous", 1, 7)):
        run_train(
            preprocessed,
            root / name,
            root / f"{name}.json",
            root / f"{name}.png",
            epochs=epochs,
            batch_size=32,
            seed=seed,
        )
    thresholds = root / "thresholds.json"
    thresholds.write_text(json.dumps(ANY_MODEL))
    digits = preprocessed_digits(root / "digits", small_splits(train_per_class=4, test_per_class=2))
    return {
        "root": root,
        "preprocessed": preprocessed,
        "model": root / "model",
        "previous": root / "previous",
        "thresholds": thresholds,
        "digits": digits,
    }


@pytest.mark.slow
def test_a_colour_model_of_named_classes_is_judged_per_class_and_mnist_s_defaults_are_named(tmp_path, shop):
    report, blessing = judge(shop["model"], shop["preprocessed"], tmp_path)
    assert report["model"]["image_shape"] == [32, 32, 3] and report["model"]["classes"] == list(CLASSES)
    assert [(row["class"], row["name"]) for row in report["per_class"]] == list(enumerate(CLASSES))
    assert [row["support"] for row in report["per_class"]] == [3] * 5
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == report["test_count"] == 15
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 15)
    weakest = min(report["per_class"], key=lambda row: row["recall"])["name"]
    assert gates(report)["min_class_recall"]["reason"].startswith(f"lowest recall is class {weakest} at ")

    assert report["thresholds_source"] == "mnist_defaults"
    note = thresholds_note("mnist_defaults", SHOP)
    assert blessing["reasons"][-1] == note  # whether blessed or not, the run's outcome shows it
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "evaluation" / name).read_bytes()[:4] == b"\x89PNG"
    card = (tmp_path / "evaluation" / "model_card.md").read_text()
    assert f"- Takes and answers: {SHOP_DESCRIBED}." in card and f"**{note}.**" in card
    assert "Thresholds: the built-in defaults (MNIST's)." in card
    for row in report["per_class"]:
        assert f"| {row['name']} | {row['precision']:.4f} | {row['recall']:.4f} | 3 |" in card

    given, blessing = judge(
        shop["model"], shop["preprocessed"], tmp_path / "given", thresholds=shop["thresholds"]
    )
    assert given["thresholds_source"] == "given" and blessing["blessed"] is True
    assert not any(reason.startswith("KPI thresholds") for reason in blessing["reasons"])
    assert (
        "Thresholds: the given thresholds file."
        in (tmp_path / "given" / "evaluation" / "model_card.md").read_text()
    )


def mnist_production_model(model: Path, destination: Path) -> Path:
    """The colour model's folder described as a model saved before models described themselves, with a
    28x28 -> 10 signature: how today's MNIST production model reads. Never loaded: a champion of another
    interface is not scored."""
    shutil.copytree(model, destination)
    document = yaml.safe_load((destination / "MLmodel").read_text())
    for key in ("image_shape", "classes"):
        del document["metadata"][key]
    for port, shape in (("inputs", [-1, 28, 28]), ("outputs", [-1, 10])):
        tensors = json.loads(document["signature"][port])
        tensors[0]["tensor-spec"]["shape"] = shape
        document["signature"][port] = json.dumps(tensors)
    (destination / "MLmodel").write_text(yaml.safe_dump(document))
    assert ModelInterface.of_model(destination) == MNIST
    return destination


def clients_sending(images: np.ndarray) -> dict:
    """A traffic_summary of clients sending `images`, as resolve_champion writes it."""
    values = features.per_image(images)
    entries = [{name: float(column[row]) for name, column in values.items()} for row in range(len(images))]
    window = {"from": "2026-12-01T00:00:00Z", "to": "2026-12-06T00:00:00Z"}
    source = {"folder": "requests", "requests": len(images), "window": 1000, "time_range": window}
    return data_shift.traffic_summary(entries, source)


@pytest.mark.slow
def test_a_production_model_of_another_problem_is_not_replaced_by_default(tmp_path, shop):
    """Production serves MNIST; the new model answers five named colour classes. Nothing of
    production's (its figures, reference, traffic) can be compared, and promoting the new model under
    the same name would change what every client sends and gets back: the training-data gate fails
    naming both interfaces, unless the change is accepted, as any shift."""
    production = mnist_production_model(shop["previous"], tmp_path / "mnist-model")
    champion = champion_folder(
        production,
        tmp_path / "champion-v3",
        "3",
        trained_on=shop["digits"],
        traffic=clients_sending(digit_images(15, seed=3)[0]),
    )
    options = {"champion": champion, "thresholds": shop["thresholds"]}
    report, blessing = judge(shop["model"], shop["preprocessed"], tmp_path / "run", **options)
    unlike = f"mnist-mlops v3 in production takes {MNIST_DESCRIBED}; this model takes {SHOP_DESCRIBED}"
    assert report["champion"] is None and blessing["first_run_without_champion"] is True
    regression = gates(report)["max_regression"]
    assert (regression["outcome"], regression["reason"]) == (
        "skipped",
        f"no champion to compare with: {unlike}",
    )
    data_gate = gates(report)["max_data_shift"]
    assert data_gate["outcome"] == "fail"
    assert data_gate["reason"].startswith(f"{unlike}: promoting it under the same name changes what every")
    assert gates(report)["max_traffic_shift"]["reason"] == unlike
    assert gates(report)["max_reference_regression"]["reason"].endswith(unlike)
    assert report["data_shift"]["traffic"] is None and report["data_shift"]["reference"]["found"] is False
    assert blessing["blessed"] is False and blessing["data_shift"]["decision"] == "shifted"
    assert f"Not compared: {unlike}." in (tmp_path / "run" / "evaluation" / "model_card.md").read_text()

    accepted, blessing = judge(
        shop["model"], shop["preprocessed"], tmp_path / "accepted", accept_data_shift=True, **options
    )
    assert gates(accepted)["max_data_shift"]["outcome"] == "accepted"
    assert blessing["blessed"] is True and blessing["data_shift"]["decision"] == "accepted"


@pytest.mark.slow
def test_a_reference_of_another_kind_is_not_compared_and_says_so(tmp_path, shop):
    """Production's model is of the same kind (so it is compared on this test split), but its reference
    bundle holds digits: nothing there to score or compare the new data with."""
    champion = champion_folder(shop["previous"], tmp_path / "champion-v1", "1", trained_on=shop["digits"])
    report, blessing = judge(
        shop["model"],
        shop["preprocessed"],
        tmp_path / "run",
        champion=champion,
        thresholds=shop["thresholds"],
    )
    assert [row["name"] for row in report["champion"]["per_class"]] == list(CLASSES)
    assert gates(report)["max_regression"]["value"] is not None
    held = f"mnist-mlops v1's reference holds {MNIST_DESCRIBED}; this model takes {SHOP_DESCRIBED}"
    data_gate = gates(report)["max_data_shift"]
    assert (data_gate["outcome"], data_gate["reason"]) == ("no_reference", held)
    reference_gate = gates(report)["max_reference_regression"]
    assert reference_gate["outcome"] == "no_reference"
    assert reference_gate["reason"] == f"no test split of production's to score on: {held}"
    assert report["data_shift"]["reference_split"] is None
    assert blessing["data_shift"]["decision"] == "no_reference"
