"""`mnist-mlops lineage REF`: a registry reference, a run folder or a request id, traced to the run, its
nodes, the dataset, code, environment, blessing and deployments; unknown REFs, run records of another
version and a registry that cannot be reached are clear errors.

The fast tests register a version the way register tags it (its own tag writer) in a real SQLite
registry, beside a run folder whose data report comes from a real ingest; the slow one traces a real
`mnist-mlops run` and a request answered by the real scoring server.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mnist_mlops import contracts, references
from mnist_mlops.cli import main
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.register.executor import _lineage_tags
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.deployments import append_history, move_production, request_log_dir
from mnist_mlops.hashing import sha256_file
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.registry import READY_TAG, client, experiment_id
from mnist_mlops.serving.lineage import trace
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.request_log import RequestLog
from mnist_mlops.serving.scorer import LoadedModel, Scorer
from mnist_mlops.serving.server import free_port
from tests.datasets import small_splits, write_png_tree
from tests.records import local_deployment
from tests.run_folders import first_run_blessing

MODEL = "mnist-mlops"
RUN_ID = "20261207-010203-abc123"
LATER_RUN_ID = "20261207-020304-def456"
CODE = "0123456789abcdef0123456789abcdef01234567"
ENVIRONMENT = "e" * 64
REASONS = ["accuracy 0.93 >= 0.5", "no champion in production: max_regression skipped"]


@pytest.fixture
def registry(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working folder
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def data_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data report written by a real ingest of a small dataset."""
    root = tmp_path_factory.mktemp("ingested")
    run_ingest(str(write_png_tree(root / "src", small_splits())), root / "dataset", root / "report.json")
    return root / "report.json"


def lineage(report: Path, run_id: str) -> dict:
    """register's lineage of a model trained on the dataset `report` describes, in run `run_id`."""
    dataset_version = json.loads(report.read_text())["dataset_version"]
    return {
        "dataset_version": dataset_version,
        "data_report_sha256": sha256_file(report),
        "code_version": CODE,
        "component_versions": {"ingest": "0.1.0", "train": "0.1.0"},
        "environment_hash": ENVIRONMENT,
        "pipeline_run_id": run_id,
        "interface": {"image_shape": list(MNIST_IMAGE_SHAPE), "classes": list(MNIST_CLASSES)},
        "metrics": {"accuracy": 0.93, "p99_ms": 2.5, "val_accuracy": 0.91},
        "blessed": True,
        "data_shift": {
            "decision": "no_reference",
            "reference_model_version": None,
            "reference_dataset_version": None,
        },
    }


def register(registry: str, report: Path, run_id: str) -> str:
    """A version tagged as register tags it, its reference bundle holding `report`; returns the version."""
    mlflow.set_tracking_uri(registry)
    registry_client = client(registry)
    if not registry_client.search_registered_models(f"name='{MODEL}'"):
        registry_client.create_registered_model(MODEL)
    bundle = Path(registry.removeprefix("sqlite:///")).parent / "bundle"
    bundle.mkdir(exist_ok=True)
    shutil.copyfile(report, bundle / references.DATA_REPORT)
    with mlflow.start_run(experiment_id=experiment_id(registry, "lineage")) as run:
        mlflow.log_artifact(str(bundle / references.DATA_REPORT), artifact_path=references.ARTIFACT_PATH)
    tags = _lineage_tags(lineage(report, run_id)) | {
        references.TAG: f"runs:/{run.info.run_id}/{references.ARTIFACT_PATH}",
        READY_TAG: "ready",
    }
    version = registry_client.create_model_version(
        MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
    )
    return str(version.version)


def write_run(runs: Path, run_id: str, report: Path, registry: str, version: str | None) -> Path:
    """A run folder as `mnist-mlops run` leaves it: run.json naming outputs relative to where it was
    started, ingest's data report, evaluate's blessing and register's record (registered as `version`)."""
    folder = runs / run_id
    (folder / "ingest").mkdir(parents=True)
    shutil.copyfile(report, folder / "ingest" / "data_report.json")
    dataset_version = json.loads(report.read_text())["dataset_version"]
    reasons = REASONS if version else ["accuracy 0.12 < 0.5"]
    blessing = first_run_blessing(run_id, dataset_version, blessed=version is not None, reasons=reasons)
    registration = {
        "schema_version": 1,
        "registered": version is not None,
        "model_name": MODEL,
        "version": version,
        "aliases": ["challenger"] if version else [],
        "registry_uri": registry,
        "reasons": [f"registered {MODEL} version {version}" if version else "not registered: not blessed"],
        "lineage": lineage(report, run_id) | {"blessed": version is not None},
    }
    files = {"evaluate": ("blessing", blessing), "register": ("registration_record", registration)}
    for node, (port, document) in files.items():
        (folder / node).mkdir()
        contracts.write_json(folder / node / f"{port}.json", document, port)

    def node(name: str, status: str, outputs: tuple[str, ...] = (), **extra) -> dict:
        return {
            "name": name,
            "component": f"mnist_mlops_{name}",
            "component_version": "0.1.0",
            "status": status,
            "cache_key": "c" * 64,
            "seconds": 0.0 if status == "cached" else 1.5,
            "inputs": {},
            "parameters": {},
            "outputs": {
                port: {"path": f"runs/{run_id}/{name}/{port}.json", "sha256": "d" * 64} for port in outputs
            },
            "log": f"runs/{run_id}/{name}/log.txt",
            **extra,
        }

    record = {
        "schema_version": 1,
        "run_id": run_id,
        "pipeline": "mnist_mlops_training",
        "started_at": "2026-12-07T01:02:03Z",
        "finished_at": "2026-12-07T01:05:00Z",
        "status": "succeeded",
        "nodes": [
            node("ingest", "done", ("data_report",)),
            node("preprocess", "cached"),
            node("evaluate", "cached", ("blessing",), reused_because="its champion is the challenger itself"),
            node("register", "done", ("registration_record",)),
        ],
        "lineage": {"dataset_version": dataset_version, "model_version": version, "deployed": False},
        "outcome": f"registered {MODEL} v{version}" if version else "not registered",
    }
    contracts.write_json(folder / "run.json", record, "run_record")
    return folder


def deploy(registry: str, version: str, previous: str | None, at: str, outcome: str = "deployed") -> None:
    if outcome == "deployed":
        move_production(registry, MODEL, version)
    append_history(registry, local_deployment(MODEL, version, previous, at=at, outcome=outcome))


@pytest.fixture
def deployed_twice(tmp_path, registry, data_report) -> dict[str, str]:
    """v1 from run RUN_ID, deployed, then replaced by v2 (whose run folder is not on this machine)."""
    first = register(registry, data_report, RUN_ID)
    write_run(tmp_path / "runs", RUN_ID, data_report, registry, first)
    deploy(registry, first, None, "2026-12-07T01:06:00Z")
    second = register(registry, data_report, LATER_RUN_ID)
    deploy(registry, second, first, "2026-12-07T02:00:00Z", outcome="failed")
    deploy(registry, second, first, "2026-12-07T02:10:00Z")
    return {"first": first, "second": second}


def lineage_json(capsys, *argv: str) -> dict:
    code = main(["lineage", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)
    contracts.validate(document, "lineage", source="lineage --json")
    return document


def test_a_version_is_traced_through_its_run_folder_dataset_blessing_and_deployments(
    tmp_path, registry, data_report, deployed_twice, capsys
):
    document = lineage_json(
        capsys, f"models:/{MODEL}/1", "--registry", registry, "--runs-dir", str(tmp_path / "runs")
    )
    model = document["model"]
    assert (model["uri"], model["status"], model["pipeline_run_id"]) == (
        f"models:/{MODEL}/1",
        "ready",
        RUN_ID,
    )
    assert model["metrics"] == {"accuracy": 0.93, "p99_ms": 2.5, "val_accuracy": 0.91}
    run = document["run"]
    assert (run["run_id"], run["found"], run["status"]) == (RUN_ID, True, "succeeded")
    assert [(node["name"], node["status"]) for node in run["nodes"]] == [
        ("ingest", "done"),
        ("preprocess", "cached"),
        ("evaluate", "cached"),
        ("register", "done"),
    ]
    assert run["nodes"][2]["reused_because"] == "its champion is the challenger itself"
    report = json.loads(data_report.read_text())
    dataset = document["dataset"]
    assert dataset["version"] == report["dataset_version"]
    assert dataset["read_from"] == str(tmp_path / "runs" / RUN_ID / "ingest" / "data_report.json")
    assert (dataset["source_uri"], dataset["validation"]) == (report["source_uri"], report["outcome"])
    assert dataset["checks_passed"] == sum(check["outcome"] == "pass" for check in report["checks"])
    assert 0 <= dataset["age_days"] < 1  # the PNGs were written just before ingest read them
    assert (document["code_version"], document["environment_hash"]) == (CODE, ENVIRONMENT)
    assert document["blessing"] == {
        "blessed": True,
        "reasons": REASONS,
        "data_shift": "no_reference",
        "read_from": "run folder",
    }
    assert [(event["deployed_at"], event["effect"]) for event in document["deployments"]] == [
        ("2026-12-07T01:06:00Z", "entered"),
        ("2026-12-07T02:10:00Z", "left"),  # the failed deploy of v2 did not touch v1
    ]
    assert document["in_production"] is False and document["notes"] == []

    code = main(
        [
            "lineage",
            f"models:/{MODEL}@production",
            "--registry",
            registry,
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert f"models:/{MODEL}/2" in text and f"{MODEL} v2 is in production" in text
    assert "deploy failed: v2 not put into production" in text
    assert f"{LATER_RUN_ID}: run folder not found" in text


def test_without_its_run_folder_a_version_reads_the_dataset_from_the_registry(
    tmp_path, registry, data_report, deployed_twice
):
    document = trace(f"models:/{MODEL}@production", registry=registry, runs_dir=tmp_path / "runs")
    assert document["run"] == {"run_id": LATER_RUN_ID, "found": False, "folder": None}
    assert document["dataset"]["read_from"].endswith(f"/{references.ARTIFACT_PATH}/{references.DATA_REPORT}")
    assert document["dataset"]["data_report_sha256"] == sha256_file(data_report)
    assert document["blessing"] == {
        "blessed": True,
        "reasons": [],
        "data_shift": "no_reference",
        "read_from": "registry tags",
    }
    assert document["in_production"] is True and document["model"]["aliases"] == ["production"]
    (note,) = document["notes"]
    assert f"no run folder {tmp_path / 'runs' / LATER_RUN_ID} on this machine" in note
    assert "the run's nodes are kept only there" in note


def test_a_run_folder_is_traced_to_the_version_it_registered_in_the_registry_it_used(
    tmp_path, registry, data_report, deployed_twice, capsys, monkeypatch
):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no ./mlflow.db: the run's registration names the registry
    by_path = lineage_json(capsys, str(tmp_path / "runs" / RUN_ID))
    by_id = lineage_json(capsys, RUN_ID, "--runs-dir", str(tmp_path / "runs"))
    assert by_path == by_id | {"ref": str(tmp_path / "runs" / RUN_ID)}
    assert (by_path["kind"], by_path["model"]["version"], by_path["registry_uri"]) == ("run", "1", registry)
    assert by_path["run"]["folder"] == str(tmp_path / "runs" / RUN_ID)


def test_a_run_that_registered_nothing_needs_no_registry(tmp_path, data_report):
    folder = write_run(tmp_path / "runs", RUN_ID, data_report, f"sqlite:///{tmp_path / 'gone.db'}", None)
    document = trace(str(folder))
    assert (document["model"], document["registry_uri"], document["deployments"]) == (None, None, [])
    assert document["blessing"]["blessed"] is False and document["blessing"]["reasons"] == [
        "accuracy 0.12 < 0.5"
    ]
    assert document["code_version"] == CODE and document["dataset"]["validation"] == "pass"


def test_a_request_id_leads_to_the_version_that_answered_it(
    tmp_path, registry, data_report, deployed_twice, capsys
):
    def brightness(images: np.ndarray) -> np.ndarray:
        return np.eye(10, dtype=np.float32)[(images.reshape(len(images), -1).mean(axis=1) / 25.6).astype(int)]

    log = RequestLog(request_log_dir(registry, MODEL))
    body = json.dumps({"instances": np.full((2, 28, 28), 200).tolist()}).encode()

    def answer(version: str) -> str:
        served = LoadedModel(MODEL, version, brightness, ModelInterface(MNIST_IMAGE_SHAPE, MNIST_CLASSES))
        response = Scorer(served, key=None, limits=Limits(), request_log=log).respond(
            method="POST",
            authorization=None,
            content_type="application/json",
            content_length=len(body),
            read_body=lambda size: body[:size],
            client_request_id="order-42",
        )
        return response.body["request_id"]

    request_id = answer("1")

    document = lineage_json(capsys, request_id, "--registry", registry, "--runs-dir", str(tmp_path / "runs"))
    (request,) = document["requests"]
    assert (request["request_id"], request["client_request_id"], request["status"]) == (
        request_id,
        "order-42",
        200,
    )
    assert request["predictions"] == [{"class": 7, "label": "7", "confidence": 1.0}] * 2
    assert (document["kind"], document["model"]["version"], document["run"]["run_id"]) == (
        "request",
        "1",
        RUN_ID,
    )
    assert document["blessing"]["reasons"] == REASONS
    by_client_id = lineage_json(capsys, "order-42", "--requests", str(log.folder), "--registry", registry)
    assert by_client_id["requests"] == document["requests"]

    answer("2")  # the client reuses its id with the next version
    reused = trace("order-42", registry=registry, runs_dir=tmp_path / "runs")
    assert [request["model_version"] for request in reused["requests"]] == ["1", "2"]
    assert reused["model"]["version"] == "2"
    assert f"2 requests carry the id order-42, answered by {MODEL} v1, {MODEL} v2" in reused["notes"][0]


def test_a_run_folder_s_data_report_that_is_not_the_registered_one_is_not_trusted(
    tmp_path, registry, data_report, deployed_twice
):
    copy = tmp_path / "runs" / RUN_ID / "ingest" / "data_report.json"
    copy.write_text(copy.read_text().replace('"outcome": "pass"', '"outcome": "warn"', 1))
    document = trace(f"models:/{MODEL}/1", registry=registry, runs_dir=tmp_path / "runs")
    assert f"{copy} is not the data report registered with the model" in document["notes"][0]
    assert document["dataset"]["read_from"].startswith("runs:/")
    assert document["dataset"]["data_report_sha256"] == sha256_file(data_report)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (f"models:/{MODEL}/9", f"models:/{MODEL}/9: {MODEL} has no version 9 in the registry"),
        (f"models:/{MODEL}@staging", f"{MODEL} has no alias staging in the registry"),
        ("models:/other@production", "no model named other in the registry"),
        ("models:/broken", "expected a registry reference models:/<name>/<version>"),
        ("0b1c0ffee", "no run folder 0b1c0ffee or"),
        ("0b1c0ffee", "no request with that id in the request logs under"),
        ("runs/no such run", "and not a request id"),
    ],
)
def test_an_unknown_ref_names_what_was_tried(
    tmp_path, registry, data_report, deployed_twice, capsys, ref, message
):
    code = main(["lineage", ref, "--registry", registry, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    if "no version" in message:
        assert "(versions: 1, 2)" in err
    if "no alias" in message:
        assert "(its aliases: production -> v2)" in err
    if "request logs" in message:
        assert str(request_log_dir(registry, MODEL).parent) in err and "0 log files searched" in err


def test_a_run_record_of_another_version_is_refused_naming_it(tmp_path, data_report, capsys):
    folder = write_run(tmp_path / "runs", RUN_ID, data_report, "sqlite:///x.db", None)
    record = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps(record | {"schema_version": 2}))
    assert main(["lineage", str(folder)]) == 2
    assert "run.json: run record schema_version 2; mnist-mlops" in capsys.readouterr().err
    (folder / "run.json").write_text(json.dumps({"run_id": RUN_ID}))
    assert main(["lineage", str(folder)]) == 2
    assert "no schema_version: not a run record" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["lineage", str(tmp_path / "empty")]) == 2
    assert "a folder without run.json, not a run folder" in capsys.readouterr().err


def test_a_registry_that_cannot_be_reached_is_a_clear_error(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert main(["lineage", f"models:/{MODEL}/1", "--registry", missing]) == 2
    assert f"no registry at {missing}" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    down = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["lineage", f"models:/{MODEL}/1", "--registry", down]) == 2
    assert f"the registry {down} cannot be reached or read (model {MODEL}:" in capsys.readouterr().err
    assert time.monotonic() - started < 30  # MLflow alone would retry for four minutes


@pytest.mark.slow  # reads the shared small run (conftest `deployed_run`) and starts a server
def test_a_real_run_and_a_request_it_served_are_traced_end_to_end(deployed_run, capsys, tmp_path):
    from mnist_mlops.deployments import key_path
    from mnist_mlops.serving.server import ScoringClient, running_server, server_environment

    registry, runs, run_dir = deployed_run.registry, deployed_run.runs, deployed_run.run_dir
    capsys.readouterr()

    production = lineage_json(
        capsys, f"models:/{MODEL}@production", "--registry", registry, "--runs-dir", str(runs)
    )
    assert (production["model"]["version"], production["in_production"]) == ("1", True)
    assert production["run"]["run_id"] == run_dir.name and production["run"]["status"] == "succeeded"
    assert {node["name"] for node in production["run"]["nodes"]} >= {"ingest", "train", "evaluate", "deploy"}
    assert production["dataset"]["read_from"] == str(runs / run_dir.name / "ingest" / "data_report.json")
    assert (
        production["dataset"]["source_uri"] == str(deployed_run.data)
        and production["dataset"]["validation"] == "pass"
    )
    assert production["code_version"] and len(production["environment_hash"]) == 64
    assert production["blessing"]["blessed"] and production["blessing"]["reasons"]
    assert [event["effect"] for event in production["deployments"]] == ["entered"]
    assert production["notes"] == []
    assert lineage_json(capsys, str(run_dir))["model"] == production["model"]
    elsewhere = lineage_json(  # on a machine without the run folder: the blessing kept with the version
        capsys, f"models:/{MODEL}@production", "--registry", registry, "--runs-dir", str(tmp_path)
    )
    assert elsewhere["blessing"] == production["blessing"] | {"read_from": "registry artifacts"}

    key = key_path(registry, MODEL).read_text().strip()
    environment = server_environment(
        f"models:/{MODEL}@production",
        registry=registry,
        key_file=key_path(registry, MODEL),
        request_log=request_log_dir(registry, MODEL),
    )
    with running_server(environment) as server:
        status, answer = ScoringClient(server.url, key).score_json(
            {"instances": np.zeros((1, 28, 28), int).tolist()}
        )
    assert status == 200, answer
    assert main(["lineage", answer["request_id"], "--registry", registry, "--runs-dir", str(runs)]) == 0
    text = capsys.readouterr().out
    print(text)  # the chain as a person reads it, kept in the test log
    for line in (
        f"request     {answer['request_id']}",
        "HTTP 200 in",
        f"model       models:/{MODEL}/1  aliases: challenger, production  status: ready",
        f"run         {run_dir.name} succeeded",
        f"dataset     {production['dataset']['version']}",
        f"code        {production['code_version']}",
        "blessing    blessed",
        f"production  {MODEL} v1 is in production",
    ):
        assert line in text
