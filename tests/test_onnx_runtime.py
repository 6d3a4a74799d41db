"""The scoring copy of a model (`mnist_mlops.onnx_export`): register's ONNX export predicts what the
TensorFlow model predicts on real images, a local model folder's export loads without TensorFlow or
MLflow, a tampered export is refused, and a version without an export (a model tf2onnx cannot convert,
with a warning, a version registered before exports) is scored through TensorFlow; a fault of the
export itself (a full disk, no memory) is not taken for a model tf2onnx cannot convert."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_mlops import contracts
from mnist_mlops.components.batch_score.executor import run_batch_score
from mnist_mlops.dataset import load_split
from mnist_mlops.errors import ContractError, UserInputError
from mnist_mlops.hashing import sha256_file
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.onnx_export import (
    EXPORT_FOLDER,
    INPUT_NAME,
    ONNX_FILE,
    RECORD_FILE,
    export_onnx,
    load_export,
    same_predictions,
)
from mnist_mlops.registry import client
from mnist_mlops.serving.scorer import RegistryModels, compile_predict, load_model_folder
from tests.models import LENIENT, judged_model, register_model

SHAPE = (2, 3)
CLASSES = ["a", "b", "c", "d", "e", "f"]


def softmax_model_folder(folder: Path) -> Path:
    """An MLflow-looking model folder whose export is a hand-made ONNX graph (softmax over the 6 pixels
    of a 2x3 uint8 image), with its export record: no TensorFlow needed."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["pixels", "flat"], ["rows"]),
            helper.make_node("Softmax", ["rows"], ["probabilities"], axis=-1),
        ],
        "softmax",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [None, *SHAPE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor("flat", TensorProto.INT64, [2], [-1, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    scoring = folder / EXPORT_FOLDER
    scoring.mkdir(parents=True)
    onnx.save(model, scoring / ONNX_FILE)
    (folder / "MLmodel").write_text(
        yaml.safe_dump({"metadata": {"image_shape": list(SHAPE), "classes": CLASSES}})
    )
    record = {
        "schema_version": 1,
        "runtime": "onnxruntime",
        "file": ONNX_FILE,
        "sha256": sha256_file(scoring / ONNX_FILE),
        "input": INPUT_NAME,
        "opset": 17,
        "versions": {"onnx": onnx.__version__},
        "golden": {"images": 1, "max_abs_diff": 0.0, "argmax_equal": True},
    }
    contracts.write_json(scoring / RECORD_FILE, record, "scoring_export")
    return folder


def test_the_rule_for_a_copy_of_a_model_wants_the_same_classes_and_close_probabilities():
    expected = np.array([[0.7, 0.3], [0.4, 0.6]], dtype=np.float32)
    assert same_predictions(expected + 5e-6, expected)
    assert not same_predictions(expected + 5e-5, expected)
    assert not same_predictions(expected[:, ::-1], expected)  # close enough nowhere, other classes
    assert not same_predictions(np.array([[0.5, 0.5 + 1e-6]]), np.array([[0.5 + 1e-6, 0.5]]))
    assert not same_predictions(expected[:1], expected)


def test_an_export_loads_in_onnx_runtime_without_tensorflow_or_mlflow(tmp_path):
    folder = softmax_model_folder(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from mnist_mlops.serving.scorer import load_model_folder
        loaded = load_model_folder("softmax", "3", {str(folder)!r})
        answer = loaded.predict(np.array([[[0, 0, 9], [0, 0, 0]]], dtype=np.uint8))
        print(loaded.runtime, int(answer.argmax()), "tensorflow" in sys.modules, "mlflow" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["onnxruntime", "2", "False", "False"]


def test_an_export_whose_bytes_changed_is_refused(tmp_path):
    folder = softmax_model_folder(tmp_path / "model")
    assert load_export(folder) is not None
    with open(folder / EXPORT_FOLDER / ONNX_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserInputError, match="not the export register checked"):
        load_model_folder("softmax", "3", folder)


def test_a_folder_without_an_export_or_with_tensorflow_named_has_no_onnx_predict(tmp_path):
    assert load_export(tmp_path) is None
    folder = softmax_model_folder(tmp_path / "model")
    record = {"schema_version": 1, "runtime": "tensorflow", "reason": "tf2onnx cannot convert the model"}
    contracts.write_json(folder / EXPORT_FOLDER / RECORD_FILE, record, "scoring_export")
    assert load_export(folder) is None


def test_an_export_record_names_its_file_and_checks_or_says_why_there_is_none():
    with pytest.raises(ContractError):
        contracts.validate({"schema_version": 1, "runtime": "onnxruntime"}, "scoring_export", source="x")
    with pytest.raises(ContractError):
        contracts.validate({"schema_version": 1, "runtime": "tensorflow"}, "scoring_export", source="x")


@pytest.mark.parametrize(
    ("fault", "scored_by_tensorflow"),
    [
        (ValueError("unsupported op Foo"), True),
        (NotImplementedError("Foo"), True),
        (OSError(28, "No space left on device"), False),
        (MemoryError(), False),
    ],
    ids=["cannot convert", "not implemented", "disk full", "no memory"],
)
def test_only_a_model_tf2onnx_cannot_convert_falls_back_to_tensorflow(
    fault, scored_by_tensorflow, tmp_path, monkeypatch
):
    import tf2onnx

    def convert(*args, **kwargs):
        raise fault

    monkeypatch.setattr(tf2onnx.convert, "from_keras", convert)
    interface = ModelInterface(SHAPE, tuple(CLASSES))
    golden = np.zeros((1, *SHAPE), np.uint8)
    arguments = (tmp_path, None, interface, golden, np.full((1, 6), 1 / 6))  # no model: nothing converts
    if scored_by_tensorflow:
        record = export_onnx(*arguments)
        assert record["runtime"] == "tensorflow" and type(fault).__name__ in record["reason"]
    else:
        with pytest.raises(type(fault)):
            export_onnx(*arguments)
        assert not (tmp_path / EXPORT_FOLDER / RECORD_FILE).exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model trained on generated digits, judged by lenient thresholds."""
    return judged_model(
        tmp_path_factory.mktemp("onnx"), LENIENT, train_per_class=24, test_per_class=6, epochs=4
    )


@pytest.mark.slow  # trains a model
def test_the_onnx_export_predicts_what_tensorflow_predicts_on_real_images(trained, tmp_path):
    import mlflow.tensorflow

    manifest = json.loads((trained / "preprocessed" / "manifest.json").read_text())
    images, _ = load_split(trained / "preprocessed", manifest, "test")
    served = load_model_folder("digits", "1", trained / "model")
    assert served.runtime == "tensorflow"  # train's folder has no export
    expected = served.predict(images)
    copy = Path(shutil.copytree(trained / "model", tmp_path / "model"))
    keras_model = mlflow.tensorflow.load_model(str(copy))
    record = export_onnx(copy, keras_model, served.interface, images[:8], expected[:8])
    assert record["runtime"] == "onnxruntime" and record["golden"]["max_abs_diff"] <= 1e-5
    exported = load_model_folder("digits", "1", copy)
    assert exported.runtime == "onnxruntime"
    actual = exported.predict(images)
    assert np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert same_predictions(actual, compile_predict(keras_model, served.interface)(images))
    with pytest.raises(UserInputError, match="the ONNX export predicts differently"):
        export_onnx(copy, keras_model, served.interface, images[:8], expected[:8][:, ::-1])


@pytest.mark.slow  # trains a model and registers it
def test_a_model_tf2onnx_cannot_convert_registers_and_serves_through_tensorflow(
    trained, tmp_path, monkeypatch, capsys
):
    import tf2onnx

    def cannot(*args, **kwargs):
        raise ValueError("unsupported op Foo")

    monkeypatch.setattr(tf2onnx.convert, "from_keras", cannot)
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register_model(trained, registry, tmp_path / "record.json")
    assert record["registered"] and "scored through TensorFlow" in record["reasons"][1]
    assert "ValueError: unsupported op Foo" in record["reasons"][1]
    assert f"warning: mnist-mlops version 1: {record['reasons'][1]}\n" in capsys.readouterr().err
    version = client(registry).get_model_version("mnist-mlops", record["version"])
    assert version.tags["scoring_runtime"] == "tensorflow"
    loaded = RegistryModels("models:/mnist-mlops/1", registry).load(record["version"])
    assert loaded.runtime == "tensorflow"


def batch_predictions(trained: Path, registry: str, version: str, folder: Path) -> tuple[list, np.ndarray]:
    """batch_score's classes (with the paths) and confidences for all of `trained`'s PNGs."""
    run_batch_score(
        f"models:/mnist-mlops/{version}",
        trained / "src",
        folder / "predictions.csv",
        folder / "summary.json",
        registry=registry,
    )
    with open(folder / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = [(row["path"], row["class"]) for row in rows]
    return classes, np.array([float(row["confidence"]) for row in rows])


@pytest.mark.slow  # trains a model and registers it
def test_a_registered_version_is_served_from_its_export_or_without_one_through_tensorflow(trained, tmp_path):
    import mlflow

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register_model(trained, registry, tmp_path / "record.json")
    assert record["reasons"] == [
        f"registered mnist-mlops version {record['version']}: blessed, verified on 256 golden images"
    ]
    version = client(registry).get_model_version("mnist-mlops", record["version"])
    assert version.tags["scoring_runtime"] == "onnxruntime"
    models = RegistryModels("models:/mnist-mlops@challenger", registry)
    exported = models.load(models.resolve())
    assert exported.runtime == "onnxruntime"
    by_export = batch_predictions(trained, registry, record["version"], tmp_path / "exported")
    manifest = json.loads((trained / "preprocessed" / "manifest.json").read_text())
    images, _ = load_split(trained / "preprocessed", manifest, "test")
    # a version registered before exports: the same model without its scoring folder
    mlflow.set_tracking_uri(registry)
    artifacts = Path(mlflow.get_run(version.run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts / "model" / EXPORT_FOLDER)
    older = models.load(record["version"])
    assert older.runtime == "tensorflow"
    assert same_predictions(exported.predict(images), older.predict(images))
    by_tensorflow = batch_predictions(trained, registry, record["version"], tmp_path / "tensorflow")
    assert by_export[0] == by_tensorflow[0] and len(by_export[0]) > len(images)
    np.testing.assert_allclose(by_export[1], by_tensorflow[1], atol=1e-5)
