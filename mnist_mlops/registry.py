"""The model registry: MLflow's, embedded on a SQLite file by default, or any MLflow tracking URI.

Default: `sqlite:///mlflow.db` in the working directory (as MLflow defaults to `./mlruns`); override
with `--registry` or `MLFLOW_TRACKING_URI` (an Azure ML job's `azureml://` URI works through
`azureml-mlflow`). A version is usable only when its `validation_status` tag is `ready`: register sets
it after loading the registered artifact back and checking its predictions.

Pointers (`production`, `challenger`): MLflow aliases where the store has them; Azure ML's MLflow
registry does not list aliases as supported, so there a pointer is a model-version tag
`pointer.<name>` holding the time it was set, and the newest one wins. `pointer_version` and
`set_pointer` are the one code path for both.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mnist_mlops.atomic import DOWNLOADING
from mnist_mlops.errors import UserInputError
from mnist_mlops.locks import held

DEFAULT_REGISTRY_FILE = "mlflow.db"
READY_TAG = "validation_status"
JUDGEMENT_TAG = "evaluation_uri"
"""Where a version's judgement is (`runs:/<run>/evaluation`): the blessing, model card and evaluation
report it was registered on, logged by register in its run under the JUDGEMENT_FILES names."""
JUDGEMENT_BLESSING = "blessing.json"
JUDGEMENT_CARD = "model_card.md"
JUDGEMENT_REPORT = "evaluation_report.json"
JUDGEMENT_FILES = (JUDGEMENT_BLESSING, JUDGEMENT_CARD, JUDGEMENT_REPORT)
"""Whatever the platform named them (Azure ML names a file output after its port), kept as these."""
SHIFT_TAG = "data_shift"
SHIFT_REFERENCE_VERSION_TAG = "data_shift.reference_version"
SHIFT_REFERENCE_DATASET_TAG = "data_shift.reference_dataset"
"""The model-version tags register copies from the blessing: evaluate's data-shift decision, and the
version and dataset whose training data the new data was compared with ("-" for none)."""
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


def download_folder(uri: str, artifact_uri: str, destination: Path, marker: str) -> Path:
    """Download `artifact_uri` and move the folder holding `marker` (MLflow nests a download under its
    artifact path) to `destination`, replacing what was there; returns `destination`. A download
    without exactly one `marker` is a UserInputError; the scratch folder never outlives the call."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file buries warnings
    scratch = destination.with_name(f".{destination.name}{DOWNLOADING}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(scratch), tracking_uri=uri
        )
        folders = {path.parent for path in scratch.rglob(marker)}
        if len(folders) != 1:
            raise UserInputError(
                f"{artifact_uri}: expected one {marker} in the download, found {len(folders)}"
            )
        shutil.rmtree(destination, ignore_errors=True)
        folders.pop().rename(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destination


def download_version(uri: str, name: str, version: str, destination: Path) -> Path:
    """Registered version `version` of model `name`: its MLflow model folder, downloaded into
    `destination` (replacing what was there). A `runs:/` source resolves through this registry's
    tracking store, not the process default."""
    source = client(uri).get_model_version_download_uri(name, version)
    return download_folder(uri, source, destination, "MLmodel")


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
    with held(database.with_name(database.name + ".lock")):
        yield


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


POINTER_TAG = "pointer."


def has_aliases(uri: str) -> bool:
    """Whether the store keeps MLflow aliases (every store but Azure ML's)."""
    return not uri.startswith("azureml:")


def pointer_version(uri: str, name: str, pointer: str) -> str | None:
    """The version `pointer` names now, None when it names none (or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    registry = client(uri)
    try:
        if has_aliases(uri):
            return str(registry.get_model_version_by_alias(name, pointer).version)
        return _tagged_pointers(registry.search_model_versions(f"name='{name}'")).get(pointer)
    except MlflowException:
        return None


def _tagged_pointers(versions: list) -> dict[str, str]:
    """pointer -> version, from `pointer.<name>` version tags: the most recently set one wins."""
    newest: dict[str, tuple[str, int]] = {}
    for version in versions:
        for tag, stamp in (version.tags or {}).items():
            if tag.startswith(POINTER_TAG):
                pointer = tag.removeprefix(POINTER_TAG)
                newest[pointer] = max(
                    newest.get(pointer, (stamp, int(version.version))), (stamp, int(version.version))
                )
    return {pointer: str(version) for pointer, (_, version) in newest.items()}


def set_pointer(uri: str, name: str, pointer: str, version: str) -> None:
    """Point `pointer` at `version`: move the alias, or tag the version and untag the others."""
    from datetime import UTC, datetime

    registry = client(uri)
    if has_aliases(uri):
        with_retries(lambda: registry.set_registered_model_alias(name, pointer, version))
        return
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    registry.set_model_version_tag(name, version, POINTER_TAG + pointer, stamp)
    for other in registry.search_model_versions(f"name='{name}'"):
        if str(other.version) != str(version) and POINTER_TAG + pointer in (other.tags or {}):
            registry.delete_model_version_tag(name, other.version, POINTER_TAG + pointer)


def pointers(uri: str, name: str, versions: list) -> dict[str, list[str]]:
    """version -> the pointers naming it, from the registered model's aliases or the versions' tags."""
    by_version: dict[str, list[str]] = {}
    if has_aliases(uri):
        for alias, version in client(uri).get_registered_model(name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return by_version
    for pointer, version in _tagged_pointers(versions).items():
        by_version.setdefault(version, []).append(pointer)
    return by_version


def list_versions(uri: str, name: str) -> list[dict[str, str]]:
    """Every version of model `name`, newest first: aliases, readiness, headline metrics, dataset and
    evaluate's data-shift decision on it (`accepted` marks a shift promoted on purpose)."""
    from mlflow.exceptions import MlflowException

    registry = client(uri)
    try:
        versions = registry.search_model_versions(f"name='{name}'")
        by_version = pointers(uri, name, versions) if versions else {}
    except MlflowException as error:
        raise UserInputError(f"registry {uri}: cannot list {name} ({str(error).splitlines()[0]})") from None
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
                "shift": tags.get(SHIFT_TAG, "-"),
                "run": tags.get("pipeline_run_id", "-"),
            }
        )
    return rows
