"""Deployment state kept beside the registry: endpoint keys, the append-only history, rollback.

`production` is an MLflow registry alias; a local server started on ``models:/<name>@production`` follows
it. Every deploy attempt and every rollback appends one `deployment_record` line to
``deployments/<model>.jsonl`` next to an embedded SQLite registry (or in the working directory for any
other registry). Lines are only ever appended, under the registry's writer lock, so the file is the
audit trail of what served when, and rollback reads the production history from it.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.errors import UserInputError
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import READY_TAG, client, exclusive, sqlite_file, with_retries

PRODUCTION_ALIAS = "production"


def state_dir(uri: str) -> Path:
    database = sqlite_file(uri)
    return (database.parent if database else Path.cwd()) / "deployments"


def request_log_dir(uri: str, endpoint_name: str) -> Path:
    """Where a local server records its requests for the monitor."""
    return state_dir(uri) / "requests" / endpoint_name


def history_path(uri: str, model_name: str) -> Path:
    return state_dir(uri) / f"{model_name}.jsonl"


def key_path(uri: str, endpoint_name: str) -> Path:
    return state_dir(uri) / f"{endpoint_name}.key"


def ensure_key(path: Path) -> Path:
    """Create the endpoint's bearer key (owner-only) unless it exists; returns its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        os.replace(staged, path)
    return path


def read_history(uri: str, model_name: str) -> list[dict[str, Any]]:
    """Every record so far, oldest first; a damaged line is an error naming its number."""
    path = history_path(uri, model_name)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise UserInputError(f"{path}:{number}: not a JSON line") from None
        contracts.validate(record, "deployment_record", source=f"{path}:{number}")
        records.append(record)
    return records


def append_history(uri: str, record: dict[str, Any]) -> Path:
    """Validate and append one record (a single O_APPEND write, so lines never interleave)."""
    contracts.validate(record, "deployment_record", source="deployment record")
    path = history_path(uri, record["model_name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def production_version(uri: str, model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(uri).get_model_version_by_alias(model_name, PRODUCTION_ALIAS).version)
    except MlflowException:
        return None


def move_production(uri: str, model_name: str, version: str) -> None:
    with_retries(lambda: client(uri).set_registered_model_alias(model_name, PRODUCTION_ALIAS, version))


def production_stack(history: list[dict[str, Any]]) -> list[str]:
    """The versions production went through, replayed from the history: a deploy pushes, a rollback pops."""
    stack: list[str] = []
    for record in history:
        if record["action"] == "deploy" and record["outcome"] == "deployed":
            stack.append(record["model_version"])
        elif record["action"] == "rollback" and stack:
            stack.pop()
    return stack


def rollback(uri: str, model_name: str, *, endpoint: str) -> dict[str, Any]:
    """Move `production` back to the version deployed before the current one; record it."""
    with exclusive(uri):
        history = read_history(uri, model_name)
        stack = production_stack(history)
        current = production_version(uri, model_name)
        if len(stack) < 2 or current != stack[-1]:
            raise UserInputError(
                f"{model_name}: no earlier deployment to roll back to "
                f"(production is {current or 'unset'}; deployed versions: {', '.join(stack) or 'none'})"
            )
        target = stack[-2]
        tags = client(uri).get_model_version(model_name, target).tags or {}
        if tags.get(READY_TAG) != "ready":
            raise UserInputError(f"{model_name} version {target} is no longer ready; not rolling back to it")
        move_production(uri, model_name, target)
        record = {
            "schema_version": 1,
            "action": "rollback",
            "target": "local",
            "model_uri": f"models:/{model_name}/{target}",
            "model_name": model_name,
            "model_version": target,
            "endpoint": endpoint,
            "deployed_at": utc_iso(datetime.now(UTC)),
            "previous_version": current,
            "infra_validation": None,
            "traffic": {f"v{target}": 100},
            "outcome": "rolled_back",
        }
        append_history(uri, record)
    return record
