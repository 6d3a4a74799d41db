"""Deployment state: the history and rollback in the registry, endpoint keys and request logs beside it.

`production` is a registry pointer (`mnist_mlops.registry`: an alias, or a version tag on Azure ML); a
local server started on ``models:/<name>@production`` follows it. Every deploy attempt on a version and
every rollback is kept in the registry itself, as a model-version tag ``deployment.<time>`` holding the
`deployment_record`, so the history survives the job that wrote it (an Azure ML job's working folder
does not) and rollback replays it from any machine that reaches the registry. A skipped deployment
names no version and changes nothing, so it lives only in the pipeline's own record. A move is recorded
before it is made (`record_and_move`): a process killed in between leaves a recorded move that the next
deploy or rollback finishes (`settle`), never a production that the history does not explain.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import UserInputError
from mnist_mlops.keys import new_key
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import (
    READY_TAG,
    client,
    exclusive,
    pointer_version,
    set_pointer,
    sqlite_file,
    with_retries,
)
from mnist_mlops.uris import redact

PRODUCTION_ALIAS = "production"
HISTORY_TAG = "deployment."


def state_dir(uri: str) -> Path:
    """Local serving state: beside an embedded registry, else in $MNIST_MLOPS_STATE_DIR or the home
    folder (never the working directory, which in a job is the read-only code snapshot)."""
    database = sqlite_file(uri)
    if database is not None:
        return database.parent / "deployments"
    return Path(os.environ.get("MNIST_MLOPS_STATE_DIR", Path.home() / ".mnist-mlops")) / "deployments"


def request_log_dir(uri: str, endpoint_name: str) -> Path:
    """Where a local server records its requests for the monitor."""
    return state_dir(uri) / "requests" / endpoint_name


def history_location(uri: str, model_name: str) -> str:
    return f"{redact(uri)}, {model_name} version tags {HISTORY_TAG}*"


def key_path(uri: str, endpoint_name: str) -> Path:
    return state_dir(uri) / f"{endpoint_name}.key"


def ensure_key(path: Path) -> Path:
    """Create the endpoint's bearer key (owner-only) unless it exists; returns its path."""
    if not path.exists():
        atomic_write_text(path, new_key() + "\n", private=True)
    return path


def read_history(uri: str, model_name: str) -> list[dict[str, Any]]:
    """Every record so far, oldest first; a damaged one is an error naming its version and tag."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client(uri).search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return []
    tagged = []
    for version in versions:
        for tag, text in (version.tags or {}).items():
            if not tag.startswith(HISTORY_TAG):
                continue
            where = f"{model_name} version {version.version} tag {tag}"
            try:
                record = json.loads(text)
            except ValueError:
                raise UserInputError(f"{where}: not a JSON deployment record") from None
            contracts.validate(record, "deployment_record", source=where)
            tagged.append((record["deployed_at"], tag, record))
    return [record for _, _, record in sorted(tagged, key=lambda item: item[:2])]


def append_history(uri: str, record: dict[str, Any]) -> str:
    """Validate and keep one record on the version it is about; returns where the history lives."""
    contracts.validate(record, "deployment_record", source="deployment record")
    if record["model_version"] is not None:
        tag = f"{HISTORY_TAG}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.{secrets.token_hex(2)}"
        text = json.dumps(record, sort_keys=True)
        with_retries(
            lambda: client(uri).set_model_version_tag(
                record["model_name"], record["model_version"], tag, text
            )
        )
    return history_location(uri, record["model_name"])


def production_version(uri: str, model_name: str) -> str | None:
    return pointer_version(uri, model_name, PRODUCTION_ALIAS)


def move_production(uri: str, model_name: str, version: str) -> None:
    set_pointer(uri, model_name, PRODUCTION_ALIAS, version)


def production_stack(history: list[dict[str, Any]]) -> list[str]:
    """The versions production went through, replayed from the history: a deploy pushes, a rollback pops.
    A deploy of the version already in production pushes nothing: there is nothing new to roll back from
    (a deploy killed after its record and run again, or the same version deployed twice)."""
    stack: list[str] = []
    for record in history:
        if record["action"] == "deploy" and record["outcome"] == "deployed":
            if stack[-1:] != [record["model_version"]]:
                stack.append(record["model_version"])
        elif record["action"] == "rollback" and stack:
            stack.pop()
    return stack


def record_and_move(uri: str, record: dict[str, Any]) -> str:
    """Keep a deploy or rollback `record` in the history, then move `production` if it deployed or
    rolled back: the history first, so that a process killed between the two leaves a move recorded
    but not made, which `settle` finishes, never a move that no record explains. Call it holding
    `exclusive`. Returns where the history lives."""
    where = append_history(uri, record)
    if record["action"] == "rollback" or record["outcome"] == "deployed":
        move_production(uri, record["model_name"], record["model_version"])
    return where


def settle(uri: str, model_name: str) -> None:
    """Finish the move of `production` that the history's last deploy or rollback recorded, if a killed
    process did not make it (`record_and_move`). Call it holding `exclusive`, before reading production."""
    stack = production_stack(read_history(uri, model_name))
    if stack and production_version(uri, model_name) != stack[-1]:
        move_production(uri, model_name, stack[-1])


def rollback(uri: str, model_name: str, *, endpoint: str) -> dict[str, Any]:
    """Move `production` back to the version deployed before the current one; record it."""
    with exclusive(uri):
        settle(uri, model_name)
        stack = production_stack(read_history(uri, model_name))
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
        record_and_move(uri, record)
    return record
