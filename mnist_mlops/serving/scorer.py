"""The scoring logic behind the HTTP server: model loading, key auth, request -> response.

Framework-free (no Flask): `score.py` adapts the Azure ML inference server's request to `Scorer.respond`.
The model is loaded once: its ONNX export made at registration (`mnist_mlops.onnx_export`) in ONNX
Runtime when the version has one, without TensorFlow; else (a version registered before exports, or
one tf2onnx could not convert) through a warmed `tf.function` with a fixed uint8 signature of the
model's own image shape (its `ModelInterface`). `load_model_folder` on a local folder with an export
imports neither TensorFlow nor MLflow; a server's worker gets its folder from a child process
(`ServedReference`).

A server started on an alias (``models:/mnist-mlops@production``) follows it: a background thread
notices the alias moved (a cheap probe every few seconds), loads and warms the new version beside the
old one, then swaps one reference. Requests in flight finish on the model they started with, so a
rollback or a new deployment switches a running server without dropping a request.

Every answer, a refusal too, carries the request's id in its body (`request_id`) and its `x-request-id`
header, and the request log keeps it: the id a client quotes is the one `mnist-mlops lineage` traces.
It is the request's incoming `x-request-id` when that is a safe id (the header the Azure ML inference
server itself takes, or fills with a new GUID, logs and echoes), else a new GUID.

Load: a worker scores one request at a time (parsing and the model call; the server scales by worker
processes) and lets at most `max_queue` more wait for their turn (`AdmissionGate`); one more gets a
503 with `Retry-After` at once instead of waiting without bound. The server runs each worker with
enough threads for that (`mnist_mlops.serving.server`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from mnist_mlops.errors import UserInputError
from mnist_mlops.keys import FixedKey, KeyRing
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.onnx_export import load_export
from mnist_mlops.serving.payloads import BadRequest, Limits, check_body_size, parse_request
from mnist_mlops.serving.pointer_probe import is_error, names_version, pointer_probe
from mnist_mlops.serving.request_log import RequestLog, new_request_id, usable_request_id

REQUEST_ID_HEADER = "x-request-id"
DRAIN_LIMIT = 64 * 1024 * 1024
SHED_DRAIN_LIMIT = 1024 * 1024
"""A shed request's body is read and dropped up to this much: a 503 must stay cheap for a full worker."""
BODY_READ_SECONDS = 10.0
"""How long a request's body may take to arrive: a client that stalls mid-upload gets a 408 and frees
its thread, rather than holding a place in the queue for good (the server sets it on the socket)."""
DEFAULT_MAX_QUEUE = 32
RETRY_AFTER_SECONDS = 1
FETCH_RETRY_SECONDS = 30.0
"""How long a server following an alias waits before fetching again a version it could not load (each
fetch is a child process importing MLflow: not at every poll)."""
MODEL_URI_PATTERN = re.compile(
    r"^models:/(?P<name>[^/@\s]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_-]+))$"
)


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    predict: Callable[[np.ndarray], np.ndarray]
    interface: ModelInterface
    runtime: str | None = None
    """What runs the model: "onnxruntime" or "tensorflow" (None: a plain function, as tests make)."""


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` -> (name, "3", None); ``models:/name@alias`` -> (name, None, "alias")."""
    match = MODEL_URI_PATTERN.match(uri or "")
    if not match:
        raise UserInputError(
            f"model {uri!r}: expected a registry reference models:/<name>/<version> or models:/<name>@<alias>"
            " (local paths and images cannot be served or deployed)"
        )
    return match["name"], match["version"], match["alias"]


def compile_predict(keras_model: Any, interface: ModelInterface) -> Callable[[np.ndarray], np.ndarray]:
    """A warmed tf.function over the model with a fixed uint8 (None, *image_shape) signature."""
    import tensorflow as tf

    function = tf.function(
        lambda images: keras_model(images, training=False),
        input_signature=[tf.TensorSpec([None, *interface.image_shape], tf.uint8)],
    )
    for size in (1, 8):
        function(np.zeros((size, *interface.image_shape), np.uint8))
    return lambda images: function(images).numpy()


def load_model_folder(
    name: str, version: str, folder: str | Path, *, threads: int | None = None
) -> LoadedModel:
    """Load a local MLflow model folder with its interface: its ONNX export when it has one, else the
    TensorFlow model, compiled and warmed. `threads`: CPU threads per call (None: one for ONNX Runtime,
    as a server scales by processes; TensorFlow's default, which TensorFlow takes only before it runs)."""
    interface = ModelInterface.of_model(folder)
    exported = load_export(Path(folder), threads=threads or 1)
    if exported is not None:
        return LoadedModel(name, version, exported, interface, "onnxruntime")
    if threads is not None:
        _limit_tensorflow_threads(threads)
    import mlflow.tensorflow

    keras_model = mlflow.tensorflow.load_model(str(folder))
    return LoadedModel(name, version, compile_predict(keras_model, interface), interface, "tensorflow")


def _limit_tensorflow_threads(threads: int) -> None:
    """Give TensorFlow `threads` threads per operation; a process that already ran it keeps its own."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # raised once TensorFlow is initialized
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


class RegistryModels:
    """Versions of one registered model, resolved and loaded through the MLflow registry."""

    def __init__(self, model_uri: str, registry: str) -> None:
        self.name, self.version, self.alias = parse_model_uri(model_uri)
        self.registry = registry

    def resolve(self) -> str:
        """The version the reference points at now; it must be registered and ready."""
        from mnist_mlops.registry import READY_TAG, client, pointer_version

        registry = client(self.registry)
        version = pointer_version(self.registry, self.name, self.alias) if self.alias else self.version
        if version is None:
            raise UserInputError(f"{self.name}@{self.alias}: the pointer names no version in the registry")
        found = registry.get_model_version(self.name, version)
        if (found.tags or {}).get(READY_TAG) != "ready":
            raise UserInputError(
                f"{self.name} version {found.version} is not ready (never verified by register)"
            )
        return str(found.version)

    def download(self, version: str, into: Path) -> Path:
        """A version's MLflow model folder, downloaded into `into` (replacing what was there)."""
        from mnist_mlops.registry import download_version

        return download_version(self.registry, self.name, version, into)

    def load(self, version: str, *, threads: int | None = None) -> LoadedModel:
        """Download a version and load it (`load_model_folder`, with `threads`)."""
        with tempfile.TemporaryDirectory(prefix="mnist-mlops-model-") as scratch:
            folder = self.download(version, Path(scratch) / "model")
            return load_model_folder(self.name, version, folder, threads=threads)

    def newer(self, current: str) -> LoadedModel | None:
        """The version the reference names now, loaded, when it is not `current`."""
        version = self.resolve()
        return self.load(version) if version != current else None

    def interface(self, version: str) -> ModelInterface:
        """What a version takes and answers, from its `MLmodel` file alone (no weights, no TensorFlow):
        cheap enough to check an input against before any model is loaded."""
        from mnist_mlops.registry import client, download_folder

        source = client(self.registry).get_model_version_download_uri(self.name, version)
        with tempfile.TemporaryDirectory(prefix="mnist-mlops-mlmodel-") as scratch:
            folder = download_folder(
                self.registry, f"{source.rstrip('/')}/MLmodel", Path(scratch) / "model", "MLmodel"
            )
            return ModelInterface.of_model(folder)


class ServedReference:
    """A registry reference as a server's worker serves it, without MLflow in its memory.

    Each version is resolved and downloaded by a child process (`mnist_mlops.serving.fetch`) and loaded
    from that folder; an alias is watched by a probe (`mnist_mlops.serving.pointer_probe`) and resolved
    again only when the probe's answer changes to other than the version served (every
    FETCH_RETRY_SECONDS while the probe cannot read the store, or after a version failed to load).
    A store without a probe is followed through MLflow in this process (`RegistryModels`)."""

    def __init__(self, model_uri: str, registry: str) -> None:
        self.name, self.version, self.alias = parse_model_uri(model_uri)
        self.model_uri = model_uri
        self.registry = registry
        self._probe = pointer_probe(registry, self.name, self.alias) if self.alias else None
        self._seen = self._probe() if self._probe is not None else None  # read before the first load
        self._retry_at: float | None = None  # when to resolve again whatever the probe says
        if is_error(self._seen):
            self._cannot_probe()

    def load_current(self, *, threads: int | None = None) -> LoadedModel:
        """The version the reference names now, downloaded by a child process and loaded here."""
        from mnist_mlops.serving.fetch import fetch_in_child

        with tempfile.TemporaryDirectory(prefix="mnist-mlops-model-") as scratch:
            folder = Path(scratch) / "model"
            version = fetch_in_child(self.model_uri, self.registry, folder)
            return load_model_folder(self.name, version, folder, threads=threads)

    def newer(self, current: str) -> LoadedModel | None:
        """The version the alias names now, loaded, when it may have moved and is not `current`."""
        if self._probe is None:
            return RegistryModels(self.model_uri, self.registry).newer(current)
        seen = self._probe()
        due = self._retry_at is not None and time.monotonic() >= self._retry_at
        if is_error(seen) and not is_error(self._seen):
            self._seen = seen
            self._cannot_probe()
        if seen != self._seen and names_version(seen, current):  # e.g. readable again after a blip
            self._seen, self._retry_at = seen, None
            return None
        if (seen == self._seen or is_error(seen)) and not due:
            return None
        self._seen, self._retry_at = seen, None
        try:
            model = self.load_current()
        except Exception:  # e.g. a version not ready yet: tried again in a while, not at every poll
            self._retry_at = time.monotonic() + FETCH_RETRY_SECONDS
            raise
        if is_error(seen):  # resolved through MLflow: again in a while, while the probe cannot read
            self._retry_at = time.monotonic() + FETCH_RETRY_SECONDS
        return model if model.version != current else None

    def _cannot_probe(self) -> None:
        self._retry_at = time.monotonic() + FETCH_RETRY_SECONDS
        print(
            f"cannot read where {self.model_uri} points ({self._seen[1]}): resolving it through MLflow"
            f" every {FETCH_RETRY_SECONDS:g} s until it can",
            file=sys.stderr,
            flush=True,
        )


class ModelSource(Protocol):
    """What a following scorer needs: the model's name and the newer version, if any."""

    name: str

    def newer(self, current: str) -> LoadedModel | None: ...


def load_directory_model(model_dir: str | Path, name: str, version: str) -> LoadedModel:
    """A model folder mounted by the platform (Azure ML sets AZUREML_MODEL_DIR): first MLmodel found."""
    found = sorted(Path(model_dir).rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        raise UserInputError(f"{model_dir}: no MLflow model (MLmodel file) inside")
    return load_model_folder(name, version, found[0].parent)


class AdmissionGate:
    """At most one request scored at a time and `max_queue` waiting for their turn; any more is shed.

    `admitted()` says at once whether a request may wait (no lock held while it waits), `turn()` is its
    turn at the model (the waiting ones in whatever order the lock wakes them: no order is promised)."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if max_queue < 0:
            raise UserInputError(f"max_queue {max_queue}: expected 0 or more waiting requests")
        self.max_queue = max_queue
        self._inside = 0
        self._count_lock = threading.Lock()
        self._model_lock = threading.Lock()
        _GATES.add(self)

    @property
    def inside(self) -> int:
        """Requests admitted now: the one being scored and those waiting."""
        return self._inside

    @contextlib.contextmanager
    def admitted(self) -> Iterator[bool]:
        with self._count_lock:
            admitted = self._inside <= self.max_queue
            self._inside += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._count_lock:
                    self._inside -= 1

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._model_lock:
            yield


_GATES: weakref.WeakSet[AdmissionGate] = weakref.WeakSet()


def requests_in_process() -> int:
    """Requests admitted by any gate of this process (a server's worker has one)."""
    return sum(gate.inside for gate in list(_GATES))


class Scorer:
    """Answers scoring requests with the current model; optionally follows a registry alias.

    `key`: a fixed bearer key, or a `KeyRing` that follows a key file through rotations; None: no key
    check (the platform does it)."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        key: str | KeyRing | None,
        limits: Limits,
        request_log: RequestLog | None = None,
        gate: AdmissionGate | None = None,
    ) -> None:
        self._model = model
        self._keys = FixedKey(key) if isinstance(key, str) else key
        self.limits = limits
        self.request_log = request_log
        self.gate = gate or AdmissionGate()

    @property
    def model(self) -> LoadedModel:
        return self._model

    def follow(self, models: ModelSource, poll_seconds: float) -> threading.Thread:
        """Start a daemon thread that swaps in whatever version the alias points at."""

        def watch() -> None:
            while True:
                time.sleep(poll_seconds)
                try:
                    previous = self._model.version
                    newer = models.newer(previous)
                    if newer is not None:
                        self._model = newer
                        print(
                            f"now serving {models.name} v{newer.version} (was v{previous})",
                            file=sys.stderr,
                            flush=True,
                        )
                except Exception as error:  # keep serving the current version; say why we could not switch
                    print(
                        f"alias check failed, still serving v{self._model.version}: {error}", file=sys.stderr
                    )

        thread = threading.Thread(target=watch, name="follow-alias", daemon=True)
        thread.start()
        return thread

    def authorized(self, authorization: str | None) -> bool:
        if self._keys is None:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self._keys.accepts(token.strip().encode())

    def respond(
        self,
        *,
        method: str,
        authorization: str | None,
        content_type: str | None,
        content_length: int | None,
        read_body: Callable[[int], bytes],
        request_id: str | None = None,
        client_request_id: str | None = None,
    ) -> Response:
        """One HTTP exchange. Never raises for bad input: every refusal is a 4xx with a clear message.
        `request_id` is the request's incoming id (kept when safe, else replaced by a new one);
        `client_request_id`, the client's own, goes to the request log beside it."""
        started = time.perf_counter()
        request_id = usable_request_id(request_id) or new_request_id()
        model = self._model  # one model parses and answers the request, even if the alias moves meanwhile
        with self.gate.admitted() as admitted:
            if admitted:
                response, images, probabilities = self._respond(
                    model, method, authorization, content_type, content_length, read_body
                )
            else:
                response, images, probabilities = self._shed(content_length, read_body), None, None
        response = dataclasses.replace(
            response,
            body={**response.body, "request_id": request_id},
            headers={**response.headers, REQUEST_ID_HEADER: request_id},
        )
        if self.request_log is not None:
            self.request_log.submit(
                model_name=model.name,
                model_version=model.version,
                status=response.status,
                started=started,
                images=images,
                probabilities=probabilities,
                classes=model.interface.classes,
                request_id=request_id,
                client_request_id=client_request_id,
            )
        return response

    def _respond(
        self,
        model: LoadedModel,
        method: str,
        authorization: str | None,
        content_type: str | None,
        content_length: int | None,
        read_body: Callable[[int], bytes],
    ) -> tuple[Response, np.ndarray | None, np.ndarray | None]:
        if not self.authorized(authorization):
            refusal = _error(
                401,
                "missing or invalid key: send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
            return refusal, None, None
        if method != "POST":
            return _error(405, "use POST to score", {"Allow": "POST"}), None, None
        try:
            if content_length is not None and content_length > self.limits.max_body_bytes:
                _drain(read_body, content_length)
            check_body_size(content_length, self.limits)
            body = read_body(self.limits.max_body_bytes + 1)
        except BodyNotReceived:
            late = _error(408, f"the request body did not arrive whole within {BODY_READ_SECONDS:g} s")
            return late, None, None
        except BadRequest as refusal:
            return _error(refusal.status, refusal.message), None, None
        try:
            with self.gate.turn():
                images = parse_request(body, content_type, self.limits, model.interface.image_shape)
                probabilities = model.predict(images)
        except BadRequest as refusal:
            return _error(refusal.status, refusal.message), None, None
        if not np.isfinite(probabilities).all():  # JSON has no NaN: answering would say null or break it
            return (
                _error(500, f"model {model.name} v{model.version} answered non-finite probabilities"),
                None,
                None,
            )
        rows = probabilities.astype(np.float64).round(6)
        predictions = [
            {"class": best, "label": model.interface.classes[best], "probabilities": row.tolist()}
            for row, best in zip(rows, rows.argmax(axis=1).tolist(), strict=True)
        ]
        body_out = {
            "schema_version": 1,
            "predictions": predictions,
            "model_name": model.name,
            "model_version": model.version,
        }
        return Response(200, body_out, {"x-model-version": model.version}), images, probabilities

    def _shed(self, content_length: int | None, read_body: Callable[[int], bytes]) -> Response:
        """503 with Retry-After: the worker's queue is full. The body is read and dropped first (see
        `_drain`), so the client gets the answer rather than a reset connection."""
        _drain(read_body, SHED_DRAIN_LIMIT if content_length is None else content_length, SHED_DRAIN_LIMIT)
        return _error(
            503,
            f"the server is busy: {self.gate.max_queue} requests already wait in this worker; retry after"
            f" {RETRY_AFTER_SECONDS} s",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class BodyNotReceived(Exception):
    """The request body stopped arriving (the socket's read deadline passed, or the client left)."""


def _drain(read_body: Callable[[int], bytes], length: int, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop a refused body (up to `limit`; a chunked one, of unknown `length`, until it ends),
    so the client can send it whole and read the answer; closing with unread bytes makes the kernel reset
    the connection and the client sees no answer. A body that stops arriving is left where it is."""
    remaining = min(length, limit)
    try:
        while remaining > 0 and (chunk := read_body(min(remaining, 1 << 20))):
            remaining -= len(chunk)
    except BodyNotReceived:
        return


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"message": message}, headers or {})


def encode(response: Response) -> bytes:
    """The response body as compact JSON (orjson: a tenth of the standard library's time on 128 rows)."""
    return orjson.dumps(response.body)
