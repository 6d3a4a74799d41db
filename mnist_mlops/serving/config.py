"""How the scoring server is configured: environment variables, the way Azure ML passes settings.

Locally `mnist-mlops serve` and the deploy component set these; on an Azure ML online deployment they
are the deployment's `environment_variables`, and the model comes from AZUREML_MODEL_DIR instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnist_mlops.errors import UserInputError
from mnist_mlops.keys import KeyRing
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.request_log import RequestLog
from mnist_mlops.serving.scorer import (
    DEFAULT_MAX_QUEUE,
    AdmissionGate,
    Scorer,
    ServedReference,
    load_directory_model,
)

MODEL_URI = "MNIST_MLOPS_MODEL_URI"  # models:/<name>/<version> or models:/<name>@<alias>
REGISTRY = "MNIST_MLOPS_REGISTRY"  # MLflow registry URI
KEY_FILE = "MNIST_MLOPS_KEY_FILE"  # file holding the bearer key, followed through rotations; unset: no check
MAX_BATCH = "MNIST_MLOPS_MAX_BATCH"
MAX_BODY_BYTES = "MNIST_MLOPS_MAX_BODY_BYTES"
POLL_SECONDS = "MNIST_MLOPS_POLL_SECONDS"  # how often the server checks where an alias points
MAX_QUEUE = "MNIST_MLOPS_MAX_QUEUE"  # requests a worker lets wait while it scores one; more get 503
REQUEST_LOG = "MNIST_MLOPS_REQUEST_LOG"  # folder for per-request monitoring records; unset: none
MODEL_NAME = "MNIST_MLOPS_MODEL_NAME"  # reported name/version when the model comes from AZUREML_MODEL_DIR
MODEL_VERSION = "MNIST_MLOPS_MODEL_VERSION"
DEFAULT_POLL_SECONDS = 2.0


def _positive(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UserInputError(f"{name}={raw!r}: expected a positive {kind.__name__}") from None
    if not value > 0:
        raise UserInputError(f"{name}={raw!r}: expected a positive {kind.__name__}")
    return value


def max_queue() -> int:
    """The environment's `MAX_QUEUE` (0 or more), else the default: read by the server's launcher (the
    threads each worker runs) and by the scorer (its `AdmissionGate`), so both agree."""
    raw = os.environ.get(MAX_QUEUE)
    if raw is None:
        return DEFAULT_MAX_QUEUE
    if not raw.isdigit():
        raise UserInputError(f"{MAX_QUEUE}={raw!r}: expected a whole number of waiting requests, 0 or more")
    return int(raw)


def scorer_from_environment() -> Scorer:
    """Build the scorer described by the environment; follow the alias when one was given."""
    limits = Limits(
        max_batch=int(_positive(MAX_BATCH, Limits.max_batch, int)),
        max_body_bytes=int(_positive(MAX_BODY_BYTES, Limits.max_body_bytes, int)),
    )
    key = KeyRing(Path(os.environ[KEY_FILE])) if os.environ.get(KEY_FILE) else None
    gate = AdmissionGate(max_queue())
    request_log = RequestLog(Path(os.environ[REQUEST_LOG])) if os.environ.get(REQUEST_LOG) else None
    if os.environ.get(MODEL_URI):
        from mnist_mlops.registry import registry_uri

        models = ServedReference(os.environ[MODEL_URI], registry_uri(os.environ.get(REGISTRY)))
        scorer = Scorer(models.load_current(), key=key, limits=limits, request_log=request_log, gate=gate)
        if models.alias:
            scorer.follow(models, _positive(POLL_SECONDS, DEFAULT_POLL_SECONDS, float))
    elif os.environ.get("AZUREML_MODEL_DIR"):
        model = load_directory_model(
            os.environ["AZUREML_MODEL_DIR"],
            os.environ.get(MODEL_NAME, "model"),
            os.environ.get(MODEL_VERSION, "unknown"),
        )
        scorer = Scorer(model, key=key, limits=limits, request_log=request_log, gate=gate)
    else:
        raise UserInputError(f"set {MODEL_URI} (a registry reference) or AZUREML_MODEL_DIR")
    print(f"serving {scorer.model.name} v{scorer.model.version}", file=sys.stderr, flush=True)
    return scorer
