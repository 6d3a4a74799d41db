"""The scoring copy of a registered model: an ONNX export, run by ONNX Runtime without TensorFlow.

register converts the Keras model (tf2onnx, uint8 input of the model's own image shape) into the MLflow
model folder it logs, as `scoring/model.onnx` with `scoring/export.json` (schema `scoring_export`:
versions, sha256, the golden figures), only once the export reproduces the MLflow model on the golden
images by the rule every copy of a model meets (`same_predictions`). The registry's model stays the
MLflow model; its pyfunc flavor ignores the extra folder. The scoring server and batch scoring load the
export (its sha256 checked) without TensorFlow: a tenth of the memory and about a tenth of the time per
single-image call. Running it needs no MLflow either (`load_export` on a local model folder); fetching
a version from the registry still does. A model tf2onnx cannot convert is registered with an
export.json that says why, and scored through TensorFlow, as is a version registered before exports;
any other failure of the export (a full disk, no memory) fails the registration.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import contracts
from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface

EXPORT_FOLDER = "scoring"
"""The export's folder inside the MLflow model folder."""
RECORD_FILE = "export.json"
ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OPSET = 17
ATOL = 1e-5
"""The largest difference in any probability a copy of a model may show (with the same classes)."""
CONVERTER_ERRORS = (ValueError, NotImplementedError, RuntimeError)
"""What tf2onnx raises for a model it cannot convert (an op or a graph it has no rule for). Anything
else, OSError and MemoryError above all, is a fault to see, not a reason to score through TensorFlow."""


def same_predictions(actual: np.ndarray, expected: np.ndarray) -> bool:
    """The rule a copy of a model (the registered one, its export) meets: the same class for every image
    and every probability within ATOL."""
    return bool(
        actual.shape == expected.shape
        and np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1))
        and np.allclose(actual, expected, atol=ATOL)
    )


def export_onnx(
    model_folder: Path, keras_model: Any, interface: ModelInterface, golden: np.ndarray, expected: np.ndarray
) -> dict[str, Any]:
    """Write the ONNX export of `keras_model` (the model of MLflow `model_folder`) and its record into
    `model_folder`/scoring, checked on `golden` against the MLflow model's `expected` probabilities;
    returns the record. A model tf2onnx cannot convert (CONVERTER_ERRORS) gets a record naming
    TensorFlow and the reason; an export that predicts differently is refused (UserInputError); any
    other error propagates."""
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    folder = Path(model_folder) / EXPORT_FOLDER
    folder.mkdir(exist_ok=True)
    signature = (tf.TensorSpec((None, *interface.image_shape), tf.uint8, name=INPUT_NAME),)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as scratch:
        converted = Path(scratch) / ONNX_FILE
        try:
            tf2onnx.convert.from_keras(
                keras_model, input_signature=signature, opset=OPSET, output_path=str(converted)
            )
        except CONVERTER_ERRORS as error:  # the version is scored through TensorFlow
            reason = (
                f"tf2onnx {tf2onnx.__version__} cannot convert the model: {type(error).__name__}: {error}"
            )
            record = {"schema_version": 1, "runtime": "tensorflow", "reason": reason.strip()}
            contracts.write_json(folder / RECORD_FILE, record, "scoring_export")
            return record
        data = converted.read_bytes()
    actual = _session_predict(data, threads=1)(np.ascontiguousarray(golden, dtype=np.uint8))
    if not same_predictions(actual, expected):
        raise UserInputError(
            f"{model_folder}: the ONNX export predicts differently from the model on {len(golden)} golden "
            f"images ({_difference(actual, expected)}); not registered"
        )
    atomic_write_bytes(folder / ONNX_FILE, data)
    record = {
        "schema_version": 1,
        "runtime": "onnxruntime",
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": INPUT_NAME,
        "opset": OPSET,
        "versions": {
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "golden": {
            "images": len(golden),
            "max_abs_diff": float(np.max(np.abs(actual - expected))) if actual.size else 0.0,
            "argmax_equal": True,
        },
    }
    contracts.write_json(folder / RECORD_FILE, record, "scoring_export")
    return record


def export_record(model_folder: Path) -> dict[str, Any] | None:
    """The folder's export record, or None for a model registered without one."""
    path = Path(model_folder) / EXPORT_FOLDER / RECORD_FILE
    return contracts.read_json(path, "scoring_export") if path.is_file() else None


def load_export(model_folder: Path, *, threads: int = 1) -> Callable[[np.ndarray], np.ndarray] | None:
    """An ONNX Runtime predict function over the folder's export (`threads` CPU threads), or None when
    the version is scored through TensorFlow. An export whose bytes are not the ones register checked
    is refused."""
    record = export_record(model_folder)
    if record is None or record["runtime"] != "onnxruntime":
        return None
    path = Path(model_folder) / EXPORT_FOLDER / record["file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserInputError(f"{path}: cannot read the model's ONNX export ({error})") from None
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise UserInputError(
            f"{path}: not the export register checked (its sha256 differs from {RECORD_FILE}'s)"
        )
    return _session_predict(data, threads=threads, input_name=record["input"])


def _session_predict(
    data: bytes, *, threads: int, input_name: str = INPUT_NAME
) -> Callable[[np.ndarray], np.ndarray]:
    """Predict through an ONNX Runtime session on the CPU, sequential, `threads` threads per call."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the session's notes are not the server's business
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {input_name: images})[0]


def _difference(actual: np.ndarray, expected: np.ndarray) -> str:
    if actual.shape != expected.shape:
        return f"answers of shape {actual.shape}, expected {expected.shape}"
    changed = int(np.sum(actual.argmax(axis=1) != expected.argmax(axis=1)))
    return f"{changed} classes differ, largest probability difference {np.max(np.abs(actual - expected)):.3g}"
