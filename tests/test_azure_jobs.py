"""Publishing and submitting to Azure ML, offline: the SDK's own entities against a recording client.

`RecordingMLClient` stands in for `MLClient.components` and `.jobs`: it records every call, runs the
SDK's local validation of a component before "creating" it, keeps published versions as they come
back through the service's REST model (an unknown name raises the ResourceNotFoundError the service
answers with) and keeps a submitted job's status. Nothing here reaches Azure.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.ai.ml import Input, load_component
from azure.ai.ml.constants import ListViewType
from azure.ai.ml.entities import CommandComponent, Component, JobService, ParallelComponent, PipelineJob
from azure.ai.ml.exceptions import JobException
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from mnist_mlops import azure_jobs
from mnist_mlops.azure_jobs import (
    HASH_TAG,
    content_hash,
    ml_client,
    next_version,
    publish,
    spec_files,
    submit,
)
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.aml import training_pipeline_function
from mnist_mlops.ports import component_dir, component_names, load_spec
from mnist_mlops.snapshot import code_root, snapshot_files

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RAW_DATA = "azureml://datastores/workspaceblobstore/paths/mnist/"
STUDIO = "https://ml.azure.com/runs/{name}?wsid=/subscriptions/x/resourcegroups/rg/workspaces/ws"


# --- the fake service ------------------------------------------------------------------------------


@dataclass
class Created:
    """A component as create_or_update received it, with the files it would upload at that moment."""

    entity: CommandComponent
    code_files: list[str]
    environment_files: list[str]


@dataclass
class RecordingComponents:
    calls: list[tuple[Any, ...]]
    versions: dict[str, dict[str, CommandComponent]] = field(default_factory=dict)
    created: list[Created] = field(default_factory=list)

    def list(self, name: str | None = None, *, list_view_type: ListViewType = ListViewType.ACTIVE_ONLY):
        self.calls.append(("components.list", name, list_view_type))
        if name not in self.versions:
            raise ResourceNotFoundError(f"(UserError) Component container {name} not found")
        return iter(list(self.versions[name].values()))

    def create_or_update(self, component: CommandComponent, **kwargs: Any) -> Component:
        self.calls.append(("components.create_or_update", component.name, component.version))
        component._validate(raise_error=True)  # what the SDK checks locally before uploading
        code = Path(component.base_path) / component.code
        self.created.append(
            Created(
                component,
                sorted(snapshot_files(code.resolve())),  # what the SDK would upload as the code
                sorted(
                    p.name for p in (Path(component.base_path) / component.environment.build.path).iterdir()
                ),
            )
        )
        return self._store(component)

    def _store(self, component: CommandComponent) -> Component:
        """Keep (and return) what the service would: the entity as it survives its REST form."""
        stored = Component._from_rest_object(component._to_rest_object())
        self.versions.setdefault(stored.name, {})[stored.version] = stored
        return stored

    def seed(self, stage: str, version: str, digest: str) -> None:
        """A version published earlier (by hand, or from other content)."""
        entity = load_component(component_dir(stage) / "spec.yaml")
        entity.version = version
        entity.tags = {**entity.tags, HASH_TAG: digest}
        self._store(entity)


@dataclass
class RecordingJobs:
    calls: list[tuple[Any, ...]]
    final_status: str = "Completed"
    failure: Exception | None = None
    submitted: list[PipelineJob] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)

    def _job(self, name: str) -> PipelineJob:
        studio = JobService(endpoint=STUDIO.format(name=name))
        return PipelineJob(name=name, status=self.status[name], services={"Studio": studio})

    def create_or_update(self, job: PipelineJob, *, experiment_name: str | None = None) -> PipelineJob:
        self.calls.append(("jobs.create_or_update", experiment_name))
        self.submitted.append(job)
        name = f"job-{len(self.submitted)}"
        self.status[name] = "NotStarted"
        return self._job(name)

    def stream(self, name: str) -> None:
        self.calls.append(("jobs.stream", name))
        if self.failure is not None:
            self.status[name] = "Failed"
            raise self.failure
        self.status[name] = self.final_status

    def get(self, name: str) -> PipelineJob:
        self.calls.append(("jobs.get", name))
        return self._job(name)


class RecordingMLClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.components = RecordingComponents(self.calls)
        self.jobs = RecordingJobs(self.calls)


@pytest.fixture
def client() -> RecordingMLClient:
    return RecordingMLClient()


# --- publish ---------------------------------------------------------------------------------------


def test_first_publish_creates_every_component_at_its_spec_version_then_nothing_changes(client):
    results = publish(client)

    stages = component_names()
    assert len(stages) == len(set(stages)) >= 6
    specs = [(stage, yaml.safe_load(path.read_text())) for stage in stages for path in spec_files(stage)]
    names = {spec["name"] for _, spec in specs}
    assert {"mnist_mlops_batch_score_parallel", "mnist_mlops_batch_score_merge"} <= names
    expected_calls = []
    for _, spec in specs:
        expected_calls += [
            ("components.list", spec["name"], ListViewType.ALL),
            ("components.create_or_update", spec["name"], spec["version"]),
        ]
    assert client.calls == expected_calls
    for (stage, spec), created, result in zip(specs, client.components.created, results, strict=True):
        digest = content_hash(stage)
        parallel = spec["type"] == "parallel"
        assert type(created.entity) is (ParallelComponent if parallel else CommandComponent)
        assert (created.entity.name, created.entity.version) == (spec["name"], spec["version"])
        assert created.entity.tags == {**spec["tags"], HASH_TAG: digest}
        if parallel:
            assert created.entity.task.entry_script == spec["task"]["entry_script"]
        else:
            assert created.entity.command == spec["command"]
        assert created.environment_files == ["Dockerfile", "environment.yaml", "requirements.txt"]
        assert f"components/{stage}/component.py" in created.code_files
        assert "mnist_mlops/serving/score.py" in created.code_files  # the package travels with the code
        assert not [f for f in created.code_files if "tests/" in f or "__pycache__" in f]
        assert result == {
            "name": spec["name"],
            "version": spec["version"],
            "content_hash": digest,
            "action": "published",
            "previous_version": None,
        }

    client.calls.clear()
    again = publish(client)
    assert client.calls == [("components.list", spec["name"], ListViewType.ALL) for _, spec in specs]
    assert [(r["action"], r["version"], r["previous_version"]) for r in again] == [
        ("unchanged", spec["version"], spec["version"]) for _, spec in specs
    ]


def test_changed_content_is_published_as_the_next_patch_of_the_latest(client, monkeypatch):
    (first,) = publish(client, components=["train"])
    assert (first["action"], first["version"]) == ("published", "0.1.0")

    monkeypatch.setattr(azure_jobs, "content_hash", lambda stage: "f" * 64)
    client.calls.clear()
    (changed,) = publish(client, components=["train"])
    assert client.calls == [
        ("components.list", "mnist_mlops_train", ListViewType.ALL),
        ("components.create_or_update", "mnist_mlops_train", "0.1.1"),
    ]
    assert changed == {
        "name": "mnist_mlops_train",
        "version": "0.1.1",
        "content_hash": "f" * 64,
        "action": "published",
        "previous_version": "0.1.0",
    }
    assert client.components.created[-1].entity.tags[HASH_TAG] == "f" * 64


def test_the_bump_starts_from_the_highest_version_not_the_spec(client):
    for version in ("0.1.0", "0.1.10", "0.1.9"):
        client.components.seed("evaluate", version, "old")
    (result,) = publish(client, components=["evaluate"])
    assert (result["version"], result["previous_version"]) == ("0.1.11", "0.1.10")


def test_the_latest_version_with_the_same_hash_is_unchanged_even_if_older_ones_differ(client):
    client.components.seed("ingest", "0.1.0", "old")
    client.components.seed("ingest", "0.1.1", content_hash("ingest"))
    (result,) = publish(client, components=["ingest"])
    assert (result["action"], result["version"]) == ("unchanged", "0.1.1")
    assert not client.components.created


def test_a_spec_version_above_every_published_one_is_used_as_is(client):
    client.components.seed("preprocess", "0.0.9", "old")
    (result,) = publish(client, components=["preprocess"])
    assert (result["version"], result["previous_version"]) == (load_spec("preprocess")["version"], "0.0.9")


def test_odd_published_versions(client):
    client.components.seed("register", "1", "old")
    client.components.seed("register", "nightly", content_hash("register"))  # unordered: never "latest"
    (result,) = publish(client, components=["register"])
    assert (result["version"], result["previous_version"]) == ("1.0.1", "1")


def test_dry_run_reports_what_would_be_published_and_creates_nothing(client):
    client.components.seed("deploy", "0.1.0", "old")
    (result,) = publish(client, components=["deploy"], dry_run=True)
    assert (result["action"], result["version"]) == ("would publish", "0.1.1")
    assert client.calls == [("components.list", "mnist_mlops_deploy", ListViewType.ALL)]


def test_an_unknown_component_is_a_user_error(client):
    with pytest.raises(UserInputError, match="no component 'trian'"):
        publish(client, components=["trian"])
    assert client.calls == []


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ([], "0.1.0"),
        (["0.0.3"], "0.1.0"),
        (["0.1.0"], "0.1.1"),
        (["0.1.2", "0.1.10", "0.1.9"], "0.1.11"),
        (["1"], "1.0.1"),
        (["2.1"], "2.1.1"),
        (["latest-build", "v7"], "0.1.0"),
    ],
)
def test_next_version(published, expected):
    assert next_version("0.1.0", published) == expected


def test_a_spec_version_that_is_not_semver_is_a_user_error():
    with pytest.raises(UserInputError, match="'v1' is not semver"):
        next_version("v1", [])


# --- content_hash ----------------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of what content_hash reads, in another place (as on another machine)."""
    root = tmp_path / "elsewhere"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("components", "mnist_mlops", "schemas"):
        shutil.copytree(code_root() / folder, root / folder, ignore=ignore)
    return root


def test_content_hash_is_stable_and_independent_of_the_location(checkout):
    digest = content_hash("train", checkout)
    assert digest == content_hash("train", checkout) == content_hash("train")
    assert len({content_hash(stage, checkout) for stage in component_names()}) == len(component_names())


@pytest.mark.parametrize(
    "changed",
    [
        "components/train/executor.py",
        "components/train/model.py",
        "components/train/spec.yaml",
        "components/environments/model/requirements.txt",
        "components/environments/model/Dockerfile",
        "components/__init__.py",
        "mnist_mlops/ports.py",
        "mnist_mlops/serving/scorer.py",
        "schemas/training_summary.schema.json",
    ],
)
def test_content_hash_changes_with_what_the_component_runs(checkout, changed):
    before = content_hash("train", checkout)
    with (checkout / changed).open("a") as handle:
        handle.write("\n# changed\n")
    assert content_hash("train", checkout) != before


@pytest.mark.parametrize(
    "touched",
    [
        "components/train/tests/test_new.py",
        "components/train/__pycache__/executor.cpython-311.pyc",
        "mnist_mlops/__pycache__/ports.cpython-311.pyc",
        "components/train/README.md",
        "components/ingest/executor.py",
    ],
)
def test_content_hash_ignores_tests_caches_docs_and_other_components(checkout, touched):
    before = content_hash("train", checkout)
    path = checkout / touched
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write("\n# changed\n")
    assert content_hash("train", checkout) == before


def test_content_hash_of_an_unknown_component_is_a_user_error(checkout):
    with pytest.raises(UserInputError, match="no component 'nope'"):
        content_hash("nope", checkout)


# --- submit ----------------------------------------------------------------------------------------


def pipeline(**inputs: Any) -> PipelineJob:
    job = training_pipeline_function()(**inputs)
    job.settings.default_compute = "cpu-cluster"
    return job


def test_submit_validates_submits_streams_and_reports_the_final_status(client):
    job = pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA), epochs=3)
    result = submit(client, job, experiment_name="mnist-mlops")
    assert client.calls == [
        ("jobs.create_or_update", "mnist-mlops"),
        ("jobs.stream", "job-1"),
        ("jobs.get", "job-1"),
    ]
    assert client.jobs.submitted == [job]
    assert result == {"name": "job-1", "status": "Completed", "studio_url": STUDIO.format(name="job-1")}


def test_submit_without_streaming_reports_the_status_the_service_returned(client):
    result = submit(
        client, pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA)), experiment_name="x", stream=False
    )
    assert client.calls == [("jobs.create_or_update", "x")]
    assert result["status"] == "NotStarted"


def test_a_failed_run_is_raised_not_reported_as_success(client):
    client.jobs.failure = JobException(message="Exception : step train failed", no_personal_data_message="x")
    with pytest.raises(JobException, match="step train failed"):
        submit(client, pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA)), experiment_name="x")
    assert client.jobs.status == {"job-1": "Failed"}


@pytest.mark.parametrize(
    ("make_job", "message"),
    [
        (
            lambda: training_pipeline_function()(raw_data=Input(type="uri_folder", path=RAW_DATA)),
            "jobs.train.compute: Compute not set",
        ),
        (lambda: pipeline(), "pipeline input raw_data is required"),
        (
            lambda: pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA), epochs=1000),
            "jobs.train: mnist_mlops_train: parameter epochs=1000: above the maximum 200",
        ),
        (
            lambda: pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA), seed=-1),
            "jobs.preprocess: mnist_mlops_preprocess: parameter seed=-1: below the minimum 0",
        ),
    ],
    ids=["no-compute", "no-raw-data", "epochs-above-max", "seed-below-min"],
)
def test_an_invalid_pipeline_is_a_user_error_and_nothing_is_sent(client, make_job, message):
    with pytest.raises(UserInputError, match="the pipeline job is invalid") as raised:
        submit(client, make_job(), experiment_name="x")
    assert message in str(raised.value)
    assert client.calls == []


def test_a_missing_raw_data_is_caught_after_the_sdk_inferred_it_optional():
    """The SDK marks a pipeline input optional in place (on the shared annotation) once it has validated
    any pipeline whose use of it is only optional ports; a later job without it must still be refused."""
    assert pipeline(raw_data=Input(type="uri_folder", path=RAW_DATA))._validate().passed
    assert azure_jobs.validation_problems(pipeline()) == ["pipeline input raw_data is required"]


# --- ml_client -------------------------------------------------------------------------------------


def write_config(folder: Path, **values: Any) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(values))
    return path


def test_ml_client_from_a_config_file(tmp_path):
    config = write_config(tmp_path, subscription_id=SUBSCRIPTION, resource_group="rg", workspace_name="ws")
    made = ml_client(config)
    assert (made.subscription_id, made.resource_group_name, made.workspace_name) == (SUBSCRIPTION, "rg", "ws")

    other = ml_client(config, workspace="other-ws")
    assert (other.resource_group_name, other.workspace_name) == ("rg", "other-ws")


def test_ml_client_from_explicit_values():
    made = ml_client(None, SUBSCRIPTION, "rg", "ws")
    assert (made.subscription_id, made.resource_group_name, made.workspace_name) == (SUBSCRIPTION, "rg", "ws")


def test_ml_client_for_a_registry_is_built_with_registry_name(tmp_path, monkeypatch):
    made: list[dict[str, Any]] = []
    monkeypatch.setattr("azure.ai.ml.MLClient", lambda **kwargs: made.append(kwargs) or "client")
    config = write_config(tmp_path, subscription_id=SUBSCRIPTION, resource_group="rg", workspace_name="ws")
    assert ml_client(config, registry_name="mnist-registry") == "client"
    (kwargs,) = made
    assert {key: kwargs[key] for key in kwargs if key != "credential"} == {
        "subscription_id": SUBSCRIPTION,
        "resource_group_name": "rg",
        "registry_name": "mnist-registry",
    }


def test_a_registry_sign_in_failure_is_one_clear_line(monkeypatch):
    def refuse(**kwargs: Any) -> None:
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token.\nAttempted: ...")

    monkeypatch.setattr("azure.ai.ml.MLClient", refuse)
    with pytest.raises(UserInputError, match=r"'reg': DefaultAzureCredential failed to retrieve a token\.$"):
        ml_client(None, SUBSCRIPTION, "rg", registry_name="reg")


@pytest.mark.parametrize(
    ("content", "arguments", "message"),
    [
        (None, {}, "config.json: Azure ML config file not found"),
        ("{not json", {}, "config.json: not valid JSON"),
        ("[1, 2]", {}, "expected a JSON object"),
        (json.dumps({"subscription_id": SUBSCRIPTION}), {}, "resource_group, workspace_name not given"),
        (
            json.dumps({"subscription_id": SUBSCRIPTION, "resource_group": "rg"}),
            {"workspace": " "},
            "workspace_name",
        ),
        (
            json.dumps({"subscription_id": "my-sub", "resource_group": "rg", "workspace_name": "ws"}),
            {},
            "subscription_id 'my-sub' is not a GUID",
        ),
    ],
)
def test_ml_client_rejects_a_missing_or_incomplete_config(tmp_path, content, arguments, message):
    config = tmp_path / "config.json"
    if content is not None:
        config.write_text(content)
    with pytest.raises(UserInputError, match=message):
        ml_client(config, **arguments)


def test_ml_client_without_any_workspace_names_what_is_missing():
    with pytest.raises(UserInputError, match="subscription_id, resource_group, workspace_name not given"):
        ml_client(None)
