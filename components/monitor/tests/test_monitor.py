"""monitor on request logs written here: checks and outcomes, windows, bad lines, bad inputs, breach actions,
and the page (report.html) it writes beside its report.

The logs hold the per-image statistics of real images (the test digits, clean or noise-corrupted), written
in the server's record format with controlled times, statuses and latencies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts, features, retraining
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.monitor.executor import DEFAULT_THRESHOLDS, read_thresholds, run_monitor
from mnist_mlops.components.monitor.page import PAGE_FILE
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.errors import ContractError, UserInputError
from mnist_mlops.hashing import sha256_file
from mnist_mlops.pipelines import retrain
from mnist_mlops.pipelines.aml import aml_graph
from tests.datasets import colour_splits, digit_images, small_splits, write_png_tree
from tests.models import preprocessed_digits
from tests.pages import ParsedPage, console_of, loads_nothing
from tests.test_azure_jobs import SUBSCRIPTION, RecordingMLClient

START = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
WORKSPACE = {"subscription_id": SUBSCRIPTION, "resource_group": "rg", "workspace": "ws"}
FOOD = ["apple", "bread", "cheese", "dates", "eggs"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real preprocess output (baseline statistics of 240 training digits)."""
    return preprocessed_digits(
        tmp_path_factory.mktemp("monitor"), small_splits(train_per_class=24, test_per_class=2)
    )


@pytest.fixture(scope="module")
def food(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A preprocess output of 32x32 colour images of five named classes (uneven: 30, 20, 10, 10, 10
    training images), and its splits."""
    root = tmp_path_factory.mktemp("monitor-food")
    splits = colour_splits(classes=5, train_per_class=30, test_per_class=4, seed=3)
    images, labels = splits["training"]
    keep = np.arange(len(labels)) % 30 < np.array([30, 20, 10, 10, 10])[labels]
    splits["training"] = (images[keep], labels[keep])
    run_ingest(
        str(write_png_tree(root / "src", splits, classes=FOOD)), root / "dataset", root / "report.json"
    )
    run_preprocess(root / "dataset", root / "preprocessed", validation_fraction=0.25)
    return root / "preprocessed", splits


def shifted(images: np.ndarray, seed: int = 7) -> np.ndarray:
    """Strong uniform noise: brighter backgrounds, far more pixels over the ink threshold."""
    noise = np.random.default_rng(seed).integers(0, 120, images.shape)
    return np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def records(
    images: np.ndarray,
    labels: np.ndarray,
    start: datetime,
    *,
    version: str = "1",
    latency_ms: float = 5.0,
) -> list[dict]:
    """One scored image per request, a second apart, as the server records them."""
    stats = zip(features.mean_intensity(images), features.ink_fraction(images), labels, strict=True)
    return [
        request(
            start + timedelta(seconds=n),
            [(mean, ink, int(label), 0.99)],
            version=version,
            latency_ms=latency_ms,
        )
        for n, (mean, ink, label) in enumerate(stats)
    ]


def request(
    moment: datetime,
    images: list[tuple[float, float, int, float]],
    *,
    status: int = 200,
    version: str = "1",
    latency_ms: float = 5.0,
) -> dict:
    return {
        "schema_version": 1,
        "request_id": f"{int(moment.timestamp() * 1e6):032x}",
        "time": moment.isoformat().replace("+00:00", "Z"),
        "model_name": "mnist-mlops",
        "model_version": version,
        "status": status,
        "latency_ms": latency_ms,
        "images": [
            {
                "mean_intensity": round(float(m), 3),
                "ink_fraction": round(float(i), 4),
                "class": c,
                "confidence": p,
            }
            for m, i, c, p in images
        ],
    }


def write_log(path: Path, entries: list[dict], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries) + tail)
    return path.parent


def clean_traffic(count: int = 200, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return digit_images(count // 10, seed)


def check(report: dict, metric: str) -> dict:
    return next(entry for entry in report["checks"] if entry["metric"] == metric)


def test_traffic_like_the_training_data_passes_every_check(tmp_path, baseline, capsys):
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(*clean_traffic(), START))
    report = run_monitor(log, tmp_path / "report", baseline=baseline)
    assert contracts.read_json(tmp_path / "report" / "monitor_report.json", "monitor_report") == report
    assert (tmp_path / "report" / "drift.png").read_bytes().startswith(b"\x89PNG")
    assert {entry["metric"] for entry in report["checks"]} == set(DEFAULT_THRESHOLDS)
    assert [entry["metric"] for entry in report["checks"] if entry["outcome"] != "ok"] == []
    assert (report["alert"], report["drifting_features"], report["alert_reasons"]) == (False, [], [])
    assert report["samples"] == {"requests": 200, "images": 200}
    assert report["time_range"] == {"from": "2025-03-14T09:00:00Z", "to": "2025-03-14T09:03:19Z"}
    assert report["model_versions"] == ["1"] and report["retrain"]["status"] == "not_triggered"
    assert report["summary"]["mean_intensity"]["served"] == pytest.approx(
        report["summary"]["mean_intensity"]["baseline"], abs=2
    )
    assert report["summary"]["classes"] == {
        str(digit): {"served": 0.1, "baseline": pytest.approx(0.1)} for digit in range(10)
    }
    assert "no alert over 200 requests" in capsys.readouterr().out


def test_prediction_drift_of_a_five_class_model_uses_its_baseline_classes(tmp_path, food):
    """The served classes against the five training priors, shown by class name."""
    preprocessed, splits = food
    images, labels = splits["testing"]
    served = np.tile(images, (6, 1, 1, 1))  # 120 images, 24 per class (training: 30, 20, 10, 10, 10)
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(served, np.tile(labels, 6), START))
    report = run_monitor(log, tmp_path / "report", baseline=preprocessed)
    priors = contracts.read_json(preprocessed / "baseline_statistics.json", "baseline_statistics")[
        "class_priors"
    ]
    assert len(priors) == 5
    assert report["summary"]["classes"] == {
        name: {"served": 0.2, "baseline": prior} for name, prior in zip(FOOD, priors, strict=True)
    }
    # 0.5 * sum |0.2 - prior|, over five classes, not MNIST's ten
    assert check(report, "prediction_tv")["value"] == pytest.approx(
        0.5 * sum(abs(0.2 - prior) for prior in priors), abs=1e-6
    )

    everything_apple = records(served, np.zeros(len(served), dtype=int), START)
    log = write_log(tmp_path / "apple" / "requests-1.jsonl", everything_apple)
    report = run_monitor(log, tmp_path / "apple-report", baseline=preprocessed)
    assert check(report, "prediction_tv")["value"] == pytest.approx(1 - priors[0], abs=1e-6)
    assert check(report, "prediction_tv")["outcome"] == "alert"
    assert report["summary"]["classes"]["apple"]["served"] == 1.0


def test_a_baseline_from_before_the_mean_image_is_still_read(tmp_path, baseline):
    older = tmp_path / "older-preprocess-output"
    shutil.copytree(baseline, older)
    statistics = json.loads((older / "baseline_statistics.json").read_text())
    del statistics["mean_image"]
    (older / "baseline_statistics.json").write_text(json.dumps(statistics))
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["baseline_statistics"]["sha256"] = sha256_file(older / "baseline_statistics.json")
    (older / "manifest.json").write_text(json.dumps(manifest))
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(*clean_traffic(), START))
    report = run_monitor(log, tmp_path / "report", baseline=older)
    assert report["checks"] == run_monitor(log, tmp_path / "current", baseline=baseline)["checks"]


def test_shifted_traffic_alerts_and_names_the_drifting_features(tmp_path, baseline, capsys):
    images, labels = clean_traffic()
    entries = records(images, labels, START) + records(shifted(images), labels, START + timedelta(hours=1))
    log = write_log(tmp_path / "log" / "requests-1.jsonl", entries)
    (tmp_path / "recent.json").write_text(json.dumps({"schema_version": 1, "window": 200, "checks": []}))
    report = run_monitor(log, tmp_path / "report", baseline=baseline, thresholds=tmp_path / "recent.json")
    assert report["alert"] is True
    assert report["drifting_features"] == ["mean_intensity", "ink_fraction"]
    for metric in ("psi_mean_intensity", "psi_ink_fraction", "ks_mean_intensity", "ks_ink_fraction"):
        assert check(report, metric)["outcome"] == "alert" and check(report, metric)["value"] >= 0.9
    assert check(report, "prediction_tv")["outcome"] == "ok"  # the log's classes are the true labels
    assert report["time_range"]["from"] == "2025-03-14T10:00:00Z"  # only the shifted half is in the window
    assert any(reason.startswith("psi_mean_intensity ") for reason in report["alert_reasons"])
    printed = capsys.readouterr().out
    alert_line = next(line for line in printed.splitlines() if line.startswith("ALERT "))
    assert json.loads(alert_line.removeprefix("ALERT "))["drifting_features"] == report["drifting_features"]


def test_each_check_has_its_own_window(tmp_path, baseline):
    images, labels = clean_traffic()
    entries = records(images, labels, START) + records(shifted(images), labels, START + timedelta(hours=1))
    log = write_log(tmp_path / "log" / "requests-1.jsonl", entries)
    rules = {
        "schema_version": 1,
        "window": 200,
        "checks": [{"metric": "psi_ink_fraction", "threshold": 0.2, "window": 400}],
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    report = run_monitor(log, tmp_path / "report", baseline=baseline, thresholds=tmp_path / "rules.json")
    assert (
        check(report, "psi_ink_fraction")["window"] == 400
        and check(report, "psi_mean_intensity")["window"] == 200
    )
    assert report["samples"]["requests"] == 400  # the widest window
    assert read_thresholds(tmp_path / "rules.json")["latency_p99_ms"] == (
        DEFAULT_THRESHOLDS["latency_p99_ms"],
        200,
    )


def test_too_few_images_is_insufficient_data_not_an_alert(tmp_path, baseline, capsys):
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images[:30]), labels[:30], START))
    report = run_monitor(log, tmp_path / "report", baseline=baseline)
    assert report["alert"] is False and report["drifting_features"] == []
    assert {entry["outcome"] for entry in report["checks"]} == {"insufficient_data"}
    assert check(report, "psi_mean_intensity")["samples"] == 30
    assert check(report, "psi_mean_intensity")["value"] > 1  # measured, shown, but not judged
    assert "insufficient data for psi_mean_intensity" in capsys.readouterr().out

    assert run_monitor(log, tmp_path / "lenient", baseline=baseline, min_samples=30)["alert"] is True


def test_error_rates_and_latency_come_from_the_requests(tmp_path, baseline):
    images, labels = clean_traffic(100)
    entries = records(images, labels, START)
    for n, entry in enumerate(entries):
        entry["latency_ms"] = float(n + 1)  # 1 .. 100 ms
    later = START + timedelta(minutes=10)
    entries += [request(later, [], status=500), request(later, [], status=500)]
    entries += [request(later, [], status=401, latency_ms=0.1) for _ in range(3)]
    log = write_log(tmp_path / "log" / "requests-1.jsonl", entries)
    report = run_monitor(log, tmp_path / "report", baseline=baseline)
    assert check(report, "error_rate_5xx") | {"value": None} == {
        "metric": "error_rate_5xx",
        "value": None,
        "threshold": 0.01,
        "window": 1000,
        "samples": 105,
        "outcome": "alert",
    }
    assert check(report, "error_rate_5xx")["value"] == pytest.approx(2 / 105, abs=1e-6)
    assert check(report, "error_rate_4xx")["value"] == pytest.approx(3 / 105, abs=1e-6)
    assert check(report, "error_rate_4xx")["outcome"] == "ok"
    assert check(report, "latency_p50_ms")["value"] == pytest.approx(50.5)  # successful requests only
    assert check(report, "latency_p99_ms")["value"] == pytest.approx(99.01)
    assert check(report, "latency_p99_ms")["samples"] == 100
    assert report["drifting_features"] == [] and report["alert"] is True
    assert (
        "error_rate_5xx 0.01905 > 0.01 over the last 1000 requests (105 requests)" in report["alert_reasons"]
    )


def test_a_window_without_scored_images_is_judged_on_its_requests_only(tmp_path, baseline):
    refused = [request(START + timedelta(seconds=n), [], status=401, latency_ms=0.1) for n in range(120)]
    report = run_monitor(
        write_log(tmp_path / "log" / "requests-1.jsonl", refused), tmp_path / "r", baseline=baseline
    )
    measured = {
        entry["metric"]: (entry["value"], entry["samples"], entry["outcome"]) for entry in report["checks"]
    }
    assert measured["psi_mean_intensity"] == (None, 0, "insufficient_data")
    assert measured["latency_p99_ms"] == (None, 0, "insufficient_data")
    assert measured["error_rate_4xx"] == (1.0, 120, "alert") and measured["error_rate_5xx"] == (
        0.0,
        120,
        "ok",
    )
    assert report["summary"]["mean_confidence"] is None and report["drifting_features"] == []
    assert (tmp_path / "r" / "drift.png").read_bytes().startswith(b"\x89PNG")


def test_bad_lines_are_counted_and_skipped_and_rotated_files_are_read(tmp_path, baseline):
    images, labels = clean_traffic()
    entries = records(images, labels, START)
    write_log(tmp_path / "log" / "requests-7.1741942800000000000.jsonl", entries[:100])
    bad = ["not json", json.dumps({"schema_version": 1}), json.dumps(entries[100] | {"status": 700})]
    lines = "".join(json.dumps(entry) + "\n" for entry in entries[100:]) + "\n".join(bad) + "\n"
    (tmp_path / "log" / "requests-7.jsonl").write_text(lines + '{"schema_version": 1, "request_')
    report = run_monitor(tmp_path / "log", tmp_path / "report", baseline=baseline)
    assert report["log"]["files"] == 2 and report["log"]["lines"] == 203 and report["log"]["bad_lines"] == 3
    examples = report["log"]["bad_line_examples"]
    assert examples[0] == "requests-7.jsonl:101: not JSON"
    assert "requests-7.jsonl:102: field $ does not match the request_record schema" in examples[1]
    assert "requests-7.jsonl:103: field $.status" in examples[2]
    assert report["samples"]["requests"] == 200 and report["alert"] is False

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "requests-1.jsonl").write_text("\n".join(bad) + "\n")
    with pytest.raises(
        UserInputError, match=r"none of the 3 lines is a request record, e\.g\. requests-1\.jsonl:1"
    ):
        run_monitor(tmp_path / "bad", tmp_path / "none", baseline=baseline)


def test_model_version_keeps_only_that_versions_requests(tmp_path, baseline):
    images, labels = clean_traffic()
    entries = records(images[::2], labels[::2], START, version="1")  # every class in both halves
    entries += records(shifted(images[1::2]), labels[1::2], START + timedelta(hours=1), version="2")
    log = write_log(tmp_path / "log" / "requests-1.jsonl", entries)
    everything = run_monitor(log, tmp_path / "all", baseline=baseline)
    assert everything["model_versions"] == ["1", "2"] and everything["model_version_filter"] is None
    one = run_monitor(log, tmp_path / "one", baseline=baseline, model_version="1")
    assert one["model_versions"] == ["1"] and one["log"]["requests"] == 100 and one["alert"] is False
    two = run_monitor(log, tmp_path / "two", baseline=baseline, model_version="2")
    assert two["alert"] is True and two["model_versions"] == ["2"]
    with pytest.raises(
        UserInputError, match=r"no requests served by model version 3; the log has \['1', '2'\]"
    ):
        run_monitor(log, tmp_path / "three", baseline=baseline, model_version="3")


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, baseline):
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(*clean_traffic(), START))
    out = tmp_path / "report"
    with pytest.raises(ContractError, match=r"manifest\.json: file not found"):
        run_monitor(log, out, baseline=tmp_path / "nowhere")
    tampered = tmp_path / "tampered"
    shutil.copytree(baseline, tampered)
    statistics = json.loads((tampered / "baseline_statistics.json").read_text()) | {"count": 1}
    (tampered / "baseline_statistics.json").write_text(json.dumps(statistics))
    with pytest.raises(UserInputError, match="differs from the sha256 recorded"):
        run_monitor(log, out, baseline=tampered)
    with pytest.raises(UserInputError, match="request log folder not found"):
        run_monitor(tmp_path / "no-log", out, baseline=baseline)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "requests-1.jsonl").write_text("")
    with pytest.raises(UserInputError, match="no request records"):
        run_monitor(tmp_path / "empty", out, baseline=baseline)
    (tmp_path / "unknown.json").write_text(
        json.dumps({"schema_version": 1, "checks": [{"metric": "x", "threshold": 1}]})
    )
    with pytest.raises(ContractError, match=r"field \$.checks\[0\].metric"):
        run_monitor(log, out, baseline=baseline, thresholds=tmp_path / "unknown.json")
    twice = {"schema_version": 1, "checks": [{"metric": "prediction_tv", "threshold": 0.1}] * 2}
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(UserInputError, match="metric prediction_tv is listed twice"):
        run_monitor(log, out, baseline=baseline, thresholds=tmp_path / "twice.json")
    with pytest.raises(UserInputError, match="retrain_local needs retrain_data"):
        run_monitor(log, out, baseline=baseline, on_breach="retrain_local")
    assert not out.exists()
    (out / "old").mkdir(parents=True)
    with pytest.raises(UserInputError, match="already exists and is not an empty folder"):
        run_monitor(log, out, baseline=baseline)


def test_the_component_exits_2_with_one_clear_line(tmp_path, baseline, capfd):
    from mnist_mlops import cli

    (tmp_path / "log").mkdir()
    code = cli.main(
        [
            "monitor",
            "--requests",
            str(tmp_path / "log"),
            "--baseline",
            str(baseline),
            "--report",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    errors = capfd.readouterr().err.strip().splitlines()
    assert errors[-1].startswith("error: ") and errors[-1].endswith(
        "no request records (no non-empty *.jsonl lines); is the log set?"
    )
    assert not (tmp_path / "r").exists()


def test_retrain_local_records_a_failed_run(tmp_path, baseline, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images), labels, START))
    report = run_monitor(
        log,
        tmp_path / "report",
        baseline=baseline,
        on_breach="retrain_local",
        retrain_data=str(tmp_path / "no-such-data"),
        retrain_until="ingest",
        registry=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert report["alert"] is True
    run = report["retrain"]
    assert (run["on_breach"], run["status"], run["exit_code"]) == ("retrain_local", "failed", 1)
    assert (tmp_path / "runs" / run["run_id"] / "run.json").is_file()
    assert run["detail"].startswith("ingest failed")
    assert run["command"][-2:] == ["--until", "ingest"]
    assert "retrain failed: ingest failed" in capsys.readouterr().out


def test_retrain_aml_builds_a_valid_pipeline_job_on_the_new_data():
    job = retrain.aml_job("azureml://datastores/workspaceblobstore/paths/mnist-2025-03/")
    assert job.inputs["raw_data"].path == "azureml://datastores/workspaceblobstore/paths/mnist-2025-03/"
    assert list(job.jobs) == [node.name for node in aml_graph()]


def test_retrain_aml_without_a_workspace_fails_before_monitoring(tmp_path, baseline):
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(*clean_traffic(), START))
    with pytest.raises(
        UserInputError, match=r"on_breach=retrain_aml: .* missing subscription_id, resource_group, workspace"
    ):
        run_monitor(log, tmp_path / "report", baseline=baseline, on_breach="retrain_aml")
    assert not (tmp_path / "report").exists()


def test_retrain_aml_submits_on_a_breach_and_records_the_job_or_the_refusal(tmp_path, baseline, monkeypatch):
    from mnist_mlops import azure_identity

    client = RecordingMLClient()
    monkeypatch.setattr(azure_identity, "workspace_client", lambda *args, **kwargs: client)
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images), labels, START))
    quiet = write_log(tmp_path / "quiet" / "requests-1.jsonl", records(images, labels, START))
    calm = run_monitor(quiet, tmp_path / "calm", baseline=baseline, on_breach="retrain_aml", **WORKSPACE)
    assert calm["retrain"]["status"] == "not_triggered" and client.calls == []

    report = run_monitor(log, tmp_path / "report", baseline=baseline, on_breach="retrain_aml", **WORKSPACE)
    assert report["retrain"] | {"detail": None} == {
        "on_breach": "retrain_aml",
        "status": "submitted",
        "run_id": "job-1",
        "exit_code": None,
        "command": None,
        "detail": None,
    }
    assert report["retrain"]["detail"].startswith("https://ml.azure.com/runs/job-1")
    assert client.calls == [("jobs.create_or_update", "mnist-mlops-retrain")]  # submitted, not awaited

    def refuse(job, **kwargs):
        raise PermissionError("the identity may not create jobs in ws")

    monkeypatch.setattr(client.jobs, "create_or_update", refuse)
    refused = run_monitor(log, tmp_path / "refused", baseline=baseline, on_breach="retrain_aml", **WORKSPACE)
    assert refused["retrain"]["status"] == "failed" and refused["retrain"]["run_id"] is None
    assert refused["retrain"]["detail"] == "PermissionError: the identity may not create jobs in ws"


HOOKS = '''
RECEIVED = []


def page_on_call(settings):
    """A handler of a user's own: made from the settings, then given the request on a breach."""
    if settings.data is None:
        from mnist_mlops.errors import UserInputError

        raise UserInputError("page_on_call needs retrain_data")

    def page(request):
        RECEIVED.append(request)
        return {"status": "submitted", "run_id": "ticket-7", "detail": f"paged about {request['data']}"}

    return page
'''


@pytest.fixture
def hooks(tmp_path, monkeypatch) -> Iterator[str]:
    """A user's module of retrain handlers, importable as `retrain_hooks`; its handler's reference."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "retrain_hooks.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path / "hooks"))
    yield "retrain_hooks:page_on_call"
    sys.modules.pop("retrain_hooks", None)


def test_an_alert_writes_the_retrain_request_whoever_acts_on_it(tmp_path, baseline):
    images, labels = clean_traffic()
    calm = run_monitor(
        write_log(tmp_path / "calm" / "r.jsonl", records(images, labels, START)),
        tmp_path / "c",
        baseline=baseline,
    )
    assert calm["alert"] is False and not (tmp_path / "c" / "retrain_request.json").exists()

    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images), labels, START))
    report = run_monitor(log, tmp_path / "report", baseline=baseline, retrain_data="new-data.tar.gz")
    request = contracts.read_json(tmp_path / "report" / "retrain_request.json", "retrain_request")
    alerted = [entry for entry in report["checks"] if entry["outcome"] == "alert"]
    assert [entry["metric"] for entry in request["breached_checks"]] == [entry["metric"] for entry in alerted]
    assert request["breached_checks"][0] == {key: alerted[0][key] for key in request["breached_checks"][0]}
    assert (request["on_breach"], request["data"], request["model_versions"]) == (
        "alert",
        "new-data.tar.gz",
        ["1"],
    )
    assert request["drifting_features"] == report["drifting_features"] == ["mean_intensity", "ink_fraction"]
    assert request["reasons"] == report["alert_reasons"] and request["time_range"] == report["time_range"]
    assert request["requested_at"] == report["generated_at"]
    assert request["baseline_dataset_version"] == report["baseline"]["dataset_version"]
    assert report["retrain"]["status"] == "not_triggered"  # alert hands it to nobody


def test_a_handler_of_your_own_receives_the_schema_valid_request(tmp_path, baseline, hooks):
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images), labels, START))
    run_monitor(log, tmp_path / "report", baseline=baseline, retrain_data="new-data.tar.gz")
    written = contracts.read_json(tmp_path / "report" / "retrain_request.json", "retrain_request")

    with pytest.raises(UserInputError, match="page_on_call needs retrain_data"):
        retraining.handler_for(hooks, retraining.RetrainSettings())
    handler = retraining.handler_for(hooks, retraining.RetrainSettings(data="new-data.tar.gz"))
    assert retraining.hand_over(hooks, handler, written) == {
        "on_breach": hooks,
        "status": "submitted",
        "run_id": "ticket-7",
        "exit_code": None,
        "command": None,
        "detail": "paged about new-data.tar.gz",
    }
    received = sys.modules["retrain_hooks"].RECEIVED
    assert received == [written]


def test_the_monitor_hands_a_breach_to_a_handler_of_your_own(tmp_path, baseline, hooks):
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(shifted(images), labels, START))
    with pytest.raises(UserInputError, match="page_on_call needs retrain_data"):
        run_monitor(log, tmp_path / "refused", baseline=baseline, on_breach=hooks)
    assert not (tmp_path / "refused").exists()
    report = run_monitor(
        log, tmp_path / "report", baseline=baseline, on_breach=hooks, retrain_data="new.tar.gz"
    )
    request = contracts.read_json(tmp_path / "report" / "retrain_request.json", "retrain_request")
    received = sys.modules["retrain_hooks"].RECEIVED
    assert received == [request] and request["on_breach"] == hooks
    assert (report["retrain"]["status"], report["retrain"]["run_id"]) == ("submitted", "ticket-7")


@pytest.mark.parametrize(
    ("on_breach", "message"),
    [
        ("retrain_cloud", "expected one of alert, retrain_local, retrain_aml or a package.module:function"),
        ("no_such_package_here.hooks:act", r"cannot import no_such_package_here\.hooks"),
        ("json:no_such_handler", "json has no function no_such_handler"),
    ],
)
def test_an_on_breach_that_names_no_handler_is_refused_before_any_work(
    tmp_path, baseline, on_breach, message
):
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(*clean_traffic(), START))
    with pytest.raises(UserInputError, match=rf"on_breach '{on_breach}': {message}"):
        run_monitor(log, tmp_path / "report", baseline=baseline, on_breach=on_breach)
    assert not (tmp_path / "report").exists()


def test_a_handler_that_fails_or_answers_nonsense_is_recorded_as_failed():
    def crash(request):
        raise RuntimeError("queue full\nretry later")

    crashed = retraining.hand_over("hooks:crash", crash, {})
    assert (crashed["status"], crashed["detail"]) == ("failed", "RuntimeError: queue full")
    odd = retraining.hand_over("hooks:odd", lambda request: {"state": "done"}, {})
    assert odd["status"] == "failed" and odd["run_id"] is None
    assert odd["detail"].startswith(
        "the handler returned {'state': 'done'}, not a dict with status and any of"
    )
    off_schema = retraining.hand_over("hooks:off", lambda request: {"status": "done", "run_id": 42}, {})
    assert off_schema["status"] == "failed" and off_schema["run_id"] is None
    assert off_schema["detail"].startswith("the handler returned {'status': 'done', 'run_id': 42}: $.")
    assert retraining._record_problem(off_schema) is None  # what the report records is always valid


def test_the_monitor_imports_no_orchestrator():
    """Components -> shared runtime only: the pipelines, Azure ML jobs and CLI come in through a handler."""
    probe = (
        "import sys\n"
        "import mnist_mlops.components.monitor, mnist_mlops.components.monitor.executor\n"
        "from mnist_mlops import retraining\n"
        "retraining.handler_for('alert', retraining.RetrainSettings())\n"
        "layers = ('mnist_mlops.pipelines', 'mnist_mlops.azure_jobs', 'mnist_mlops.cli')\n"
        "print(sorted(name for name in sys.modules if name.startswith(layers)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.usefixtures("rendered_page")  # installs Debian's chromium when it is missing
def test_an_alert_page_shows_each_check_the_plot_and_the_retrain_request(tmp_path, baseline):
    images, labels = clean_traffic()
    entries = records(images, labels, START) + records(shifted(images), labels, START + timedelta(hours=1))
    log = write_log(tmp_path / "log" / "requests-1.jsonl", entries)
    (tmp_path / "recent.json").write_text(json.dumps({"schema_version": 1, "window": 200, "checks": []}))
    report = run_monitor(log, tmp_path / "report", baseline=baseline, thresholds=tmp_path / "recent.json")
    text = (tmp_path / "report" / PAGE_FILE).read_text()
    assert loads_nothing(ParsedPage(text)) and "://" not in text
    assert text.count("data:image/png;base64,") == 1  # drift.png
    for check in report["checks"]:
        assert f'<td>{check["metric"]}</td><td><span class="badge' in text
    for reason in report["alert_reasons"]:
        assert reason.replace(">", "&gt;") in text
    assert "retrain_request.json" in text and "mean_intensity, ink_fraction" in text
    dom, messages = console_of(tmp_path / "report" / PAGE_FILE, tmp_path / "profile")
    assert messages == [] and "Drift over time" in dom


def test_a_quiet_page_says_nothing_alerted(tmp_path, baseline):
    images, labels = clean_traffic()
    log = write_log(tmp_path / "log" / "requests-1.jsonl", records(images, labels, START))
    report = run_monitor(log, tmp_path / "report", baseline=baseline)
    text = (tmp_path / "report" / PAGE_FILE).read_text()
    assert report["alert"] is False
    assert "no check alerted" in text and "no retrain request: nothing alerted" in text
