"""The model registry: MLflow's, embedded on a SQLite file by default, or any MLflow tracking URI.

Default: `sqlite:///mlflow.db` in the working directory (as MLflow defaults to `./mlruns`); override
with `--registry` or `MLFLOW_TRACKING_URI` (an AML workspace's URI works through `azureml-mlflow`).
A version is usable only when its `validation_status` tag is `ready`: register sets it after loading
the registered artifact back and checking its predictions.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mnist_mlops.errors import UserInputError

DEFAULT_REGISTRY_FILE = "mlflow.db"
READY_TAG = "validation_status"
_T = TypeVar("_T")


def registry_uri(explicit: str | None = None) -> str:
    """The registry to use: explicit, else $MLFLOW_TRACKING_URI, else the SQLite file in the cwd."""
    return (
        explicit
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path(DEFAULT_REGISTRY_FILE).resolve()}"
    )


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def sqlite_file(uri: str) -> Path | None:
    """The database file of an embedded SQLite registry URI, None for any other registry."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def exclusive(uri: str) -> Iterator[None]:
    """Serialize writers of an embedded SQLite registry on this machine (MLflow's first use creates
    its tables, and two processes doing that at once collide); other registries handle concurrency."""
    database = sqlite_file(uri)
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiment_id(uri: str, name: str) -> str:
    """The experiment that holds registered artifacts; for an embedded SQLite registry its artifacts
    live beside the database file (MLflow would otherwise put them under the working directory)."""
    import mlflow

    registry = client(uri)
    existing = registry.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    database = sqlite_file(uri)
    location = (database.parent / "mlartifacts").resolve().as_uri() if database else None
    try:
        return registry.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        return registry.get_experiment_by_name(name).experiment_id


def with_retries(action: Callable[[], _T], attempts: int = 20) -> _T:
    """Retry `action` while SQLite reports a lock held by a concurrent registration."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # MLflow wraps SQLAlchemy's OperationalError in several types
            if "locked" not in str(error).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def list_versions(uri: str, name: str) -> list[dict[str, str]]:
    """Every version of model `name`, newest first: aliases, readiness, dataset and headline metrics."""
    from mlflow.exceptions import MlflowException

    registry = client(uri)
    try:
        versions = registry.search_model_versions(f"name='{name}'")
        aliases = registry.get_registered_model(name).aliases if versions else {}
    except MlflowException as error:
        raise UserInputError(f"registry {uri}: cannot list {name} ({str(error).splitlines()[0]})") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in sorted(versions, key=lambda item: int(item.version), reverse=True):
        tags = version.tags or {}
        rows.append(
            {
                "version": str(version.version),
                "aliases": ",".join(sorted(by_version.get(str(version.version), []))) or "-",
                "status": tags.get(READY_TAG, "-"),
                "accuracy": tags.get("metric.accuracy", "-"),
                "p99_ms": tags.get("metric.p99_ms", "-"),
                "dataset": tags.get("dataset_version", "-")[:12],
                "run": tags.get("pipeline_run_id", "-"),
            }
        )
    return rows
