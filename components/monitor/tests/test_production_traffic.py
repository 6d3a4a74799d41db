"""monitor against the real serving stack: a tiny model is trained, registered and deployed, the scoring
server follows `@production` and logs every request, and the monitor reads that log.

Traffic from the test split passes; the same images corrupted with strong noise alert on input drift, and
the retrain request goes to the local handler, which starts a retraining run (cut after preprocess to stay
fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import cli, contracts
from mnist_mlops.components.deploy.executor import run_deploy
from mnist_mlops.components.monitor.executor import run_monitor
from mnist_mlops.dataset import load_split
from mnist_mlops.deployments import key_path
from mnist_mlops.imaging import encode_png
from mnist_mlops.keys import read_key
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from tests.models import LENIENT, judged_model, register_model

pytestmark = pytest.mark.slow  # trains models or starts servers


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A tiny model trained on 180 digits, registered and deployed as production (version 1)."""
    root = judged_model(
        tmp_path_factory.mktemp("production"), LENIENT, train_per_class=24, test_per_class=20, epochs=30
    )
    registry = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    register_model(root, registry, root / "registration.json")
    run_deploy(
        "models:/mnist-mlops/1",
        root / "preprocessed",
        root / "deployment.json",
        registry=registry,
        target="local",
        canary_count=16,
        max_canary_p99_ms=1000.0,
    )
    return {"root": root, "source": root / "src", "registry": registry}


def send(scoring: ScoringClient, images: np.ndarray) -> None:
    for image in images:
        status, body = scoring.score(encode_png(image), "image/png")
        assert status == 200, body


def test_drifted_traffic_alerts_and_retrains_where_normal_traffic_passes(
    tmp_path, deployed, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # where the retraining run's folder goes
    root, registry = deployed["root"], deployed["registry"]
    baseline = str(root / "preprocessed")  # the training data's preprocess output
    manifest = contracts.read_json(root / "preprocessed" / "manifest.json", "preprocessed_manifest")
    images, _ = load_split(root / "preprocessed", manifest, "test")
    rng = np.random.default_rng(3)
    images = images[rng.permutation(len(images))]  # mixed classes, as real traffic (the split is by class)
    noise = rng.integers(0, 120, images.shape)
    noisy = np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    key_file = key_path(registry, "mnist-mlops")
    environment = server_environment(
        "models:/mnist-mlops@production",
        registry=registry,
        key_file=key_file,
        request_log=tmp_path / "requests",
    )
    with running_server(environment) as server:
        scoring = ScoringClient(server.url, read_key(str(key_file)))
        send(scoring, images)
        # through the component's own command, as a pipeline would run it
        monitor = ["monitor", "--requests", str(tmp_path / "requests"), "--baseline", baseline]
        assert cli.main([*monitor, "--report", str(tmp_path / "calm")]) == 0
        send(scoring, noisy)
    calm = contracts.read_json(tmp_path / "calm" / "monitor_report.json", "monitor_report")
    assert [(check["metric"], check["outcome"]) for check in calm["checks"] if check["outcome"] != "ok"] == []
    assert calm["alert"] is False and calm["samples"] == {"requests": 200, "images": 200}
    assert calm["model_versions"] == ["1"] and calm["log"]["bad_lines"] == 0

    (tmp_path / "recent.json").write_text(json.dumps({"schema_version": 1, "window": 200, "checks": []}))
    capsys.readouterr()
    report = run_monitor(
        tmp_path / "requests",
        tmp_path / "drifted",
        baseline=baseline,
        thresholds=tmp_path / "recent.json",
        on_breach="retrain_local",
        retrain_data=str(deployed["source"]),
        retrain_until="preprocess",
        registry=registry,
    )
    assert contracts.read_json(tmp_path / "drifted" / "monitor_report.json", "monitor_report") == report
    assert (tmp_path / "drifted" / "drift.png").read_bytes().startswith(b"\x89PNG")
    assert report["alert"] is True and report["log"]["requests"] == 400
    assert {"mean_intensity", "ink_fraction"} & set(report["drifting_features"])
    assert (
        report["summary"]["mean_intensity"]["served"] > report["summary"]["mean_intensity"]["baseline"] + 20
    )
    request = contracts.read_json(tmp_path / "drifted" / "retrain_request.json", "retrain_request")
    assert (request["on_breach"], request["data"]) == ("retrain_local", str(deployed["source"]))
    run = report["retrain"]
    assert (run["status"], run["exit_code"], run["detail"]) == ("succeeded", 0, "finished")
    record = contracts.read_json(tmp_path / "runs" / run["run_id"] / "run.json", "run_record")
    assert [node["name"] for node in record["nodes"]] == ["ingest", "preprocess"]
    assert record["status"] == "succeeded"
    printed = capsys.readouterr().out
    assert "ALERT {" in printed and f"run {run['run_id']} in runs/{run['run_id']}" in printed
