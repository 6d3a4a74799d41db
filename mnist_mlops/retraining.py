"""Retrain requests and the handlers that act on them.

On a breach the monitor writes a retrain request (schema `retrain_request`) and hands it to the handler
its `on_breach` names. Handlers are named here as "module:function" references and imported only when
one is used, so neither the monitor (a component) nor this shared runtime imports the orchestrators
that retrain: the built-in handlers live in the pipelines layer (`mnist_mlops.pipelines.retrain`), and a
user names their own as `package.module:function`. `alert` hands the request to nothing; it is still
written down in the report folder for a person or an event-driven system to act on.

A reference names a handler factory, called with the `RetrainSettings` before any monitoring, so that
settings a handler cannot act on (no data, no workspace, a missing SDK) stop the monitor before it reads
anything. The handler it returns takes the request on a breach and returns its outcome: some of
`OUTCOME_FIELDS`, `status` among them ("succeeded", "failed" or "submitted").

The settings (`retrain_data`, `retrain_until`, `registry`, and the Azure ML workspace) stay ports of
the monitor: on Azure ML and Kubeflow a component's ports are its only declared configuration, shown in
the studio and checked by `mnist-mlops specs`, so a scheduled monitor shows where it would retrain. The
monitor passes them through (it reads only `registry`, for the serving model's baseline); what each
means to a retraining belongs to its handler.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.errors import UserInputError

ALERT_ONLY = "alert"
BUILT_IN = {
    "retrain_local": "mnist_mlops.pipelines.retrain:retrain_local",
    "retrain_aml": "mnist_mlops.pipelines.retrain:retrain_aml",
}
"""The handlers `on_breach` names without a reference, declared once here."""
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
OUTCOME_FIELDS = ("status", "run_id", "exit_code", "command", "detail")
"""What the report records of a handler's outcome."""

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class RetrainSettings:
    """The monitor's ports that configure handlers; each handler reads those it needs."""

    data: str | None = None
    until: str | None = None
    registry: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None


def handler_for(on_breach: str, settings: RetrainSettings) -> Handler | None:
    """The handler `on_breach` names, made from `settings` (None for `alert`); a name that does not
    resolve, or settings the handler refuses, raise UserInputError before any work."""
    if on_breach == ALERT_ONLY:
        return None
    reference = BUILT_IN.get(on_breach, on_breach)
    if not REFERENCE.fullmatch(reference):
        known = ", ".join([ALERT_ONLY, *BUILT_IN])
        raise UserInputError(f"on_breach {on_breach!r}: expected one of {known} or a package.module:function")
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserInputError(f"on_breach {on_breach!r}: cannot import {module_name} ({error})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserInputError(f"on_breach {on_breach!r}: {module_name} has no function {attribute}")
    return factory(settings)


def not_triggered(on_breach: str) -> dict[str, Any]:
    """The report's retrain record when nothing was handed over."""
    return {"on_breach": on_breach} | dict.fromkeys(OUTCOME_FIELDS) | {"status": "not_triggered"}


def hand_over(on_breach: str, handler: Handler, request: dict[str, Any]) -> dict[str, Any]:
    """The report's retrain record of handing `request` to `handler`. Whatever the handler raises is
    its outcome, recorded as failed: the monitor's report is its product and is written regardless."""
    record = not_triggered(on_breach)
    try:
        outcome = handler(request)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        return record | {"status": "failed", "detail": f"{type(error).__name__}: {first_line}"}
    if not isinstance(outcome, dict) or "status" not in outcome or set(outcome) - set(OUTCOME_FIELDS):
        expected = f"a dict with status and any of {', '.join(OUTCOME_FIELDS[1:])}"
        return record | {
            "status": "failed",
            "detail": f"the handler returned {outcome!r:.200}, not {expected}",
        }
    problem = _record_problem(record | outcome)
    if problem:
        return record | {"status": "failed", "detail": f"the handler returned {outcome!r:.200}: {problem}"}
    return record | outcome


def _record_problem(record: dict[str, Any]) -> str | None:
    """What makes `record` unfit for the monitor report's `retrain` field (its schema), if anything: a
    handler's answer is checked here, so that it can never keep the report from being written."""
    from jsonschema import Draft202012Validator, exceptions

    schema = contracts.load_schema("monitor_report")["properties"]["retrain"]
    error = exceptions.best_match(Draft202012Validator(schema).iter_errors(record))
    return None if error is None else f"{error.json_path}: {error.message}"
