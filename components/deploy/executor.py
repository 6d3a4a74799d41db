"""deploy: roll a registered, blessed model out to a target, validated in the real serving stack first.

Framework-free interface. Only a registry reference is accepted (``models:/<name>/<version>`` or
``models:/<name>@<alias>``) and the version must be `ready` (verified by register) and blessed, so a
local folder or a hand-built image can never reach production.

Infra validation (before any traffic moves): the model is loaded by the real server (the Azure ML
inference server with our entry script), answers canary requests with exactly the classes the
registered artifact predicts offline and within a latency bound, and rejects a catalogue of invalid
requests with the right 4xx. The canaries come from the current test split and from the test split of
the production version's own data (its reference bundle in the registry): what clients sent yesterday
must still get an answer, unless the new model takes other images or answers other classes than
production (clients must change anyway; the record's canary note says so). Only then does the
`production` alias move (a local server following `@production` switches within seconds). Every
attempt, passed or not, is appended to the model's deployment history beside the registry, and the
record is the output.

Targets: `local` (default) as above; `azureml` and `kubernetes` run a blue/green rollout on an Azure ML
online endpoint (see `azure_targets`; built from the real SDK entities, tested offline only).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import contracts, references
from mnist_mlops.dataset import describe_shape, load_split
from mnist_mlops.deployments import (
    ensure_key,
    key_path,
    production_version,
    record_and_move,
    settle,
)
from mnist_mlops.errors import UserInputError
from mnist_mlops.keys import read_key
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.ports import checked
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import READY_TAG, client, exclusive, registry_uri
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import LoadedModel, RegistryModels
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from mnist_mlops.serving.validation import canary_capacity, infra_validate, json_image_bytes
from mnist_mlops.tracking import node_run

COMPONENT_NAME = "mnist_mlops_deploy"
TARGETS = ("local", "azureml", "kubernetes")
SCORING_SCRIPT = "mnist_mlops/serving/score.py"
"""The entry script inside the code snapshot (Azure ML puts the snapshot root on sys.path)."""
DEFAULT_INSTANCE_TYPES = {"azureml": "Standard_DS3_v2", "kubernetes": "defaultinstancetype"}
"""A managed endpoint takes an Azure VM size; a Kubernetes one an instance type defined on the cluster."""


@dataclass(frozen=True)
class AzureSettings:
    """The ports that only the azureml and kubernetes targets read, carried to the cloud path as one."""

    subscription_id: str | None
    resource_group: str | None
    workspace: str | None
    compute: str | None
    instance_type: str | None
    instance_count: int
    mirror_percent: int


@checked("deploy")
def run_deploy(
    model: str | None,
    test_data: str | Path,
    deployment_record: str | Path,
    *,
    registration_record: str | Path | None = None,
    target: str = "azureml",
    registry: str | None = None,
    endpoint_name: str | None = None,
    port: int = 5001,
    canary_count: int = 64,
    max_canary_p99_ms: float = 50.0,
    subscription_id: str | None = None,
    resource_group: str | None = None,
    workspace: str | None = None,
    compute: str | None = None,
    instance_type: str | None = None,
    instance_count: int = 1,
    mirror_percent: int = 0,
) -> dict[str, Any]:
    """Validate and deploy; every attempt goes to the history, the record is written only on success
    (a refused deployment exits non-zero and leaves no output). Returns the deployment record."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if target not in TARGETS:
        raise UserInputError(f"target {target!r}: expected one of {', '.join(TARGETS)}")
    if (model is None) == (registration_record is None):
        raise UserInputError("give exactly one of model (a registry reference) or registration_record")
    uri = registry_uri(registry)
    if registration_record is not None:
        registration = contracts.read_json(registration_record, "registration_record")
        if not registration["registered"]:
            return _skip(registration, uri, target, deployment_record)
        model = f"models:/{registration['model_name']}/{registration['version']}"
    models = RegistryModels(model, uri)
    version = _blessed_version(models)
    record = _attempt(target, model, models, version, uri)
    loaded = models.load(version)
    interface = loaded.interface
    images, expected, sources = _canaries(
        loaded, Path(test_data), canary_count, uri, record["previous_version"]
    )
    if target == "local":
        endpoint_name = endpoint_name or models.name  # the key and request log `serve` uses too
        record |= _deploy_locally(
            models, version, uri, images, expected, interface, endpoint_name, port, max_canary_p99_ms
        )
    else:
        cloud = AzureSettings(
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace=workspace,
            compute=compute,
            instance_type=instance_type,
            instance_count=instance_count,
            mirror_percent=mirror_percent,
        )
        record |= _deploy_to_azure(models, version, images, expected, interface, target, endpoint_name, cloud)
    if record["infra_validation"] is not None:
        record["infra_validation"]["canary_sources"] = sources
    return _conclude(record, uri, deployment_record)


def _attempt(target: str, model: str, models: RegistryModels, version: str, uri: str) -> dict[str, Any]:
    """The record's fields known before the target is touched, production's current version included."""
    return {
        "schema_version": 1,
        "action": "deploy",
        "target": target,
        "model_uri": model,
        "model_name": models.name,
        "model_version": version,
        "previous_version": production_version(uri, models.name),
    }


def _conclude(record: dict[str, Any], uri: str, deployment_record: str | Path) -> dict[str, Any]:
    """Append the attempt to the history and move `production` if it deployed (`record_and_move`), then
    either refuse with the reason or write the record: a failed deployment leaves no output. Locally,
    production is read again under the registry's lock: another deploy may have moved it meanwhile."""
    name, version = record["model_name"], record["model_version"]
    record["deployed_at"] = utc_iso(datetime.now(UTC))
    with exclusive(uri):
        settle(uri, name)
        if record["target"] == "local":
            record["previous_version"] = production_version(uri, name)
            if record["outcome"] != "deployed" and record["previous_version"]:
                record["traffic"] = {f"v{record['previous_version']}": 100}
        history = record_and_move(uri, record)
    _track(record)
    if record["outcome"] != "deployed":
        raise UserInputError(
            f"{name} v{version} was not deployed ({record['outcome']}): infra validation failed;"
            f" production stays at {record['previous_version'] or 'nothing'} (attempt recorded in {history})"
        )
    contracts.write_json(deployment_record, record, "deployment_record")
    print(
        f"deployed {name} v{version} to {record['target']}: production was"
        f" {record['previous_version'] or '-'}, now {version} (history: {history})",
        flush=True,
    )
    return record


def _track(record: dict[str, Any]) -> None:
    """The attempt in the node's MLflow run: which version went where, and how infra validation went.
    Best effort, after the history: what serves and what the registry says must never disagree because
    the tracking store did not answer."""
    try:
        _log_attempt(record)
    except UserInputError as error:
        print(f"warning: the deployment is done and in the history, but not in MLflow: {error}", flush=True)


def _log_attempt(record: dict[str, Any]) -> None:
    with node_run("deploy") as run:
        run.tags(
            {
                "model_uri": f"models:/{record['model_name']}/{record['model_version']}",
                "deploy.outcome": record["outcome"],
                "deploy.target": record["target"],
                "deploy.previous_version": record["previous_version"] or "-",
                "deploy.endpoint": record.get("endpoint") or "-",
            }
        )
        checks = record.get("infra_validation") or {}
        counts = ("canary_requests", "canary_correct", "p99_ms", "invalid_requests", "invalid_rejected")
        run.metrics({f"infra_validation.{key}": checks[key] for key in counts if key in checks})


def _skip(
    registration: dict[str, Any], uri: str, target: str, deployment_record: str | Path
) -> dict[str, Any]:
    """register declined the model: nothing to deploy, which is the pipeline doing its job (exit 0)."""
    previous = production_version(uri, registration["model_name"])
    record = {
        "schema_version": 1,
        "action": "deploy",
        "target": target,
        "model_uri": None,
        "model_name": registration["model_name"],
        "model_version": None,
        "endpoint": None,
        "deployed_at": utc_iso(datetime.now(UTC)),
        "previous_version": previous,
        "infra_validation": None,
        "traffic": {f"v{previous}": 100} if previous else {},
        "outcome": "skipped",
        "reasons": registration["reasons"],
    }
    contracts.write_json(deployment_record, record, "deployment_record")
    print(f"not deployed: {'; '.join(registration['reasons'])}", flush=True)
    return record


def _blessed_version(models: RegistryModels) -> str:
    from mlflow.exceptions import MlflowException

    try:
        version = models.resolve()
        tags = client(models.registry).get_model_version(models.name, version).tags or {}
    except MlflowException as error:
        raise UserInputError(
            f"{models.name}: not found in the registry ({str(error).splitlines()[0]})"
        ) from None
    if tags.get(READY_TAG) != "ready" or tags.get("blessed") != "True":
        raise UserInputError(f"{models.name} version {version} is not a blessed, ready registered version")
    return version


def _canaries(
    loaded: LoadedModel, test_data: Path, count: int, uri: str, production: str | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Canary images, the classes the registered artifact predicts for them offline, and how many came
    from where: the first `count` of the current test split, then as many of the `production` version's
    reference test split as the one batch request of every canary may still carry (`canary_capacity`:
    the server's batch and body limits)."""
    shape, limits = loaded.interface.image_shape, Limits()
    capacity = canary_capacity(shape, limits)
    if capacity < 1:
        raise UserInputError(
            f"{loaded.name} v{loaded.version} takes {describe_shape(shape)} images: one of them in a JSON"
            f" request may take {json_image_bytes(shape)} bytes, over the scoring server's body limit of"
            f" {limits.max_body_bytes}, so the canary batch request cannot be sent"
        )
    manifest = contracts.read_json(test_data / "manifest.json", "preprocessed_manifest")
    current, _ = load_split(test_data, manifest, "test")
    current = current[: min(count, capacity)]
    loaded.interface.check_images(current, f"{test_data}: the test split of {loaded.name} v{loaded.version}")
    reference, note = _production_test_images(uri, loaded, production, min(count, capacity - len(current)))
    images = np.concatenate([current, reference])
    sources = {"test_split": len(current), "production_reference": len(reference), "note": note}
    capped = (
        f" (one batch request carries at most {capacity} {describe_shape(shape)} images)"
        if capacity < len(current) + count
        else ""
    )
    print(f"canaries: {len(current)} from the current test split, {note}{capped}", flush=True)
    expected = loaded.predict(images).argmax(axis=1)
    return images, expected, sources


def _production_test_images(
    uri: str, loaded: LoadedModel, production: str | None, count: int
) -> tuple[np.ndarray, str]:
    """The first `count` images of the `production` version's reference test split and where they came
    from, or none and why (no production, no room, its reference cannot be read, production takes other
    images or answers other classes than the `loaded` model)."""
    if production is None:
        why = "no production model"
    elif count <= 0:
        why = "the batch request is full"
    else:
        with tempfile.TemporaryDirectory(prefix="reference-") as scratch:
            folder = Path(scratch) / "reference"
            fetched = references.fetch(uri, loaded.name, production, folder)
            if fetched["found"]:
                manifest, _ = references.read_bundle(folder)
                served = ModelInterface.of_dataset(manifest)
                if served == loaded.interface:
                    images = references.test_split(folder)[0][:count]
                    return images, (
                        f"{len(images)} from production v{production}'s test split"
                        f" (dataset {fetched['dataset_version'][:12]})"
                    )
                fetched["reason"] = (
                    f"production v{production} takes {served.describe()}, this model"
                    f" {loaded.interface.describe()}"
                )
        why = fetched["reason"]
    return np.empty((0, *loaded.interface.image_shape), np.uint8), f"none from production's test split: {why}"


def _deploy_locally(
    models: RegistryModels,
    version: str,
    uri: str,
    images: np.ndarray,
    expected: np.ndarray,
    interface: ModelInterface,
    endpoint_name: str,
    port: int,
    max_p99_ms: float,
) -> dict[str, Any]:
    """Validate in a real server pinned to the version (loopback, free port), then report."""
    key_file = ensure_key(key_path(uri, endpoint_name))
    print(f"endpoint key: {key_file}", flush=True)
    limits = Limits()
    environment = server_environment(f"models:/{models.name}/{version}", registry=uri, key_file=key_file)
    with running_server(environment) as server:
        checks = infra_validate(
            ScoringClient(server.url, read_key(str(key_file))),
            images,
            expected,
            classes=interface.classes,
            model_version=version,
            limits=limits,
            max_p99_ms=max_p99_ms,
        )
    return {
        "endpoint": f"http://127.0.0.1:{port}/score",
        "infra_validation": checks,
        "traffic": {f"v{version}": 100} if checks["passed"] else {},
        "outcome": "deployed" if checks["passed"] else "failed",
    }


def _deploy_to_azure(
    models: RegistryModels,
    version: str,
    images: np.ndarray,
    expected: np.ndarray,
    interface: ModelInterface,
    target: str,
    endpoint_name: str | None,
    cloud: AzureSettings,
) -> dict[str, Any]:
    """Blue/green rollout on the workspace's online endpoint (see `azure_targets`); prints its steps and
    returns the record fields it settles."""
    from mnist_mlops.azure_identity import workspace_client
    from mnist_mlops.components.deploy.azure_targets import default_endpoint_name, rollout
    from mnist_mlops.environments import environment_dir
    from mnist_mlops.snapshot import materialize

    ml_client = workspace_client(cloud.subscription_id, cloud.resource_group, cloud.workspace)
    endpoint_name = endpoint_name or default_endpoint_name(ml_client)
    workdir = Path(tempfile.mkdtemp(prefix="mnist-mlops-deploy-"))
    rolled = rollout(
        ml_client,
        target=target,
        endpoint_name=endpoint_name,
        model_name=models.name,
        model_version=version,
        canary_request={"instances": images.astype(int).tolist()},
        expected_classes=[int(value) for value in expected],
        classes=interface.classes,
        invalid_requests=[
            {"body": {"instances": np.full((1, *interface.image_shape), 300).tolist()}},
            {"body": {"images": ["not base64"]}},
        ],
        # the scoring code is the project's code snapshot, so score.py finds everything it imports
        code_dir=materialize(workdir / "code"),
        scoring_script=SCORING_SCRIPT,
        environment_dir=environment_dir("model"),
        instance_type=cloud.instance_type or DEFAULT_INSTANCE_TYPES[target],
        instance_count=cloud.instance_count,
        compute=cloud.compute,
        mirror_percent=cloud.mirror_percent,
        workdir=workdir,
    )
    settled = {key: rolled[key] for key in ("previous_version", "infra_validation", "traffic", "outcome")}
    settled["endpoint"] = rolled["endpoint"] or f"https://{endpoint_name}.unreported/score"
    print("\n".join(rolled["steps"]), flush=True)
    return settled
