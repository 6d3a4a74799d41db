"""Registry pointers and the deployment history on every kind of store, through one code path.

- the embedded SQLite registry (aliases);
- a real `mlflow server` on loopback, what Azure ML's MLflow is to a job (aliases);
- the `azureml://` store of azureml-mlflow, as a job sees it (MLFLOW_TRACKING_TOKEN and MLFLOW_RUN_ID
  set), pointed at a loopback HTTPS stand-in that forwards Azure ML's MLflow routes to that server and,
  like Azure ML's registry, has no alias routes. There the pointers must be model-version tags.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import self_signed_certificate
from mnist_mlops import registry
from mnist_mlops.deployments import (
    append_history,
    production_stack,
    production_version,
    read_history,
    rollback,
)
from tests.records import local_deployment

WORKSPACE_PATH = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ws"
)


class _AzureMLStandIn(http.server.BaseHTTPRequestHandler):
    """Azure ML's MLflow routes (`/mlflow/v2.0/<workspace>/api/2.0/...`) forwarded to a plain server;
    alias routes answer 404 ENDPOINT_NOT_FOUND, as a route the service does not have."""

    upstream: int = 0
    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        prefix = f"/mlflow/v2.0{WORKSPACE_PATH}"
        assert self.path.startswith(prefix), self.path
        path = self.path.removeprefix(prefix)
        self.seen.append(f"{self.command} {path.split('?')[0]}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/registered-models/alias" in path:
            self._answer(404, b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "no such route"}')
            return
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        connection.request(self.command, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        self._answer(response.status, response.read())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def _job_token() -> str:
    """A token shaped like the one Azure ML gives a job (a JWT; the stand-in checks nothing)."""
    import jwt

    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    return jwt.encode({"exp": int(expiry.timestamp()), "aud": "https://ml.azure.com"}, "stand-in", "HS256")


@pytest.fixture(scope="module")
def azureml_store(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `azureml://` registry URI as a job's MLFLOW_TRACKING_URI names it, served on loopback."""
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    handler = type(
        "Handler", (_AzureMLStandIn,), {"upstream": int(mlflow_server.rsplit(":", 1)[1]), "seen": []}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"azureml://127.0.0.1:{server.server_port}/mlflow/v1.0{WORKSPACE_PATH}"
    variables = {  # what Azure ML sets in a job
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_TOKEN": _job_token(),
        "MLFLOW_RUN_ID": "job-run",
        "MLFLOW_EXPERIMENT_NAME": "rehearsal",
        "REQUESTS_CA_BUNDLE": str(cert),
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    yield uri
    server.shutdown()
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    assert not [call for call in handler.seen if "alias" in call]
    assert any("/model-versions/set-tag" in call for call in handler.seen)


def _versions(uri: str, name: str, count: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, "mlflow-artifacts:/0/model", tags={registry.READY_TAG: "ready"})


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mlflow_server", marks=pytest.mark.slow),  # starts a real `mlflow server`
        pytest.param("azureml", marks=pytest.mark.slow),  # the stand-in forwards to that server
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return request.getfixturevalue("mlflow_server" if request.param == "mlflow_server" else "azureml_store")


def test_pointers_history_and_rollback_on_every_store(store: str, request: pytest.FixtureRequest) -> None:
    name = f"model-{request.node.callspec.id}-{time.monotonic_ns()}"
    _versions(store, name, 3)
    assert registry.has_aliases(store) == (not store.startswith("azureml:"))
    assert registry.pointer_version(store, name, "production") is None
    for version, when in (("1", "2026-01-01T00:00:00Z"), ("3", "2026-01-02T00:00:00Z")):
        registry.set_pointer(store, name, "production", version)
        append_history(store, local_deployment(name, version, production_version(store, name), at=when))
    registry.set_pointer(store, name, "challenger", "2")
    assert production_version(store, name) == "3"
    assert registry.pointer_version(store, name, "challenger") == "2"
    assert [record["model_version"] for record in read_history(store, name)] == ["1", "3"]
    assert production_stack(read_history(store, name)) == ["1", "3"]
    listed = {row["version"]: row["aliases"] for row in registry.list_versions(store, name)}
    assert listed == {"3": "production", "2": "challenger", "1": "-"}

    rolled = rollback(store, name, endpoint="http://127.0.0.1:5001/score")
    assert (rolled["model_version"], rolled["previous_version"]) == ("1", "3")
    assert production_version(store, name) == "1"  # back to a lower version: the newest pointer wins
    assert [record["action"] for record in read_history(store, name)][-1] == "rollback"
