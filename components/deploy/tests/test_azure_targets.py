"""Azure ML targets, offline: entities against the SDK's own schemas, rollouts against a recording MLClient.

No workspace is contacted. `RecordingMLClient` stands in for `MLClient.online_endpoints` and
`.online_deployments`: it records every call, keeps endpoint/deployment/traffic state, applies the
service rules a rollout depends on (only 0-traffic deployments can be deleted, traffic sums to 0 or
100, mirroring at most 50% to a deployment without live traffic) and raises scoring errors through the
SDK's own response check, so a 400 arrives as the HttpResponseError the real `invoke` raises.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.ai.ml import load_online_deployment, load_online_endpoint
from azure.ai.ml._utils._endpoint_utils import validate_response, validate_scoring_script  # the SDK's checks
from azure.ai.ml.entities import (
    KubernetesOnlineDeployment,
    KubernetesOnlineEndpoint,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineDeployment,
    OnlineEndpoint,
)
from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from mnist_mlops import contracts
from mnist_mlops.components.deploy.azure_targets import (
    build_deployment,
    build_endpoint,
    rollout,
)
from mnist_mlops.dataset import MNIST_CLASSES
from mnist_mlops.environments import environment_dir
from mnist_mlops.errors import UserInputError

ENDPOINT = "mnist-ep"
MODEL = "mnist-mlops"
LOCATION = "westeurope"
SCORING_URI = f"https://{ENDPOINT}.{LOCATION}.inference.ml.azure.com/score"
IMAGE = [[0] * 28 for _ in range(28)]
CANARY = {"instances": [IMAGE, IMAGE, IMAGE]}
EXPECTED = [7, 2, 1]
INVALID = [
    {"name": "out_of_range", "body": {"instances": [[[300] * 28] * 28]}},
    {"name": "both_fields", "body": {"instances": [IMAGE], "images": ["iVBORw0KGgo="]}},
]
BAD_1, BAD_2 = (request["body"] for request in INVALID)


# --- the fake service ------------------------------------------------------------------------------


class StubHttpResponse:
    """Just enough of azure.core's HttpResponse for the SDK's `validate_response` and HttpResponseError."""

    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.reason = "OK" if status < 400 else "Error"
        self.content = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.content_type = "application/json"
        self.headers = {"Content-Type": self.content_type}

    def json(self) -> Any:
        return json.loads(self.content)

    def text(self, encoding: str | None = None) -> str:
        return self.content.decode()

    def body(self) -> bytes:
        return self.content


def http_error(status: int, message: str) -> HttpResponseError:
    return HttpResponseError(message=message, response=StubHttpResponse(status, {"message": message}))


class Poller:
    """What `begin_*` returns: `.result()` waits (here: returns or raises at once)."""

    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error:
            raise self.error
        return self.value


@dataclass
class Call:
    """A scoring request as the service sees it: routed deployment, its model version, body, traffic."""

    deployment: str
    version: str
    body: Any
    traffic: dict[str, int]
    header: bool


Responder = Callable[[Call], tuple[int, Any]]


def answer(
    call: Call, classes: list[int] = EXPECTED, model: str = MODEL, names: tuple[str, ...] = MNIST_CLASSES
) -> tuple[int, Any]:
    predictions = [
        {"class": c, "label": names[c], "probabilities": [1.0 if d == c else 0.0 for d in range(len(names))]}
        for c in classes
    ]
    return 200, {
        "schema_version": 1,
        "predictions": predictions,
        "model_name": model,
        "model_version": call.version,
    }


def honest(call: Call) -> tuple[int, Any]:
    """A healthy model: right classes for the canary, 400 with a JSON message for anything else."""
    return (
        answer(call) if call.body == CANARY else (400, {"message": "instances: pixel values must be 0..255"})
    )


class RecordingMLClient:
    """MLClient's online endpoint/deployment operation groups over in-memory state; `calls` is the log.

    An endpoint call without a deployment header is routed to the deployment with the largest traffic
    share (ties: the newest), so a test knows who answers; a mirrored deployment also gets a copy.
    """

    def __init__(self, responder: Responder = honest, *, report_scoring_uri: bool = True) -> None:
        self.calls: list[tuple] = []
        self.responder = responder
        self.report_scoring_uri = report_scoring_uri
        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.deployments: dict[str, OnlineDeployment] = {}
        self.mirrored: list[str] = []
        self.fail_create: Exception | None = None
        self.fail_traffic: list[tuple[dict[str, int], Exception]] = []  # traffic updates that fail
        self.online_endpoints = _Endpoints(self)
        self.online_deployments = _Deployments(self)

    def traffic(self) -> dict[str, int]:
        return dict(self.endpoints[ENDPOINT].traffic) if ENDPOINT in self.endpoints else {}


class _Endpoints:
    def __init__(self, fake: RecordingMLClient) -> None:
        self.fake = fake

    def get(self, name: str) -> OnlineEndpoint:
        self.fake.calls.append(("online_endpoints.get", name))
        if name not in self.fake.endpoints:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        endpoint = copy.deepcopy(self.fake.endpoints[name])
        for deployment in self.fake.deployments:  # as the SDK does: deployments without traffic show 0
            if not endpoint.traffic.get(deployment) and not endpoint.mirror_traffic.get(deployment):
                endpoint.traffic[deployment] = 0
        return endpoint

    def begin_create_or_update(self, endpoint: OnlineEndpoint) -> Poller:
        self.fake.calls.append(
            (
                "online_endpoints.begin_create_or_update",
                endpoint.name,
                dict(endpoint.traffic),
                dict(endpoint.mirror_traffic),
            )
        )
        endpoint._to_rest_online_endpoint(location=LOCATION)  # the SDK's own checks of the entity
        # The SDK drops 0% entries before sending (and on the entity it was given).
        endpoint.traffic = {k.lower(): v for k, v in endpoint.traffic.items() if int(v)}
        endpoint.mirror_traffic = {k.lower(): v for k, v in endpoint.mirror_traffic.items() if int(v)}
        for traffic, error in self.fake.fail_traffic:
            if endpoint.traffic == traffic:
                return Poller(error=error)
        unknown = (set(endpoint.traffic) | set(endpoint.mirror_traffic)) - set(self.fake.deployments)
        if unknown or sum(endpoint.traffic.values()) not in (0, 100):
            return Poller(error=http_error(400, f"invalid traffic {endpoint.traffic}"))
        if sum(endpoint.mirror_traffic.values()) > 50 or set(endpoint.mirror_traffic) & set(endpoint.traffic):
            return Poller(error=http_error(400, f"invalid mirror traffic {endpoint.mirror_traffic}"))
        stored = copy.deepcopy(endpoint)
        stored._scoring_uri = SCORING_URI if self.fake.report_scoring_uri else None  # set by the service
        stored.location = LOCATION
        self.fake.endpoints[endpoint.name] = stored
        return Poller(copy.deepcopy(stored))

    def invoke(self, endpoint_name: str, *, request_file: str, deployment_name: str | None = None) -> str:
        body = json.loads(Path(request_file).read_text())
        self.fake.calls.append(("online_endpoints.invoke", deployment_name, body))
        traffic = self.fake.traffic()
        if deployment_name:
            if deployment_name not in self.fake.deployments:
                raise ResourceNotFoundError(f"deployment {deployment_name} not found")
            target = deployment_name
        else:
            serving = [name for name in self.fake.deployments if traffic.get(name)]  # creation order
            if not serving:
                return _respond(424, {"message": "no deployment has traffic"})
            target = max(reversed(serving), key=lambda name: traffic[name])
            for mirror in self.fake.endpoints[endpoint_name].mirror_traffic:
                self.fake.mirrored.append(mirror)
                self.fake.responder(self._call(mirror, body, traffic, header=False))  # the answer is dropped
        return _respond(*self.fake.responder(self._call(target, body, traffic, header=bool(deployment_name))))

    def _call(self, deployment: str, body: Any, traffic: dict[str, int], *, header: bool) -> Call:
        version = self.fake.deployments[deployment].environment_variables["MNIST_MLOPS_MODEL_VERSION"]
        return Call(deployment, version, body, traffic, header)


def _respond(status: int, body: Any) -> str:
    """The real `invoke`'s last two lines: the SDK's response check, then the text."""
    response = StubHttpResponse(status, body)
    validate_response(response)
    return response.text()


class _Deployments:
    def __init__(self, fake: RecordingMLClient) -> None:
        self.fake = fake

    def get(self, name: str, endpoint_name: str) -> OnlineDeployment:
        self.fake.calls.append(("online_deployments.get", name))
        if name not in self.fake.deployments:
            raise ResourceNotFoundError(f"deployment {name} not found")
        return copy.deepcopy(self.fake.deployments[name])

    def begin_create_or_update(self, deployment: OnlineDeployment) -> Poller:
        self.fake.calls.append(
            ("online_deployments.begin_create_or_update", deployment.name, deployment.model)
        )
        if deployment.endpoint_name not in self.fake.endpoints:
            raise ResourceNotFoundError(f"endpoint {deployment.endpoint_name} not found")
        validate_scoring_script(deployment)  # what the SDK checks before uploading the code
        assert not self.fake.traffic().get(deployment.name), "a deployment that serves traffic was replaced"
        before = self.fake.traffic()
        self.fake.deployments[deployment.name] = copy.deepcopy(deployment)  # a failed one exists too
        assert self.fake.traffic() == before
        return (
            Poller(error=self.fake.fail_create)
            if self.fake.fail_create
            else Poller(copy.deepcopy(deployment))
        )

    def begin_delete(self, name: str, endpoint_name: str) -> Poller:
        self.fake.calls.append(("online_deployments.begin_delete", name))
        if name not in self.fake.deployments:
            raise ResourceNotFoundError(f"deployment {name} not found")
        endpoint = self.fake.endpoints[endpoint_name]
        if endpoint.traffic.get(name) or endpoint.mirror_traffic.get(name):
            return Poller(error=http_error(400, f"deployment {name} still has traffic"))
        del self.fake.deployments[name]
        return Poller()


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> dict[str, Any]:
    """code_dir with a placeholder score.py and the model environment, as rollout takes them."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text("def init():\n    pass\n\n\ndef run(request):\n    return request\n")
    return {
        "code_dir": code,
        "scoring_script": "score.py",
        "environment_dir": environment_dir("model"),
    }


def deploy(
    fake: RecordingMLClient, source: dict[str, Any], version: str, tmp_path: Path, **options: Any
) -> dict:
    """An MNIST model's rollout unless `options` say otherwise."""
    requests = {
        "canary_request": CANARY,
        "expected_classes": EXPECTED,
        "classes": MNIST_CLASSES,
        "invalid_requests": INVALID,
    }
    return rollout(
        fake,
        target=options.pop("target", "azureml"),
        endpoint_name=ENDPOINT,
        model_name=MODEL,
        model_version=version,
        workdir=tmp_path / f"work-{version}",
        **source,
        **(requests | options),
    )


def blue_live(source: dict[str, Any], tmp_path: Path, responder: Responder = honest) -> RecordingMLClient:
    """A fake where version 3 serves from blue at 100%, with the call log cleared."""
    fake = RecordingMLClient()
    assert deploy(fake, source, "3", tmp_path)["outcome"] == "deployed"
    fake.calls.clear()
    fake.responder = responder
    return fake


def traffic_update(traffic: dict[str, int], mirror: dict[str, int] | None = None) -> tuple:
    return ("online_endpoints.begin_create_or_update", ENDPOINT, traffic, mirror or {})


def invoke(deployment: str | None, body: Any = CANARY) -> tuple:
    return ("online_endpoints.invoke", deployment, body)


def smoke(deployment: str) -> list[tuple]:
    return [invoke(deployment), invoke(deployment, BAD_1), invoke(deployment, BAD_2)]


def start_next_to_blue(version: str) -> list[tuple]:
    return [
        ("online_endpoints.get", ENDPOINT),
        ("online_deployments.get", "blue"),
        ("online_deployments.begin_create_or_update", "green", f"azureml:{MODEL}:{version}"),
    ]


def on_canary(respond: Responder) -> Responder:
    """Answer the canary with `respond`, everything else as a healthy model does."""
    return lambda call: respond(call) if call.body == CANARY else honest(call)


# --- rollouts --------------------------------------------------------------------------------------


def test_first_deployment_creates_the_endpoint_then_blue(source: dict, tmp_path: Path) -> None:
    fake = RecordingMLClient()
    result = deploy(fake, source, "3", tmp_path)
    assert fake.calls == [
        ("online_endpoints.get", ENDPOINT),
        traffic_update({}),  # the endpoint is created without traffic
        ("online_deployments.begin_create_or_update", "blue", f"azureml:{MODEL}:3"),
        *smoke("blue"),
        traffic_update({"blue": 100}),  # nothing to split with: one step
        invoke(None),
    ]
    assert result["outcome"] == "deployed"
    assert result["endpoint"] == SCORING_URI
    assert (result["deployment"], result["previous_version"], result["traffic"]) == (
        "blue",
        None,
        {"blue": 100},
    )
    validation = result["infra_validation"]
    assert validation["p99_ms"] is not None and validation["p99_ms"] >= 0
    assert validation | {"p99_ms": None} == {
        "canary_requests": 3,
        "canary_correct": 3,
        "p99_ms": None,
        "invalid_requests": 2,
        "invalid_rejected": 2,
        "passed": True,
    }
    assert isinstance(fake.endpoints[ENDPOINT], ManagedOnlineEndpoint)
    assert fake.endpoints[ENDPOINT].auth_mode == "key"
    assert fake.traffic() == {"blue": 100}
    assert json.loads((tmp_path / "work-3" / "canary_request.json").read_text()) == CANARY
    assert any("endpoint mnist-ep created" in step for step in result["steps"])


def test_second_deployment_goes_to_green_and_shifts_traffic_in_steps(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    result = deploy(fake, source, "4", tmp_path)
    assert fake.calls == [
        *start_next_to_blue("4"),
        *smoke("green"),
        traffic_update({"blue": 90, "green": 10}),
        invoke(None),
        traffic_update({"blue": 50, "green": 50}),
        invoke(None),
        traffic_update({"blue": 0, "green": 100}),
        invoke(None),
    ]
    assert result["outcome"] == "deployed"
    assert (result["deployment"], result["previous_version"]) == ("green", "3")
    assert result["traffic"] == {"blue": 0, "green": 100}
    assert fake.traffic() == {"green": 100}
    assert set(fake.deployments) == {"blue", "green"}  # blue stays, at 0%, for an instant rollback
    assert fake.deployments["green"].environment_variables["MNIST_MLOPS_MODEL_VERSION"] == "4"
    assert result["steps"][-1] == "blue kept at 0% traffic for an instant rollback"


def test_third_deployment_replaces_the_idle_blue(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    deploy(fake, source, "4", tmp_path)
    fake.calls.clear()
    result = deploy(fake, source, "5", tmp_path)
    assert fake.calls[:3] == [
        ("online_endpoints.get", ENDPOINT),
        ("online_deployments.get", "green"),
        ("online_deployments.begin_create_or_update", "blue", f"azureml:{MODEL}:5"),
    ]
    assert (result["outcome"], result["deployment"], result["previous_version"]) == ("deployed", "blue", "4")
    assert result["traffic"] == {"green": 0, "blue": 100}


@pytest.mark.parametrize(
    ("green", "correct", "rejected"),
    [
        pytest.param(on_canary(lambda call: answer(call, classes=[0, 0, 0])), 0, 2, id="wrong-classes"),
        pytest.param(on_canary(lambda call: answer(call, classes=[7, 2])), 0, 2, id="too-few-predictions"),
        pytest.param(
            on_canary(lambda call: answer(call, names=tuple("abcdefghij"))), 0, 2, id="other-class-names"
        ),
        pytest.param(on_canary(lambda call: answer(call, model="other-model")), 0, 2, id="other-model"),
        pytest.param(lambda call: (500, {"message": "model failed to load"}), 0, 0, id="server-error"),
        pytest.param(lambda call: (503, "upstream connect error"), 0, 0, id="non-json-error"),
        pytest.param(answer, 3, 0, id="invalid-accepted"),
        pytest.param(lambda call: (200, {"predictions": []}), 0, 0, id="not-a-scoring-response"),
    ],
)
def test_failed_smoke_test_deletes_green_and_leaves_traffic_alone(
    source: dict, tmp_path: Path, green: Responder, correct: int, rejected: int
) -> None:
    fake = blue_live(
        source, tmp_path, lambda call: green(call) if call.deployment == "green" else honest(call)
    )
    result = deploy(fake, source, "4", tmp_path)
    assert fake.calls == [
        *start_next_to_blue("4"),
        *smoke("green"),
        ("online_deployments.begin_delete", "green"),
    ]
    assert result["outcome"] == "failed"
    assert result["traffic"] == {"blue": 100} == fake.traffic()
    assert set(fake.deployments) == {"blue"}
    validation = result["infra_validation"]
    assert (validation["canary_correct"], validation["invalid_rejected"], validation["passed"]) == (
        correct,
        rejected,
        False,
    )
    assert "FAILED" in next(step for step in result["steps"] if step.startswith("smoke test on green"))


def test_failed_first_deployment_leaves_an_empty_endpoint(source: dict, tmp_path: Path) -> None:
    fake = RecordingMLClient(lambda call: (500, {"message": "model failed to load"}))
    result = deploy(fake, source, "3", tmp_path)
    assert fake.calls[-1] == ("online_deployments.begin_delete", "blue")
    assert (result["outcome"], result["traffic"], result["previous_version"]) == ("failed", {}, None)
    assert result["infra_validation"]["p99_ms"] is None
    assert fake.deployments == {} and fake.traffic() == {}


def test_wrong_answers_mid_shift_roll_traffic_back_to_blue(source: dict, tmp_path: Path) -> None:
    def green_breaks_under_load(call: Call) -> tuple[int, Any]:
        if call.deployment == "green" and not call.header:
            return answer(call, classes=[0, 0, 0])
        return honest(call)

    fake = blue_live(source, tmp_path, green_breaks_under_load)
    result = deploy(fake, source, "4", tmp_path)
    assert fake.calls == [
        *start_next_to_blue("4"),
        *smoke("green"),
        traffic_update({"blue": 90, "green": 10}),
        invoke(None),  # blue answers
        traffic_update({"blue": 50, "green": 50}),
        invoke(None),  # green answers, wrongly
        traffic_update({"blue": 100}),
        ("online_deployments.begin_delete", "green"),
    ]
    assert result["outcome"] == "rolled_back"
    assert result["infra_validation"]["passed"] is True
    assert result["traffic"] == {"blue": 100} == fake.traffic()
    assert set(fake.deployments) == {"blue"}
    assert any("0/3 canary images as expected" in step for step in result["steps"])


def test_failed_traffic_update_rolls_back(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    fake.fail_traffic = [({"blue": 50, "green": 50}, http_error(409, "conflicting operation in progress"))]
    result = deploy(fake, source, "4", tmp_path)
    assert fake.calls[-3:] == [
        traffic_update({"blue": 50, "green": 50}),
        traffic_update({"blue": 100}),
        ("online_deployments.begin_delete", "green"),
    ]
    assert result["outcome"] == "rolled_back" and fake.traffic() == {"blue": 100}
    assert any("HttpResponseError (HTTP 409)" in step for step in result["steps"])


def test_a_failed_rollback_is_raised_not_reported(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    fake.fail_traffic = [
        ({"blue": 50, "green": 50}, http_error(409, "busy")),
        ({"blue": 100}, http_error(500, "down")),
    ]
    with pytest.raises(HttpResponseError, match="down"):
        deploy(fake, source, "4", tmp_path)
    assert fake.calls[-1] == traffic_update({"blue": 100})  # green is not deleted while it may serve
    assert fake.traffic() == {"blue": 90, "green": 10}


def test_failed_creation_is_cleaned_up(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    fake.fail_create = http_error(400, "image build failed")
    result = deploy(fake, source, "4", tmp_path)
    assert fake.calls == [*start_next_to_blue("4"), ("online_deployments.begin_delete", "green")]
    assert result["outcome"] == "failed" and fake.traffic() == {"blue": 100}
    assert result["infra_validation"] == {
        "canary_requests": 3,
        "canary_correct": 0,
        "p99_ms": None,
        "invalid_requests": 2,
        "invalid_rejected": 0,
        "passed": False,
    }


def test_mirroring_shadows_live_traffic_before_the_shift(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    result = deploy(fake, source, "4", tmp_path, mirror_percent=20, traffic_steps=(25, 100))
    assert fake.calls == [
        *start_next_to_blue("4"),
        *smoke("green"),
        traffic_update({"blue": 100}, {"green": 20}),
        invoke(None),  # blue answers, green gets a copy
        traffic_update({"blue": 100}, {}),
        traffic_update({"blue": 75, "green": 25}),
        invoke(None),
        traffic_update({"blue": 0, "green": 100}),
        invoke(None),
    ]
    assert fake.mirrored == ["green"]
    assert result["outcome"] == "deployed"
    assert fake.endpoints[ENDPOINT].mirror_traffic == {}


def test_mirroring_without_live_traffic_is_skipped(source: dict, tmp_path: Path) -> None:
    fake = RecordingMLClient()
    result = deploy(fake, source, "3", tmp_path, mirror_percent=10)
    assert result["outcome"] == "deployed" and fake.mirrored == []
    assert "mirroring skipped: there is no live traffic to mirror" in result["steps"]


def test_a_colour_model_of_named_classes_rolls_out(source: dict, tmp_path: Path) -> None:
    """Canaries of the model's own shape, answered with its class indices under its names."""
    fruit = ("apple", "bread", "cheese", "dates", "eggs")
    canary = {"instances": [[[[0, 0, 0]] * 32] * 32, [[[255, 255, 255]] * 32] * 32]}

    def fruit_model(call: Call) -> tuple[int, Any]:
        if call.body == canary:
            return answer(call, classes=[4, 1], names=fruit)
        return 400, {"message": "instances[0]: 32x32x3 pixel values must be 0..255"}

    fake = RecordingMLClient(fruit_model)
    result = deploy(
        fake,
        source,
        "3",
        tmp_path,
        canary_request=canary,
        expected_classes=[4, 1],
        classes=fruit,
        invalid_requests=[{"body": {"instances": [[[[300, 0, 0]] * 32] * 32]}}],
    )
    assert result["outcome"] == "deployed"
    validation = result["infra_validation"]
    assert (validation["canary_correct"], validation["invalid_rejected"]) == (2, 1)


def test_kubernetes_rollout_uses_kubernetes_entities(source: dict, tmp_path: Path) -> None:
    fake = RecordingMLClient()
    result = deploy(
        fake, source, "3", tmp_path, target="kubernetes", compute="aks-cpu", instance_type="cpu-small"
    )
    assert result["outcome"] == "deployed"
    assert isinstance(fake.endpoints[ENDPOINT], KubernetesOnlineEndpoint)
    assert fake.endpoints[ENDPOINT].compute == "aks-cpu"
    assert isinstance(fake.deployments["blue"], KubernetesOnlineDeployment)
    assert fake.deployments["blue"].instance_type == "cpu-small"
    with pytest.raises(UserInputError, match="not a managed online endpoint"):
        deploy(fake, source, "4", tmp_path)  # same endpoint name, other target
    with pytest.raises(UserInputError, match="runs on compute aks-cpu, not aks-gpu"):
        deploy(fake, source, "4", tmp_path, target="kubernetes", compute="aks-gpu", instance_type="cpu-small")


def test_an_endpoint_mid_rollout_is_refused_untouched(source: dict, tmp_path: Path) -> None:
    fake = blue_live(source, tmp_path)
    deploy(fake, source, "4", tmp_path)
    fake.endpoints[ENDPOINT].traffic = {"blue": 50, "green": 50}  # an interrupted earlier rollout
    fake.calls.clear()
    with pytest.raises(UserInputError, match="mid-rollout"):
        deploy(fake, source, "5", tmp_path)
    assert fake.calls == [("online_endpoints.get", ENDPOINT)]


def test_scoring_uri_falls_back_to_the_managed_pattern(source: dict, tmp_path: Path) -> None:
    fake = RecordingMLClient(report_scoring_uri=False)
    assert deploy(fake, source, "3", tmp_path)["endpoint"] == SCORING_URI


def test_result_fits_the_deployment_record(source: dict, tmp_path: Path) -> None:
    result = deploy(blue_live(source, tmp_path), source, "4", tmp_path)
    record = {
        "schema_version": 1,
        "action": "deploy",
        "target": "azureml",
        "model_uri": f"models:/{MODEL}/4",
        "model_name": MODEL,
        "model_version": "4",
        "deployed_at": "2025-01-01T00:00:00Z",
        **{
            key: result[key]
            for key in ("endpoint", "previous_version", "infra_validation", "traffic", "outcome")
        },
    }
    contracts.validate(record, "deployment_record", source="record")


# --- input checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["latest", "@champion", "champion", "0", "3.1", "v3", "../3", "models:/m/3", ""]
)
def test_build_deployment_refuses_anything_but_a_registry_version(source: dict, version: str) -> None:
    with pytest.raises(UserInputError, match="registry version"):
        build_deployment(
            "azureml",
            endpoint_name=ENDPOINT,
            deployment_name="blue",
            model_name=MODEL,
            model_version=version,
            instance_type="Standard_DS3_v2",
            instance_count=1,
            **source,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_name": "models:/mnist"}, "model name"),
        ({"scoring_script": "missing.py"}, "scoring script"),
        ({"scoring_script": "../score.py"}, "scoring script"),
        ({"environment_dir": Path("/nonexistent")}, "no Dockerfile"),
        ({"instance_count": 0}, "instance_count"),
        ({"instance_type": " "}, "instance_type"),
    ],
)
def test_build_deployment_refuses_bad_inputs(source: dict, change: dict, message: str) -> None:
    arguments = {
        "model_name": MODEL,
        "instance_type": "Standard_DS3_v2",
        "instance_count": 1,
        **source,
    } | change
    with pytest.raises(UserInputError, match=message):
        build_deployment(
            "azureml", endpoint_name=ENDPOINT, deployment_name="blue", model_version="3", **arguments
        )


def test_build_endpoint_checks_target_and_compute() -> None:
    with pytest.raises(UserInputError, match="needs compute"):
        build_endpoint("kubernetes", ENDPOINT, compute=None)
    with pytest.raises(UserInputError, match="kubernetes only"):
        build_endpoint("azureml", ENDPOINT, compute="aks-cpu")
    with pytest.raises(UserInputError, match="target 'local'"):
        build_endpoint("local", ENDPOINT, compute=None)


@pytest.mark.parametrize(
    "name", ["ab", "mnist-ep", "Mnist2", "1mnist", "mnist-", "mnist_ep", "m" * 32, "m" * 33]
)
def test_endpoint_names_follow_the_sdk_rule(name: str) -> None:
    try:
        validate_endpoint_or_deployment_name(name)
        valid = True
    except ValidationException:
        valid = False
    if valid:
        assert build_endpoint("azureml", name, compute=None).name == name.lower()  # the SDK lowercases
    else:
        with pytest.raises(UserInputError, match="endpoint name"):
            build_endpoint("azureml", name, compute=None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "kubernetes"}, "needs compute"),
        ({"model_version": "latest"}, "registry version"),
        ({"expected_classes": [7, 2]}, "expected_classes"),
        ({"expected_classes": [7, 2, 10]}, "expected_classes"),
        ({"expected_classes": [7, 2, "1"]}, "expected_classes: one integer class index per canary image"),
        (
            {"classes": ("apple", "bread", "cheese")},
            r"expected_classes: class indices 7 expected; the model answers 3 classes, indices 0 to 2 "
            r"\(apple, bread, cheese\)",
        ),
        (
            {"canary_request": {"instances": [[[[255] * 3] * 64] * 64] * 61}, "expected_classes": [0] * 61},
            r"canary_request: 61 images in 42\d{5} bytes, over the scoring server's limits",
        ),
        ({"canary_request": {"pixels": []}}, "scoring_request"),
        ({"invalid_requests": [{"payload": {}}]}, "invalid_requests"),
        ({"mirror_percent": 60}, "mirror_percent"),
        ({"traffic_steps": (50, 10, 100)}, "traffic_steps"),
        ({"traffic_steps": (10, 50)}, "traffic_steps"),
        ({"traffic_steps": ()}, "traffic_steps"),
    ],
)
def test_rollout_refuses_bad_inputs_before_any_call(
    source: dict, tmp_path: Path, options: dict, message: str
) -> None:
    fake = RecordingMLClient()
    arguments = {
        "target": "azureml",
        "endpoint_name": ENDPOINT,
        "model_name": MODEL,
        "model_version": "3",
        "canary_request": CANARY,
        "expected_classes": EXPECTED,
        "classes": MNIST_CLASSES,
        "invalid_requests": INVALID,
        "workdir": tmp_path / "work",
        **source,
    } | options
    with pytest.raises(UserInputError, match=message):
        rollout(fake, **arguments)
    assert fake.calls == []


# --- entities against the SDK's YAML schemas -------------------------------------------------------


def endpoint_round_trip(endpoint: OnlineEndpoint, path: Path) -> tuple[OnlineEndpoint, dict]:
    # KubernetesOnlineEndpoint.dump(path) ignores the path in SDK 1.35: write the schema dump ourselves.
    path.write_text(yaml.safe_dump(json.loads(json.dumps(endpoint._to_dict()))))
    return load_online_endpoint(path), yaml.safe_load(path.read_text())


def deployment_round_trip(deployment: OnlineDeployment, path: Path) -> tuple[OnlineDeployment, dict]:
    deployment.dump(path)
    return load_online_deployment(path), yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    ("target", "compute", "endpoint_class"),
    [("azureml", None, ManagedOnlineEndpoint), ("kubernetes", "aks-cpu", KubernetesOnlineEndpoint)],
)
def test_endpoint_round_trips_through_the_sdk_schema(
    tmp_path: Path, target: str, compute: str | None, endpoint_class: type
) -> None:
    loaded, dumped = endpoint_round_trip(
        build_endpoint(target, ENDPOINT, compute=compute), tmp_path / "e.yaml"
    )
    assert type(loaded) is endpoint_class
    assert (loaded.name, loaded.auth_mode, dumped["auth_mode"]) == (ENDPOINT, "key", "key")
    assert getattr(loaded, "compute", None) == compute
    assert dumped.get("compute") == (compute and f"azureml:{compute}")  # the YAML form of a workspace compute


@pytest.mark.parametrize(
    ("target", "instance_type", "deployment_class"),
    [
        ("azureml", "Standard_DS3_v2", ManagedOnlineDeployment),
        ("kubernetes", "defaultinstancetype", KubernetesOnlineDeployment),
    ],
)
def test_deployment_round_trips_through_the_sdk_schema(
    source: dict, tmp_path: Path, target: str, instance_type: str, deployment_class: type
) -> None:
    deployment = build_deployment(
        target,
        endpoint_name=ENDPOINT,
        deployment_name="green",
        model_name=MODEL,
        model_version="4",
        instance_type=instance_type,
        instance_count=2,
        **source,
    )
    validate_scoring_script(deployment)
    loaded, dumped = deployment_round_trip(deployment, tmp_path / "d.yaml")
    assert type(loaded) is deployment_class
    assert dumped["type"] == ("kubernetes" if target == "kubernetes" else "managed")
    assert dumped["model"] == f"azureml:{MODEL}:4"  # a registry reference, never a local path
    assert loaded.model == f"{MODEL}:4"  # the SDK keeps name:version once loaded
    assert (loaded.name, loaded.endpoint_name) == ("green", ENDPOINT)
    assert (loaded.instance_type, loaded.instance_count) == (instance_type, 2)
    assert Path(loaded.code_configuration.code) == source["code_dir"].resolve()
    assert loaded.code_configuration.scoring_script == "score.py"
    assert Path(loaded.environment.build.path) == source["environment_dir"].resolve()
    assert loaded.environment_variables == {"MNIST_MLOPS_MODEL_NAME": MODEL, "MNIST_MLOPS_MODEL_VERSION": "4"}
    assert loaded.request_settings.request_timeout_ms == 5000
    assert loaded.request_settings.max_concurrent_requests_per_instance == 1
    for probe in (loaded.liveness_probe, loaded.readiness_probe):
        assert probe.period > 0 and probe.timeout > 0 and probe.failure_threshold >= 1
    assert loaded.liveness_probe.success_threshold == 1  # the service's only allowed value
