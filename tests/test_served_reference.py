"""A server's worker serves a registry reference without MLflow in its memory: a child process resolves
and downloads each version (`mnist_mlops.serving.fetch`), and a probe notices an alias that moved
(`mnist_mlops.serving.pointer_probe`), on an embedded SQLite registry and a real `mlflow server`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import READY_TAG, client
from mnist_mlops.serving import config, fetch, scorer
from mnist_mlops.serving.fetch import fetch_in_child
from mnist_mlops.serving.pointer_probe import is_error, pointer_probe
from mnist_mlops.serving.scorer import ServedReference
from tests.test_onnx_runtime import softmax_model_folder

NAME = "softmax"


def registered_versions(registry: str, root: Path, count: int, *, ready: bool = True) -> None:
    """`count` versions of a tiny ONNX-exported model in `registry`, `production` on version 1."""
    registry_client = client(registry)
    registry_client.create_registered_model(NAME)
    for number in range(1, count + 1):
        folder = softmax_model_folder(root / f"v{number}")
        version = registry_client.create_model_version(NAME, source=str(folder)).version
        if ready:
            registry_client.set_model_version_tag(NAME, version, READY_TAG, "ready")
    registry_client.set_registered_model_alias(NAME, "production", "1")


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_worker_loads_an_alias_without_mlflow_in_its_memory(tmp_path, sqlite_registry):
    registered_versions(sqlite_registry, tmp_path, 1)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from mnist_mlops.serving.config import scorer_from_environment
        scorer = scorer_from_environment()
        answer = scorer.model.predict(np.array([[[0, 0, 9], [0, 0, 0]]], dtype=np.uint8))
        print(scorer.model.version, scorer.model.runtime, int(answer.argmax()), "mlflow" in sys.modules)
        """
    )
    environment = {
        **os.environ,
        config.MODEL_URI: f"models:/{NAME}@production",
        config.REGISTRY: sqlite_registry,
        config.POLL_SECONDS: "60",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "onnxruntime", "2", "False"]


def counted_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The references fetched by child processes from now on."""
    fetched: list[str] = []
    real = fetch.fetch_in_child

    def counted(model_uri: str, *arguments: object) -> str:
        fetched.append(model_uri)
        return real(model_uri, *arguments)

    monkeypatch.setattr(fetch, "fetch_in_child", counted)
    return fetched


def test_a_moved_alias_is_loaded_once_and_a_still_one_costs_no_resolution(
    tmp_path, sqlite_registry, monkeypatch
):
    registered_versions(sqlite_registry, tmp_path, 2)
    served = ServedReference(f"models:/{NAME}@production", sqlite_registry)
    assert served.load_current().version == "1"
    fetches = counted_fetches(monkeypatch)
    assert served.newer("1") is None and fetches == []  # the probe saw nothing move: no child process
    client(sqlite_registry).set_registered_model_alias(NAME, "production", "2")
    moved = served.newer("1")
    assert moved is not None and moved.version == "2"
    assert moved.predict(np.zeros((1, 2, 3), np.uint8)).shape == (1, 6)
    assert served.newer("2") is None and len(fetches) == 1


def test_a_version_that_is_not_ready_or_not_there_is_a_clear_error(tmp_path, sqlite_registry):
    registered_versions(sqlite_registry, tmp_path, 1, ready=False)
    with pytest.raises(UserInputError, match="not ready"):
        fetch_in_child(f"models:/{NAME}@production", sqlite_registry, tmp_path / "into")
    assert not (tmp_path / "into").exists()
    with pytest.raises(UserInputError, match="names no version"):
        fetch_in_child(f"models:/{NAME}@staging", sqlite_registry)


def test_a_fetched_version_is_the_registered_folder(tmp_path, sqlite_registry):
    registered_versions(sqlite_registry, tmp_path, 1)
    assert fetch_in_child(f"models:/{NAME}/1", sqlite_registry, tmp_path / "into") == "1"
    assert sorted(path.name for path in (tmp_path / "into").iterdir()) == ["MLmodel", "scoring"]


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_the_probe_changes_exactly_when_the_alias_moves(tmp_path, request, store):
    registry = request.getfixturevalue("sqlite_registry" if store == "sqlite" else "mlflow_server")
    registry_client = client(registry)
    registry_client.create_registered_model(f"{NAME}-{store}")
    for _ in range(2):
        registry_client.create_model_version(f"{NAME}-{store}", source="s3://bucket/model")  # never read
    probe = pointer_probe(registry, f"{NAME}-{store}", "production")
    nothing = probe()
    assert nothing == () == pointer_probe(registry, "no-such-model", "production")()  # names nothing
    if store == "server":  # any other refusal is not an answer: MLflow's 400 for an alias it cannot hold
        assert is_error(pointer_probe(registry, f"{NAME}-{store}", "no such alias")())
    registry_client.set_registered_model_alias(f"{NAME}-{store}", "production", "1")
    first = probe()
    assert first == ("1",) and probe() == first  # one shape for every store
    registry_client.set_model_version_tag(f"{NAME}-{store}", "2", "note", "unrelated")
    assert probe() == first
    registry_client.set_registered_model_alias(f"{NAME}-{store}", "production", "2")
    assert probe() not in (first, nothing)


def test_a_store_that_cannot_be_read_is_an_answer_not_an_error(tmp_path):
    assert pointer_probe("http://127.0.0.1:9", NAME, "production")() == ("unreadable", "URLError")
    assert pointer_probe(f"sqlite:///{tmp_path / 'missing.db'}", NAME, "production")()[0] == "unreadable"
    assert pointer_probe("azureml://somewhere", NAME, "production") is None


@pytest.mark.parametrize("retry_seconds", [scorer.FETCH_RETRY_SECONDS, 0.0])
def test_a_move_to_a_version_that_cannot_load_is_fetched_again_later_not_at_every_poll(
    tmp_path, sqlite_registry, monkeypatch, retry_seconds
):
    monkeypatch.setattr(scorer, "FETCH_RETRY_SECONDS", retry_seconds)
    registered_versions(sqlite_registry, tmp_path, 2)
    registry_client = client(sqlite_registry)
    registry_client.delete_model_version_tag(NAME, "2", READY_TAG)
    served = ServedReference(f"models:/{NAME}@production", sqlite_registry)
    served.load_current()
    registry_client.set_registered_model_alias(NAME, "production", "2")
    with pytest.raises(UserInputError, match="not ready"):
        served.newer("1")
    registry_client.set_model_version_tag(NAME, "2", READY_TAG, "ready")
    moved = served.newer("1")
    if retry_seconds:
        assert moved is None  # within the wait: no child process, whatever the registry says now
    else:
        assert moved is not None and moved.version == "2"


def test_a_probe_that_cannot_read_the_store_is_said_and_resolution_goes_on_every_so_often(
    tmp_path, sqlite_registry, monkeypatch, capfd
):
    registered_versions(sqlite_registry, tmp_path, 2)
    monkeypatch.setattr(scorer, "pointer_probe", lambda *_: lambda: ("unreadable", "HTTP 401"))
    served = ServedReference(f"models:/{NAME}@production", sqlite_registry)
    assert "cannot read where models:/softmax@production points (HTTP 401)" in capfd.readouterr().err
    served.load_current()
    client(sqlite_registry).set_registered_model_alias(NAME, "production", "2")
    fetches = counted_fetches(monkeypatch)
    assert served.newer("1") is None and fetches == []  # within FETCH_RETRY_SECONDS
    monkeypatch.setattr(served, "_retry_at", 0.0)
    moved = served.newer("1")
    assert moved is not None and moved.version == "2" and len(fetches) == 1


def test_a_probe_readable_again_on_the_served_version_fetches_nothing(tmp_path, sqlite_registry, monkeypatch):
    """A store that could not be read for a moment, then names what the worker serves: no reload."""
    registered_versions(sqlite_registry, tmp_path, 2)
    served = ServedReference(f"models:/{NAME}@production", sqlite_registry)
    served.load_current()
    readable = served._probe
    monkeypatch.setattr(served, "_probe", lambda: ("unreadable", "OperationalError"))
    assert served.newer("1") is None
    monkeypatch.setattr(served, "_probe", readable)
    fetches = counted_fetches(monkeypatch)
    assert served.newer("1") is None and fetches == []
    client(sqlite_registry).set_registered_model_alias(NAME, "production", "2")
    moved = served.newer("1")  # and a move after it is still followed
    assert moved is not None and moved.version == "2" and len(fetches) == 1
