"""Records the tests put in a registry's deployment history without running deploy."""

from __future__ import annotations


def local_deployment(
    model: str,
    version: str,
    previous: str | None,
    *,
    at: str = "2026-12-07T10:00:00Z",
    outcome: str = "deployed",
) -> dict:
    """The `deployment_record` of a local deploy of `model` `version` over `previous`, made at `at`."""
    return {
        "schema_version": 1,
        "action": "deploy",
        "target": "local",
        "model_uri": f"models:/{model}/{version}",
        "model_name": model,
        "model_version": version,
        "endpoint": "http://127.0.0.1:5001/score",
        "deployed_at": at,
        "previous_version": previous,
        "infra_validation": None,
        "traffic": {f"v{version}": 100},
        "outcome": outcome,
    }
