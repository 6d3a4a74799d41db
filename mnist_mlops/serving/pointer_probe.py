"""Notice that a registry alias moved without MLflow in the process: a cheap read every few seconds.

A server following ``models:/<name>@production`` must see a deploy or a rollback within seconds, but its
workers keep MLflow out of their memory (`mnist_mlops.serving.fetch`). A probe reads only what the alias
names, the way the store keeps it:
- an embedded SQLite registry: MLflow's `registered_model_aliases` table, read-only;
- an MLflow tracking server (http/https): its REST API's `registered-models/alias`, with the
  credentials MLflow's own client takes from the environment.

A probe's answer is a signal, not a resolution: when it changes, the worker resolves the reference again
through MLflow (in a child process), which alone decides the version and checks it is ready. A probe
that cannot read the store (`is_error`: refused credentials, another TLS setup than MLflow's) says so,
and the worker then resolves through the child process every so often instead. Other stores (Azure
ML's registry, whose pointers are tags, a database server, a SQLite URI with options) have no probe:
there the worker follows through MLflow in its own process.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable
from pathlib import Path

from mnist_mlops.registry import sqlite_file

PROBE_SECONDS = 5.0
"""How long one read may take; a slower store is read again at the next poll."""
_ERROR_BODY_BYTES = 4096
"""How much of an error answer is read: MLflow's are a short JSON object."""

Probe = Callable[[], Hashable]


def pointer_probe(registry: str, name: str, alias: str) -> Probe | None:
    """A function answering what `alias` of model `name` names now (a tuple of version strings, empty
    when it names none; `is_error` when the store cannot be read), or None for a store without one."""
    database = sqlite_file(registry)
    if database is not None and "?" not in registry:  # a URI with options: left to MLflow
        return lambda: _sqlite_alias(database, name, alias)
    if registry.startswith(("http://", "https://")):
        return lambda: _rest_alias(registry, name, alias)
    return None


def _sqlite_alias(database: Path, name: str, alias: str) -> Hashable:
    try:
        with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=PROBE_SECONDS) as db:
            rows = db.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchall()
    except sqlite3.Error as error:
        return ("unreadable", type(error).__name__)
    return tuple(sorted(str(version) for (version,) in rows))


def _rest_alias(registry: str, name: str, alias: str) -> Hashable:
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    request = urllib.request.Request(
        f"{registry.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}", headers=_auth_headers()
    )
    try:
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS) as response:
            return (str(json.load(response)["model_version"]["version"]),)
    except urllib.error.HTTPError as error:
        if error.code == 404 or _alias_not_set(error, alias):  # no such model, or no such alias: an answer
            return ()
        return ("unreadable", f"HTTP {error.code}")
    except (OSError, ValueError, KeyError) as error:
        return ("unreadable", type(error).__name__)


def _alias_not_set(error: urllib.error.HTTPError, alias: str) -> bool:
    """Whether the server said the alias names nothing: MLflow's answers a model without that alias with
    400 INVALID_PARAMETER_VALUE "Registered model alias <alias> not found." (no such model is a 404)."""
    if error.code != 400:
        return False
    try:
        body = json.loads(error.read(_ERROR_BODY_BYTES))
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return (
        isinstance(body, dict)
        and body.get("error_code") == "INVALID_PARAMETER_VALUE"
        and body.get("message") == f"Registered model alias {alias} not found."
    )


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's REST client sends from the environment: a user name and password, else
    a bearer token."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def is_error(answer: Hashable) -> bool:
    """Whether a probe's answer says it could not read the store (rather than what the alias names)."""
    return isinstance(answer, tuple) and bool(answer) and answer[0] == "unreadable"


def names_version(answer: Hashable, version: str) -> bool:
    """Whether a probe's answer is that the alias names `version` (and nothing else)."""
    return answer == (version,)
