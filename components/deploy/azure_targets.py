"""Blue/green rollout of a registered model to an Azure ML online endpoint (managed or Kubernetes).

Target "azureml" is a managed online endpoint; "kubernetes" is a Kubernetes online endpoint on an AKS
(or Arc) cluster attached to the workspace as a compute, as in the classic AML workshop. Either way the
new version goes to whichever of "blue"/"green" is not live, at 0% traffic; it is smoke-tested through
the deployment header (canary classes and version, malformed requests must get a 4xx), optionally
shadowed with mirrored traffic, then given traffic in steps with a canary check after each. Any failure
rolls traffic back to the previous deployment and deletes the new one; on success the previous
deployment is kept at 0% so a rollback is one traffic update.

The model is always a workspace registry reference (`azureml:<name>:<version>`), never a local path:
it must be registered in the workspace's model registry (e.g. by `register` with an AML MLflow
tracking URI). Requests go through `MLClient.online_endpoints.invoke`, which sends JSON only, so the
invalid requests checked here are JSON bodies.

What was NOT exercised against a live workspace: nothing here has run against Azure. Everything is
tested offline: the endpoint and deployment entities are built with the real `azure.ai.ml` classes and
checked against the SDK's YAML schemas (dump, then `load_online_endpoint`/`load_online_deployment`),
and `rollout` is tested against a recording fake of `MLClient`'s operation groups that asserts the
exact call sequence and mimics the service rules we rely on (0-traffic deletes, traffic sums, mirror
limits, 4xx errors raised through the SDK's own response check). Not covered: provisioning times and
LRO behaviour, image builds from the conda file, quotas, authentication (mnist_mlops.azure_identity),
the inference router of a Kubernetes cluster, and concurrent rollouts to one endpoint (no lock: run
one rollout per endpoint at a time).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from mnist_mlops import contracts
from mnist_mlops.errors import ContractError, UserInputError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import (
        KubernetesOnlineDeployment,
        KubernetesOnlineEndpoint,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineEndpoint,
    )
    from azure.ai.ml.operations import OnlineDeploymentOperations, OnlineEndpointOperations

TARGETS = ("azureml", "kubernetes")
BLUE, GREEN = "blue", "green"
MODEL_NAME_VARIABLE = "MNIST_MLOPS_MODEL_NAME"  # read by mnist_mlops.serving.config
MODEL_VERSION_VARIABLE = "MNIST_MLOPS_MODEL_VERSION"
MAX_MIRROR_PERCENT = 50  # the service refuses more mirrored traffic
REQUEST_TIMEOUT_MS = 5_000  # a 256-image batch scores in well under a second on a DS3_v2
MAX_CONCURRENT_REQUESTS = 1  # the inference server runs one worker: more would only queue inside it

DEPLOYED, ROLLED_BACK, FAILED = "deployed", "rolled_back", "failed"
_ENDPOINT_NAME = re.compile(r"^[A-Za-z](?:[-A-Za-z0-9]{1,30}[A-Za-z0-9])$")  # the service's rule, 3..32
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_MODEL_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")  # registry versions are 1, 2, ...


WORKSPACE_ENVIRONMENT = {
    "subscription_id": "AZUREML_ARM_SUBSCRIPTION",
    "resource_group": "AZUREML_ARM_RESOURCEGROUP",
    "workspace": "AZUREML_ARM_WORKSPACE_NAME",
}
"""What Azure ML sets in every job: a deploy step inside a pipeline targets its own workspace."""


def azure_ml_client(
    subscription_id: str | None, resource_group: str | None, workspace: str | None
) -> MLClient:
    """An MLClient for the workspace (given, else the running job's), with Azure ML's credential order."""
    given = {"subscription_id": subscription_id, "resource_group": resource_group, "workspace": workspace}
    values = {name: value or os.environ.get(WORKSPACE_ENVIRONMENT[name]) for name, value in given.items()}
    subscription_id, resource_group, workspace = values.values()
    missing = [name for name, value in values.items() if not (value and value.strip())]
    if missing:
        raise UserInputError(f"Azure ML workspace not fully specified: missing {', '.join(missing)}")
    from azure.ai.ml import MLClient

    from mnist_mlops.azure_identity import credential

    return MLClient(
        credential=credential(),
        subscription_id=subscription_id.strip(),
        resource_group_name=resource_group.strip(),
        workspace_name=workspace.strip(),
    )


def default_endpoint_name(ml_client: MLClient) -> str:
    """An endpoint name unique to the workspace: endpoint names must be unique in an Azure region, so a
    fixed default would collide with every other workspace that uses this library there."""
    import hashlib

    workspace = f"{ml_client.subscription_id}/{ml_client.resource_group_name}/{ml_client.workspace_name}"
    return f"mnist-{hashlib.sha256(workspace.lower().encode()).hexdigest()[:12]}"


def build_endpoint(
    target: str, endpoint_name: str, *, compute: str | None
) -> ManagedOnlineEndpoint | KubernetesOnlineEndpoint:
    """The endpoint entity with key auth (what `invoke` and the scoring clients use)."""
    _check_target(target)
    if not _ENDPOINT_NAME.match(endpoint_name):
        raise UserInputError(
            f"endpoint name {endpoint_name!r}: 3-32 letters, digits or '-', starting with a letter and "
            "not ending with '-' (Azure ML's rule; the name is part of the scoring URI)"
        )
    from azure.ai.ml.entities import KubernetesOnlineEndpoint, ManagedOnlineEndpoint

    description = "MNIST digit classifier (mnist-mlops), blue/green deployments"
    if target == "kubernetes":
        if not (compute and compute.strip()):
            raise UserInputError(
                "target kubernetes needs compute: the name of the attached Kubernetes compute"
            )
        return KubernetesOnlineEndpoint(
            name=endpoint_name, compute=compute.strip(), auth_mode="key", description=description
        )
    if compute:
        raise UserInputError(
            f"compute {compute!r} applies to target kubernetes only (managed endpoints own theirs)"
        )
    return ManagedOnlineEndpoint(name=endpoint_name, auth_mode="key", description=description)


def build_deployment(
    target: str,
    *,
    endpoint_name: str,
    deployment_name: str,
    model_name: str,
    model_version: str,
    code_dir: Path,
    scoring_script: str,
    environment_dir: Path,
    instance_type: str,
    instance_count: int,
) -> ManagedOnlineDeployment | KubernetesOnlineDeployment:
    """The deployment entity: registry model, our scoring script and environment, probes, request limits.

    For kubernetes, `instance_type` names an instance type defined on the cluster (e.g.
    "defaultinstancetype"), not an Azure VM size.
    """
    _check_target(target)
    if not _MODEL_NAME.match(model_name):
        raise UserInputError(f"model name {model_name!r}: letters, digits, '.', '_' or '-' (a registry name)")
    if not _MODEL_VERSION.match(model_version):
        raise UserInputError(
            f"model version {model_version!r}: must be a registry version number such as '3' "
            "(not an alias, 'latest' or a path), so the deployment pins exactly what was validated"
        )
    code_dir = Path(code_dir).resolve()
    environment_dir = Path(environment_dir).resolve()
    script = Path(scoring_script)
    if script.is_absolute() or ".." in script.parts or not (code_dir / script).is_file():
        raise UserInputError(f"scoring script {scoring_script!r}: not a file inside {code_dir}")
    if not (environment_dir / "Dockerfile").is_file():
        raise UserInputError(f"environment {environment_dir}: no Dockerfile (a build context is expected)")
    if not instance_type.strip():
        raise UserInputError("instance_type must not be empty")
    if type(instance_count) is not int or instance_count < 1:
        raise UserInputError(f"instance_count {instance_count!r}: must be a positive integer")
    from azure.ai.ml.entities import (
        BuildContext,
        CodeConfiguration,
        Environment,
        KubernetesOnlineDeployment,
        ManagedOnlineDeployment,
        OnlineRequestSettings,
        ProbeSettings,
    )

    deployment_class = KubernetesOnlineDeployment if target == "kubernetes" else ManagedOnlineDeployment
    return deployment_class(
        name=deployment_name,
        endpoint_name=endpoint_name,
        model=f"azureml:{model_name}:{model_version}",
        code_configuration=CodeConfiguration(code=str(code_dir), scoring_script=script.as_posix()),
        # the model environment the pipeline's components run in: azmlinfsrv and every pin included
        environment=Environment(build=BuildContext(path=str(environment_dir))),
        environment_variables={MODEL_NAME_VARIABLE: model_name, MODEL_VERSION_VARIABLE: model_version},
        instance_type=instance_type.strip(),
        instance_count=instance_count,
        # init() loads and warms the model before the server answers: allow 5 minutes before a restart,
        # but take an unhealthy replica out of rotation after 30 s.
        liveness_probe=ProbeSettings(
            initial_delay=30, period=10, timeout=2, success_threshold=1, failure_threshold=30
        ),
        readiness_probe=ProbeSettings(
            initial_delay=10, period=10, timeout=2, success_threshold=1, failure_threshold=3
        ),
        request_settings=OnlineRequestSettings(
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_concurrent_requests_per_instance=MAX_CONCURRENT_REQUESTS,
        ),
    )


def rollout(
    ml_client: MLClient,
    *,
    target: str,
    endpoint_name: str,
    model_name: str,
    model_version: str,
    canary_request: dict,
    expected_classes: list[int],
    invalid_requests: list[dict],
    code_dir: Path,
    scoring_script: str,
    environment_dir: Path,
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
    compute: str | None = None,
    mirror_percent: int = 0,
    traffic_steps: tuple[int, ...] = (10, 50, 100),
    workdir: Path,
) -> dict[str, Any]:
    """Deploy the version next to the live one, validate it, shift traffic in steps; roll back on failure.

    Returns {"endpoint", "deployment", "previous_version", "infra_validation", "traffic", "outcome",
    "steps"}. `endpoint` is the scoring URI the service reports; for a managed endpoint that reports
    none (yet), the documented https://<name>.<region>.inference.ml.azure.com/score built from the
    endpoint's region; otherwise None. `infra_validation.canary_requests` counts the canary images
    (one prediction each) and `canary_correct` those predicted as expected; `p99_ms` is over the timed
    canary calls to the new deployment. `outcome` is "failed" when validation failed before any traffic
    moved, "rolled_back" when a later step failed and the previous deployment serves all traffic again.
    Inputs are checked before the workspace is touched (UserInputError). If the rollback itself fails,
    its error propagates: the endpoint's state is then unknown and needs a human.
    """
    wanted_endpoint = build_endpoint(target, endpoint_name, compute=compute)
    new_deployment = functools.partial(
        build_deployment,
        target,
        endpoint_name=endpoint_name,
        model_name=model_name,
        model_version=model_version,
        code_dir=code_dir,
        scoring_script=scoring_script,
        environment_dir=environment_dir,
        instance_type=instance_type,
        instance_count=instance_count,
    )
    new_deployment(deployment_name=BLUE)  # refuse bad deployment inputs before anything is created
    _check_rollout_inputs(canary_request, expected_classes, invalid_requests, mirror_percent, traffic_steps)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    canary_file = _write_json(workdir / "canary_request.json", canary_request)
    invalid_files = [
        _write_json(workdir / f"invalid_request_{index}.json", request["body"])
        for index, request in enumerate(invalid_requests)
    ]
    endpoints, deployments = ml_client.online_endpoints, ml_client.online_deployments
    steps: list[str] = []

    try:
        endpoint = endpoints.get(endpoint_name)
        steps.append(f"endpoint {endpoint_name} exists")
    except ResourceNotFoundError:
        endpoint = endpoints.begin_create_or_update(wanted_endpoint).result()
        steps.append(f"endpoint {endpoint_name} created ({target}, auth_mode=key)")
    live = _live_deployment(endpoint, target, compute)
    new = GREEN if live == BLUE else BLUE
    previous_version = None
    if live:
        variables = deployments.get(name=live, endpoint_name=endpoint_name).environment_variables or {}
        previous_version = variables.get(MODEL_VERSION_VARIABLE)
        steps.append(
            f"live deployment {live} (100% of traffic) serves version {previous_version or 'unknown'}"
        )
    else:
        steps.append("no live deployment: nothing to roll back to")
    serving = {live: 100} if live else {}
    model_ref = f"azureml:{model_name}:{model_version}"

    def result(traffic: dict[str, int], outcome: str, validation: dict[str, Any]) -> dict[str, Any]:
        return {
            "endpoint": _scoring_uri(endpoint, target, endpoint_name),
            "deployment": new,
            "previous_version": previous_version,
            "infra_validation": validation,
            "traffic": traffic,
            "outcome": outcome,
            "steps": steps,
        }

    try:
        deployments.begin_create_or_update(new_deployment(deployment_name=new)).result()
    except (AzureError, _ml_exception()) as error:
        steps.append(f"deployment {new} could not be created: {_describe(error)}")
        validation = _validation(len(expected_classes), 0, [], len(invalid_files), 0)
    else:
        steps.append(f"deployment {new} created with {model_ref} at 0% traffic")
        validation = _smoke_test(
            endpoints,
            endpoint_name,
            new,
            canary_file,
            invalid_files,
            expected_classes,
            model_name,
            model_version,
            steps,
        )
    if not validation["passed"]:
        _discard(deployments, new, endpoint_name, steps)
        steps.append(f"traffic unchanged: {_format(serving)}")
        return result(serving, FAILED, validation)

    try:
        if mirror_percent and live:
            _mirror(endpoints, endpoint, live, new, mirror_percent, canary_file, steps)
        elif mirror_percent:
            steps.append("mirroring skipped: there is no live traffic to mirror")
        plan = _traffic_plan(live, new, traffic_steps)
        for traffic in plan:
            endpoint.traffic = dict(traffic)
            endpoints.begin_create_or_update(endpoint).result()
            response = _score(endpoints, endpoint_name, canary_file, None)
            correct = _count_correct(response, expected_classes)
            if correct != len(expected_classes):
                raise _CanaryFailed(f"{correct}/{len(expected_classes)} canary images as expected")
            steps.append(f"traffic {_format(traffic)}: canary {correct}/{len(expected_classes)} as expected")
    except (AzureError, _ml_exception(), ValueError, ContractError, _CanaryFailed) as error:
        steps.append(f"rollout stopped: {_describe(error)}")
        endpoint.traffic = dict(serving)
        endpoint.mirror_traffic = {}
        endpoints.begin_create_or_update(endpoint).result()
        steps.append(f"rolled back: traffic {_format(serving)}")
        _discard(deployments, new, endpoint_name, steps)
        return result(serving, ROLLED_BACK if live else FAILED, validation)
    if live:
        steps.append(f"{live} kept at 0% traffic for an instant rollback")
    return result(dict(plan[-1]), DEPLOYED, validation)


class _CanaryFailed(Exception):
    """The endpoint answered, but not with the expected classes."""


def _ml_exception() -> type[Exception]:
    """The SDK's own error type (a non-JSON error body, client-side validation), imported when needed."""
    from azure.ai.ml.exceptions import MlException

    return MlException


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise UserInputError(f"target {target!r}: expected one of {', '.join(TARGETS)}")


def _check_rollout_inputs(
    canary_request: dict,
    expected_classes: list[int],
    invalid_requests: list[dict],
    mirror_percent: int,
    traffic_steps: tuple[int, ...],
) -> None:
    """Refuse a rollout whose checks could not mean anything, before any Azure call."""
    contracts.validate(canary_request, "scoring_request", source="canary_request")
    images = canary_request.get("instances", canary_request.get("images"))
    if len(expected_classes) != len(images) or any(
        type(value) is not int or not 0 <= value <= 9 for value in expected_classes
    ):
        raise UserInputError(
            f"expected_classes: one digit 0..9 per canary image ({len(images)}), got {expected_classes!r}"
        )
    for index, request in enumerate(invalid_requests):
        if not isinstance(request, dict) or "body" not in request:
            raise UserInputError(f"invalid_requests[{index}]: expected an object with a 'body' to send")
    if type(mirror_percent) is not int or not 0 <= mirror_percent <= MAX_MIRROR_PERCENT:
        raise UserInputError(f"mirror_percent {mirror_percent!r}: must be an integer 0..{MAX_MIRROR_PERCENT}")
    steps = list(traffic_steps)
    if (
        not steps
        or any(type(step) is not int or not 0 < step <= 100 for step in steps)
        or steps != sorted(set(steps))
        or steps[-1] != 100
    ):
        raise UserInputError(
            f"traffic_steps {traffic_steps!r}: increasing percentages of traffic for the new deployment,"
            " ending at 100"
        )


def _write_json(path: Path, document: Any) -> Path:
    """`invoke` takes its body from a file."""
    path.write_text(json.dumps(document))
    return path


def _live_deployment(endpoint: OnlineEndpoint, target: str, compute: str | None) -> str | None:
    """The deployment serving all traffic, or None; refuse endpoints this rollout would corrupt."""
    from azure.ai.ml.entities import KubernetesOnlineEndpoint

    if isinstance(endpoint, KubernetesOnlineEndpoint) != (target == "kubernetes"):
        kind = "kubernetes" if target == "kubernetes" else "managed"
        raise UserInputError(f"endpoint {endpoint.name} exists but is not a {kind} online endpoint")
    # The service reports the compute as an ARM id (.../computes/<name>), YAML as azureml:<name>.
    running_on = (getattr(endpoint, "compute", None) or "").split("/")[-1].removeprefix("azureml:")
    if target == "kubernetes" and compute and running_on and running_on != compute:
        raise UserInputError(f"endpoint {endpoint.name} runs on compute {running_on}, not {compute}")
    serving = {name: int(pct) for name, pct in (endpoint.traffic or {}).items() if int(pct) > 0}
    mirrored = {name: int(pct) for name, pct in (endpoint.mirror_traffic or {}).items() if int(pct) > 0}
    if len(serving) > 1 or mirrored:
        raise UserInputError(
            f"endpoint {endpoint.name} is mid-rollout (traffic {_format(serving)}, "
            f"mirror {_format(mirrored)}): send all traffic to one deployment and clear mirroring first"
        )
    return next(iter(serving), None)


def _smoke_test(
    endpoints: OnlineEndpointOperations,
    endpoint_name: str,
    deployment: str,
    canary_file: Path,
    invalid_files: list[Path],
    expected_classes: list[int],
    model_name: str,
    model_version: str,
    steps: list[str],
) -> dict[str, Any]:
    """Canary and malformed requests sent to the new deployment only (header routing, 0% traffic)."""
    correct, latencies = 0, []
    try:
        started = time.perf_counter()
        response = _score(endpoints, endpoint_name, canary_file, deployment)
        latencies.append((time.perf_counter() - started) * 1000)
        served = (response["model_name"], response["model_version"])
        if served != (model_name, model_version):
            steps.append(f"canary answered by {served[0]} v{served[1]}, not {model_name} v{model_version}")
        else:
            correct = _count_correct(response, expected_classes)
    except (AzureError, _ml_exception(), ValueError, ContractError) as error:
        steps.append(f"canary request failed: {_describe(error)}")
    rejected = 0
    for index, request_file in enumerate(invalid_files):
        try:
            endpoints.invoke(
                endpoint_name=endpoint_name, deployment_name=deployment, request_file=str(request_file)
            )
            steps.append(f"invalid request {index} was accepted")
        except HttpResponseError as error:
            if error.status_code is not None and 400 <= error.status_code < 500:
                rejected += 1
            else:
                steps.append(f"invalid request {index}: HTTP {error.status_code} instead of a 4xx")
        except (AzureError, _ml_exception()) as error:
            steps.append(f"invalid request {index}: {_describe(error)} instead of a 4xx")
    validation = _validation(len(expected_classes), correct, latencies, len(invalid_files), rejected)
    p99 = "-" if validation["p99_ms"] is None else f"{validation['p99_ms']:.1f} ms"
    verdict = "passed" if validation["passed"] else "FAILED"
    steps.append(
        f"smoke test on {deployment}: canary {correct}/{len(expected_classes)} as expected, p99 {p99}, "
        f"invalid requests rejected {rejected}/{len(invalid_files)}: {verdict}"
    )
    return validation


def _validation(
    requests: int, correct: int, latencies: list[float], invalid: int, rejected: int
) -> dict[str, Any]:
    """The deployment record's infra_validation block."""
    return {
        "canary_requests": requests,
        "canary_correct": correct,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        "invalid_requests": invalid,
        "invalid_rejected": rejected,
        "passed": bool(latencies) and correct == requests and rejected == invalid,
    }


def _score(
    endpoints: OnlineEndpointOperations, endpoint_name: str, request_file: Path, deployment: str | None
) -> dict[str, Any]:
    """One scoring call; the answer must be a scoring_response (ValueError/ContractError otherwise)."""
    text = endpoints.invoke(
        endpoint_name=endpoint_name, deployment_name=deployment, request_file=str(request_file)
    )
    response = json.loads(text)
    contracts.validate(response, "scoring_response", source=f"response of {deployment or endpoint_name}")
    return response


def _count_correct(response: dict[str, Any], expected_classes: list[int]) -> int:
    predictions = response["predictions"]
    if len(predictions) != len(expected_classes):
        return 0
    return sum(
        item["class"] == expected for item, expected in zip(predictions, expected_classes, strict=True)
    )


def _mirror(
    endpoints: OnlineEndpointOperations,
    endpoint: OnlineEndpoint,
    live: str,
    new: str,
    percent: int,
    canary_file: Path,
    steps: list[str],
) -> None:
    """Shadow live traffic to the new deployment; its answers are discarded, so only the call is checked.

    Errors of the mirrored copies show in the deployment's metrics and logs, not here.
    """
    endpoint.traffic = {live: 100}
    endpoint.mirror_traffic = {new: percent}
    endpoints.begin_create_or_update(endpoint).result()
    _score(endpoints, endpoint.name, canary_file, None)
    endpoint.mirror_traffic = {}
    endpoints.begin_create_or_update(endpoint).result()
    steps.append(f"mirrored {percent}% of live traffic to {new}, then stopped mirroring")


def _traffic_plan(live: str | None, new: str, traffic_steps: tuple[int, ...]) -> list[dict[str, int]]:
    """Traffic after each step; without a live deployment the only possible split is all-new."""
    if live is None:
        return [{new: 100}]
    return [{live: 100 - pct, new: pct} for pct in traffic_steps]


def _discard(
    deployments: OnlineDeploymentOperations, name: str, endpoint_name: str, steps: list[str]
) -> None:
    """Delete the new deployment (it holds no traffic); already gone is fine."""
    try:
        deployments.begin_delete(name=name, endpoint_name=endpoint_name).result()
        steps.append(f"deployment {name} deleted")
    except ResourceNotFoundError:
        steps.append(f"deployment {name} was not created")


def _scoring_uri(endpoint: OnlineEndpoint, target: str, endpoint_name: str) -> str | None:
    if endpoint.scoring_uri:
        return endpoint.scoring_uri
    if target == "azureml" and endpoint.location:
        return f"https://{endpoint_name}.{endpoint.location}.inference.ml.azure.com/score"
    return None


def _format(traffic: dict[str, int]) -> str:
    return " ".join(f"{name}={pct}%" for name, pct in traffic.items()) or "none"


def _describe(error: Exception) -> str:
    """One line: type, HTTP status when there is one, first line of the message."""
    status = getattr(error, "status_code", None)
    message = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}{f' (HTTP {status})' if status else ''}: {message}"
