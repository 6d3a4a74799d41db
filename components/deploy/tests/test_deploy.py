"""deploy with the real serving stack: infra validation, production alias, history, refusals, and a
running server that follows deploys and rollbacks without dropping a request."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import cli, contracts, references
from mnist_mlops.components.deploy.executor import run_deploy
from mnist_mlops.components.evaluate.executor import run_evaluate
from mnist_mlops.deployments import key_path, production_version, read_history, rollback
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import content_sha256
from mnist_mlops.imaging import encode_png
from mnist_mlops.keys import read_key
from mnist_mlops.registry import READY_TAG, client
from mnist_mlops.serving.server import ScoringClient, free_port, running_server, server_environment
from tests.models import LENIENT, judged_model, register_model

pytestmark = pytest.mark.slow  # trains models or starts servers

SERVE = [sys.executable, "-m", "mnist_mlops.cli", "serve"]
DEPLOY = {"target": "local", "canary_count": 16, "max_canary_p99_ms": 1000.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return judged_model(
        tmp_path_factory.mktemp("deploy"), LENIENT, train_per_class=24, test_per_class=6, epochs=8
    )


def register_versions(trained: Path, registry: str, count: int) -> None:
    for number in range(count):
        register_model(trained, registry, trained / f"registration-{number}.json")


@pytest.fixture
def registry(tmp_path: Path, trained: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    register_versions(trained, uri, 2)
    return uri


def deploy(trained: Path, registry: str, model: str | None, record: Path, **options) -> dict:
    return run_deploy(model, trained / "preprocessed", record, registry=registry, **(DEPLOY | options))


def test_deploy_validates_in_the_real_server_then_moves_production(tmp_path, trained, registry, capsys):
    record = deploy(trained, registry, "models:/mnist-mlops/1", tmp_path / "record.json")
    assert contracts.read_json(tmp_path / "record.json", "deployment_record") == record
    checks = record["infra_validation"]
    assert record["outcome"] == "deployed" and record["previous_version"] is None
    assert checks["passed"] and checks["canary_correct"] == checks["canary_requests"] == 17
    assert checks["canary_sources"] == {
        "test_split": 16,
        "production_reference": 0,
        "note": "none from production's test split: no production model",
    }
    assert checks["invalid_rejected"] == checks["invalid_requests"] >= 25
    assert production_version(registry, "mnist-mlops") == "1"
    key = key_path(registry, "mnist-mlops")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(read_key(str(key))) >= 32

    capsys.readouterr()
    second = deploy(trained, registry, "models:/mnist-mlops@challenger", tmp_path / "second.json")
    assert (second["model_version"], second["previous_version"]) == ("2", "1")
    checks = second["infra_validation"]
    assert checks["canary_sources"] | {"note": ""} == {
        "test_split": 16,
        "production_reference": 16,
        "note": "",
    }
    assert checks["canary_sources"]["note"].startswith("16 from production v1's test split (dataset ")
    assert checks["passed"] and checks["canary_correct"] == checks["canary_requests"] == 33
    assert checks["canary_sources"]["note"] in capsys.readouterr().out
    history = read_history(registry, "mnist-mlops")
    assert [record["model_version"] for record in history] == ["1", "2"]

    run_id = client(registry).get_model_version("mnist-mlops", "2").run_id
    (bundle,) = (
        path.parent for path in (tmp_path / "registry").rglob(references.MANIFEST) if run_id in str(path)
    )
    shutil.rmtree(bundle)  # production's reference is gone: the current split alone, said so
    third = deploy(trained, registry, "models:/mnist-mlops/1", tmp_path / "third.json")
    assert third["outcome"] == "deployed"
    sources = third["infra_validation"]["canary_sources"]
    assert (sources["test_split"], sources["production_reference"]) == (16, 0)
    assert sources["note"].startswith("none from production's test split: mnist-mlops v2's reference")
    assert sources["note"] in capsys.readouterr().out


def test_the_production_version_is_the_next_runs_champion(tmp_path, trained, registry):
    from mnist_mlops.components.resolve_champion.executor import run_resolve_champion

    none = run_resolve_champion(tmp_path / "none", registry=registry, pointer="nothing-here")
    assert none["found"] is False and "names no version" in none["reason"]
    assert [path.name for path in (tmp_path / "none").iterdir()] == ["champion.json"]
    deploy(trained, registry, "models:/mnist-mlops/2", tmp_path / "record.json")
    found = run_resolve_champion(tmp_path / "champion", registry=registry)
    assert (found["found"], found["model_uri"]) == (True, "models:/mnist-mlops/2")
    again = run_resolve_champion(tmp_path / "again", registry=registry)
    assert content_sha256(tmp_path / "again") == content_sha256(tmp_path / "champion")  # same key
    report = run_evaluate(
        trained / "model",
        trained / "preprocessed",
        tmp_path / "evaluation",
        tmp_path / "blessing.json",
        thresholds=trained / "thresholds.json",
        champion=tmp_path / "champion",
    )
    assert report["champion"]["version"] == "2" and again == found
    assert report["champion"]["accuracy"] == report["accuracy"]  # the same model, the same test split
    regression = next(gate for gate in report["thresholds"] if gate["name"] == "max_regression")
    assert regression["outcome"] == "fail" and "itself: nothing to promote" in regression["reason"]


def test_the_pipeline_deploys_what_register_registered_or_skips_with_reasons(tmp_path, trained, registry):
    registration = json.loads((trained / "registration-1.json").read_text())
    (tmp_path / "registered.json").write_text(json.dumps(registration))
    record = deploy(
        trained, registry, None, tmp_path / "record.json", registration_record=tmp_path / "registered.json"
    )
    assert (record["model_uri"], record["outcome"]) == (
        f"models:/mnist-mlops/{registration['version']}",
        "deployed",
    )

    declined = registration | {
        "registered": False,
        "version": None,
        "aliases": [],
        "reasons": ["accuracy 0.91 < 0.99"],
    }
    (tmp_path / "declined.json").write_text(json.dumps(declined))
    skipped = deploy(
        trained, registry, None, tmp_path / "skipped.json", registration_record=tmp_path / "declined.json"
    )
    assert contracts.read_json(tmp_path / "skipped.json", "deployment_record") == skipped
    assert skipped["outcome"] == "skipped" and skipped["reasons"] == ["accuracy 0.91 < 0.99"]
    assert production_version(registry, "mnist-mlops") == registration["version"]
    with pytest.raises(UserInputError, match="exactly one of"):
        run_deploy(None, trained / "preprocessed", tmp_path / "none.json", registry=registry)


def test_only_blessed_ready_registry_versions_are_deployed(tmp_path, trained, registry):
    with pytest.raises(UserInputError, match="registry reference"):
        deploy(trained, registry, str(trained / "model"), tmp_path / "record.json")
    with pytest.raises(UserInputError, match="not found in the registry"):
        deploy(trained, registry, "models:/mnist-mlops/9", tmp_path / "record.json")
    client(registry).set_model_version_tag("mnist-mlops", "2", READY_TAG, "pending")
    with pytest.raises(UserInputError, match="version 2 is not ready"):
        deploy(trained, registry, "models:/mnist-mlops/2", tmp_path / "record.json")
    client(registry).set_model_version_tag("mnist-mlops", "1", "blessed", "False")
    with pytest.raises(UserInputError, match="not a blessed, ready"):
        deploy(trained, registry, "models:/mnist-mlops/1", tmp_path / "record.json")
    assert not (tmp_path / "record.json").exists()
    assert production_version(registry, "mnist-mlops") is None


def test_failed_infra_validation_leaves_production_and_records_the_attempt(tmp_path, trained, registry):
    deploy(trained, registry, "models:/mnist-mlops/1", tmp_path / "first.json")
    with pytest.raises(UserInputError, match="infra validation failed"):
        deploy(trained, registry, "models:/mnist-mlops/2", tmp_path / "second.json", max_canary_p99_ms=0.1)
    assert production_version(registry, "mnist-mlops") == "1"
    assert not (tmp_path / "second.json").exists()
    last = read_history(registry, "mnist-mlops")[-1]
    assert (last["model_version"], last["outcome"], last["traffic"]) == ("2", "failed", {"v1": 100})
    assert last["infra_validation"]["passed"] is False


def test_a_running_server_follows_deploys_and_rollbacks_without_dropping_requests(
    tmp_path, trained, registry, capsys
):
    deploy(trained, registry, "models:/mnist-mlops/1", tmp_path / "first.json")
    key_file = key_path(registry, "mnist-mlops")
    environment = server_environment(
        "models:/mnist-mlops@production", registry=registry, key_file=key_file, poll_seconds=0.3
    )
    image = encode_png(np.full((28, 28), 90, np.uint8))
    seen: list[tuple[int, str]] = []
    stop = threading.Event()
    with running_server(environment) as server:
        scoring = ScoringClient(server.url, read_key(str(key_file)))

        def keep_scoring() -> None:
            while not stop.is_set():
                status, body = scoring.score(image, "image/png")
                seen.append((status, body.get("model_version", "")))

        worker = threading.Thread(target=keep_scoring)
        worker.start()
        try:
            deploy(trained, registry, "models:/mnist-mlops/2", tmp_path / "second.json")
            wait_for_version(seen, "2")
            rollback(registry, "mnist-mlops", endpoint=f"{server.url}/score")
            wait_for_version(seen, "1")
        finally:
            stop.set()
            worker.join()
    assert len(seen) > 20 and all(status == 200 for status, _ in seen)
    versions = [version for _, version in seen]
    first_two, last_two = versions.index("2"), len(versions) - 1 - versions[::-1].index("2")
    assert set(versions[:first_two]) == {"1"} and set(versions[last_two + 1 :]) == {"1"}

    assert cli.main(["models", "--registry", registry]) == 0
    listing = capsys.readouterr().out
    assert "deployment history" in listing and "rollback  v1" in listing and "deploy    v2" in listing
    with pytest.raises(UserInputError, match="no earlier deployment"):
        rollback(registry, "mnist-mlops", endpoint="http://127.0.0.1:5001/score")


def wait_for_version(seen: list[tuple[int, str]], version: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if seen and seen[-1][1] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server never reported version {version}: last {seen[-1:]}")


def test_serve_command_prints_the_key_and_requires_it(tmp_path, trained, registry):
    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [*SERVE, "--model", "models:/mnist-mlops/1", "--registry", registry, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    try:
        scoring = ScoringClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if scoring.health():
                    break
            except OSError:
                time.sleep(0.2)
        output = (tmp_path / "serve.log").read_text()
        key_file = key_path(registry, "mnist-mlops")
        assert f"bearer key: {key_file}" in output
        image = encode_png(np.zeros((28, 28), np.uint8))
        assert scoring.score(image, "image/png")[0] == 401
        scoring.key = read_key(str(key_file))
        status, body = scoring.score(image, "image/png")
        assert status == 200 and body["model_version"] == "1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serving_an_unknown_or_unready_model_fails_clearly(tmp_path, registry):
    assert cli.main(["serve", "--model", "./model", "--registry", registry]) == 2
    client(registry).set_model_version_tag("mnist-mlops", "2", READY_TAG, "pending")
    assert cli.main(["serve", "--model", "models:/mnist-mlops/2", "--registry", registry]) == 2
