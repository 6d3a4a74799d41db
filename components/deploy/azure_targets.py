"""Blue/green rollout of a registered model to an Azure ML online endpoint (managed or Kubernetes).

Target "azureml" is a managed online endpoint; "kubernetes" is a Kubernetes online endpoint on an AKS
(or Arc) cluster attached to the workspace as a compute, as in the classic AML workshop. Either way the
new version goes to whichever of "blue"/"green" is not live, at 0% traffic; it is smoke-tested through
the deployment header (canary classes with their names and version, malformed requests must get a
4xx), optionally shadowed with mirrored traffic, then given traffic in steps with a canary check after
each. Any failure rolls traffic back to the previous deployment and deletes the new one; on success the
previous deployment is kept at 0% so a rollback is one traffic update.

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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from mnist_mlops import contracts
from mnist_mlops.errors import ContractError, UserInputError
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.validation import check_canary_classes

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import (
        KubernetesOnlineDeployment,
        KubernetesOnlineEndpoint,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineDeployment,
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

    description = "Image classifier (mnist-mlops), blue/green deployments"
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
    classes: Sequence[str],
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
    endpoint's region; otherwise None. `expected_classes` are the class indices the model predicts for
    the canary images offline, `classes` its class names (a prediction is as expected when both its
    `class` and its `label` are). `infra_validation.canary_requests` counts the canary images
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
    _check_rollout_inputs(
        canary_request, expected_classes, classes, invalid_requests, mirror_percent, traffic_steps
    )
    canary_file, invalid_files = _write_requests(Path(workdir), canary_request, invalid_requests)
    run = _Rollout(
        ml_client.online_endpoints,
        ml_client.online_deployments,
        target=target,
        endpoint_name=endpoint_name,
        model_name=model_name,
        model_version=model_version,
        expected_classes=expected_classes,
        classes=tuple(classes),
        canary_file=canary_file,
        invalid_files=invalid_files,
    )
    endpoint = run.open_endpoint(wanted_endpoint)
    live = _live_deployment(endpoint, target, compute)
    return run.deploy_next_to(live, endpoint, new_deployment, mirror_percent, traffic_steps)


@dataclass
class _Rollout:
    """One rollout's fixed context (operation groups, model, requests) and its log of steps, so that
    each stage takes only what varies between them."""

    endpoints: OnlineEndpointOperations
    deployments: OnlineDeploymentOperations
    target: str
    endpoint_name: str
    model_name: str
    model_version: str
    expected_classes: list[int]
    classes: tuple[str, ...]
    canary_file: Path
    invalid_files: list[Path]
    steps: list[str] = field(default_factory=list)

    def open_endpoint(self, wanted: OnlineEndpoint) -> OnlineEndpoint:
        """The existing endpoint, else the wanted one, created without traffic."""
        try:
            endpoint = self.endpoints.get(self.endpoint_name)
            self.steps.append(f"endpoint {self.endpoint_name} exists")
        except ResourceNotFoundError:
            endpoint = self.endpoints.begin_create_or_update(wanted).result()
            self.steps.append(f"endpoint {self.endpoint_name} created ({self.target}, auth_mode=key)")
        return endpoint

    def deploy_next_to(
        self,
        live: str | None,
        endpoint: OnlineEndpoint,
        new_deployment: Callable[..., OnlineDeployment],
        mirror_percent: int,
        traffic_steps: tuple[int, ...],
    ) -> dict[str, Any]:
        """The new version in the colour that is not live: smoke-tested, then given traffic; on any
        failure the endpoint is left (or put back) as it served before. Returns rollout's result."""
        new = GREEN if live == BLUE else BLUE
        serving = {live: 100} if live else {}
        previous_version = self.serving_version(live)
        result = functools.partial(self.result, endpoint, new, previous_version)
        validation = self.create_and_smoke_test(new_deployment, new)
        if not validation["passed"]:
            self.discard(new)
            self.steps.append(f"traffic unchanged: {_format(serving)}")
            return result(serving, FAILED, validation)
        try:
            traffic = self.shift_traffic(endpoint, live, new, mirror_percent, traffic_steps)
        except (AzureError, _ml_exception(), ValueError, ContractError, _CanaryFailed) as error:
            self.roll_back(endpoint, serving, new, error)
            return result(serving, ROLLED_BACK if live else FAILED, validation)
        if live:
            self.steps.append(f"{live} kept at 0% traffic for an instant rollback")
        return result(traffic, DEPLOYED, validation)

    def serving_version(self, live: str | None) -> str | None:
        """The model version the live deployment serves (its environment says), if there is one."""
        if not live:
            self.steps.append("no live deployment: nothing to roll back to")
            return None
        deployment = self.deployments.get(name=live, endpoint_name=self.endpoint_name)
        version = (deployment.environment_variables or {}).get(MODEL_VERSION_VARIABLE)
        self.steps.append(f"live deployment {live} (100% of traffic) serves version {version or 'unknown'}")
        return version

    def create_and_smoke_test(
        self, new_deployment: Callable[..., OnlineDeployment], new: str
    ) -> dict[str, Any]:
        """Create the new deployment at 0% traffic and smoke-test it; a failed creation fails validation."""
        try:
            self.deployments.begin_create_or_update(new_deployment(deployment_name=new)).result()
        except (AzureError, _ml_exception()) as error:
            self.steps.append(f"deployment {new} could not be created: {_describe(error)}")
            return _validation(len(self.expected_classes), 0, [], len(self.invalid_files), 0)
        model_ref = f"azureml:{self.model_name}:{self.model_version}"
        self.steps.append(f"deployment {new} created with {model_ref} at 0% traffic")
        return self.smoke_test(new)

    def smoke_test(self, deployment: str) -> dict[str, Any]:
        """Canary and malformed requests sent to the new deployment only (header routing, 0% traffic)."""
        correct, latencies = self.canary_through_header(deployment)
        rejected = self.invalid_requests_rejected(deployment)
        validation = _validation(
            len(self.expected_classes), correct, latencies, len(self.invalid_files), rejected
        )
        p99 = "-" if validation["p99_ms"] is None else f"{validation['p99_ms']:.1f} ms"
        verdict = "passed" if validation["passed"] else "FAILED"
        self.steps.append(
            f"smoke test on {deployment}: canary {correct}/{len(self.expected_classes)} as expected, "
            f"p99 {p99}, invalid requests rejected {rejected}/{len(self.invalid_files)}: {verdict}"
        )
        return validation

    def canary_through_header(self, deployment: str) -> tuple[int, list[float]]:
        """The canary answered by `deployment` itself: images predicted as expected (none if another
        model answered), and the call's latency in ms if it was answered at all."""
        correct, latencies = 0, []
        try:
            started = time.perf_counter()
            response = _score(self.endpoints, self.endpoint_name, self.canary_file, deployment)
            latencies.append((time.perf_counter() - started) * 1000)
            served = (response["model_name"], response["model_version"])
            if served != (self.model_name, self.model_version):
                wanted = f"{self.model_name} v{self.model_version}"
                self.steps.append(f"canary answered by {served[0]} v{served[1]}, not {wanted}")
            else:
                correct = _count_correct(response, self.expected_classes, self.classes)
        except (AzureError, _ml_exception(), ValueError, ContractError) as error:
            self.steps.append(f"canary request failed: {_describe(error)}")
        return correct, latencies

    def invalid_requests_rejected(self, deployment: str) -> int:
        """How many of the malformed requests `deployment` refused with a 4xx, as it must."""
        rejected = 0
        for index, request_file in enumerate(self.invalid_files):
            try:
                self.endpoints.invoke(
                    endpoint_name=self.endpoint_name,
                    deployment_name=deployment,
                    request_file=str(request_file),
                )
                self.steps.append(f"invalid request {index} was accepted")
            except HttpResponseError as error:
                if error.status_code is not None and 400 <= error.status_code < 500:
                    rejected += 1
                else:
                    self.steps.append(f"invalid request {index}: HTTP {error.status_code} instead of a 4xx")
            except (AzureError, _ml_exception()) as error:
                self.steps.append(f"invalid request {index}: {_describe(error)} instead of a 4xx")
        return rejected

    def shift_traffic(
        self,
        endpoint: OnlineEndpoint,
        live: str | None,
        new: str,
        mirror_percent: int,
        traffic_steps: tuple[int, ...],
    ) -> dict[str, int]:
        """Mirror if asked, then move traffic to `new` step by step, the canary checked after each
        (raises _CanaryFailed on wrong answers); returns the final traffic."""
        if mirror_percent and live:
            self.mirror(endpoint, live, new, mirror_percent)
        elif mirror_percent:
            self.steps.append("mirroring skipped: there is no live traffic to mirror")
        plan = _traffic_plan(live, new, traffic_steps)
        for traffic in plan:
            endpoint.traffic = dict(traffic)
            self.endpoints.begin_create_or_update(endpoint).result()
            response = _score(self.endpoints, self.endpoint_name, self.canary_file, None)
            correct = _count_correct(response, self.expected_classes, self.classes)
            expected = len(self.expected_classes)
            if correct != expected:
                raise _CanaryFailed(f"{correct}/{expected} canary images as expected")
            self.steps.append(f"traffic {_format(traffic)}: canary {correct}/{expected} as expected")
        return dict(plan[-1])

    def mirror(self, endpoint: OnlineEndpoint, live: str, new: str, percent: int) -> None:
        """Shadow live traffic to the new deployment; its answers are discarded, so only the call is checked.

        Errors of the mirrored copies show in the deployment's metrics and logs, not here.
        """
        endpoint.traffic = {live: 100}
        endpoint.mirror_traffic = {new: percent}
        self.endpoints.begin_create_or_update(endpoint).result()
        _score(self.endpoints, endpoint.name, self.canary_file, None)
        endpoint.mirror_traffic = {}
        self.endpoints.begin_create_or_update(endpoint).result()
        self.steps.append(f"mirrored {percent}% of live traffic to {new}, then stopped mirroring")

    def roll_back(
        self, endpoint: OnlineEndpoint, serving: dict[str, int], new: str, error: Exception
    ) -> None:
        """Traffic back to what served before, mirroring off, then the new deployment deleted (only once
        it holds no traffic: a failing rollback raises before that)."""
        self.steps.append(f"rollout stopped: {_describe(error)}")
        endpoint.traffic = dict(serving)
        endpoint.mirror_traffic = {}
        self.endpoints.begin_create_or_update(endpoint).result()
        self.steps.append(f"rolled back: traffic {_format(serving)}")
        self.discard(new)

    def discard(self, name: str) -> None:
        """Delete the new deployment (it holds no traffic); already gone is fine."""
        try:
            self.deployments.begin_delete(name=name, endpoint_name=self.endpoint_name).result()
            self.steps.append(f"deployment {name} deleted")
        except ResourceNotFoundError:
            self.steps.append(f"deployment {name} was not created")

    def result(
        self,
        endpoint: OnlineEndpoint,
        new: str,
        previous_version: str | None,
        traffic: dict[str, int],
        outcome: str,
        validation: dict[str, Any],
    ) -> dict[str, Any]:
        """rollout's return value (see there)."""
        return {
            "endpoint": _scoring_uri(endpoint, self.target, self.endpoint_name),
            "deployment": new,
            "previous_version": previous_version,
            "infra_validation": validation,
            "traffic": traffic,
            "outcome": outcome,
            "steps": self.steps,
        }


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
    classes: Sequence[str],
    invalid_requests: list[dict],
    mirror_percent: int,
    traffic_steps: tuple[int, ...],
) -> None:
    """Refuse a rollout whose checks could not mean anything, before any Azure call."""
    contracts.validate(canary_request, "scoring_request", source="canary_request")
    images = canary_request.get("instances", canary_request.get("images"))
    limits, size = Limits(), len(json.dumps(canary_request))
    if len(images) > limits.max_batch or size > limits.max_body_bytes:
        raise UserInputError(
            f"canary_request: {len(images)} images in {size} bytes, over the scoring server's limits"
            f" ({limits.max_batch} images, {limits.max_body_bytes} bytes): send fewer canaries"
            " (mnist_mlops.serving.validation.canary_capacity)"
        )
    check_canary_classes(expected_classes, len(images), classes, "expected_classes")
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


def _write_requests(
    workdir: Path, canary_request: dict, invalid_requests: list[dict]
) -> tuple[Path, list[Path]]:
    """The canary and invalid request bodies as files in `workdir` (`invoke` takes its body from a file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    canary_file = _write_json(workdir / "canary_request.json", canary_request)
    invalid_files = [
        _write_json(workdir / f"invalid_request_{index}.json", request["body"])
        for index, request in enumerate(invalid_requests)
    ]
    return canary_file, invalid_files


def _write_json(path: Path, document: Any) -> Path:
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


def _count_correct(response: dict[str, Any], expected_classes: list[int], classes: tuple[str, ...]) -> int:
    """Predictions of the expected class index under the model's name for it."""
    predictions = response["predictions"]
    if len(predictions) != len(expected_classes):
        return 0
    return sum(
        item["class"] == expected and item.get("label") == classes[expected]
        for item, expected in zip(predictions, expected_classes, strict=True)
    )


def _traffic_plan(live: str | None, new: str, traffic_steps: tuple[int, ...]) -> list[dict[str, int]]:
    """Traffic after each step; without a live deployment the only possible split is all-new."""
    if live is None:
        return [{new: 100}]
    return [{live: 100 - pct, new: pct} for pct in traffic_steps]


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
