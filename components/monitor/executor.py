"""monitor: compare what production serves with what the model was trained on, and act on a breach.

Framework-free interface. Inputs: the scoring server's request log folder (every ``*.jsonl`` below it,
one `request_record` per line; lines that are not are counted and skipped, a line still being written
at the end of a file is left for the next run) and the baseline: the preprocess output of the serving
model's training data (its `baseline_statistics.json`, found and checked through its manifest) or, by
default, that model's own reference bundle in the registry (`mnist_mlops.references`): the version that
served the newest request, so the traffic is compared with the data the serving model was trained on.

When that version was promoted with an accepted data shift (its `data_shift` tags, written by register
from the blessing), the traffic is also compared with the training data of the version it shifted from:
if clients still send what that older data looked like, the alert says the clients did not move with
the data, which is the risk that was accepted.

Each check measures one metric over the most recent N requests (its window) and alerts above its
threshold: input drift of mean intensity and ink fraction (PSI and binned KS distance against the
baseline's histogram), prediction drift (total variation between served classes and the training
class priors, over the baseline's classes; the report shows both shares by class name), the share of
low-confidence predictions, the shares of 5xx and of 4xx responses, and p50/p99 latency of successful
requests. Fewer than `min_samples` images (requests, for error rates and latency) is
"insufficient_data", never an alert. On an alert the report carries the reasons, a retrain
request (schema `retrain_request`) is written beside it, and the request is handed to the handler
`on_breach` names (`mnist_mlops.retraining`: run the training pipeline here, submit it to Azure ML, or a
user's own `package.module:function`); the monitor imports no orchestrator itself.

Output folder (staged, renamed into place whole): ``monitor_report.json``, ``drift.png``,
``report.html`` (the same as a self-contained page) and, on an alert, ``retrain_request.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import contracts, data_shift, drift, features, references, retraining
from mnist_mlops.atomic import staged_dir
from mnist_mlops.baselines import read_baseline
from mnist_mlops.components.monitor import plot
from mnist_mlops.components.monitor.page import PAGE_FILE, drift_page
from mnist_mlops.dataset import classes_of
from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import checked
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import SHIFT_REFERENCE_VERSION_TAG, SHIFT_TAG, client, registry_uri, sqlite_file
from mnist_mlops.serving.request_log import read_records

COMPONENT_NAME = "mnist_mlops_monitor"
FEATURES = tuple(features.PER_IMAGE)
DEFAULT_WINDOW = 1000
LOW_CONFIDENCE = 0.9
"""A prediction below this confidence counts as low-confidence."""
DEFAULT_THRESHOLDS = {
    "psi_mean_intensity": 0.2,
    "psi_ink_fraction": 0.2,
    "ks_mean_intensity": 0.2,
    "ks_ink_fraction": 0.2,
    "prediction_tv": 0.15,
    "low_confidence_share": 0.2,
    "error_rate_5xx": 0.01,
    "error_rate_4xx": 0.05,
    "latency_p50_ms": 20.0,
    "latency_p99_ms": 50.0,
}
"""Alert above these. PSI 0.2 is the customary "significant shift"; the rest are starting points to
tune per endpoint with a thresholds file."""
REQUEST_METRICS = {"error_rate_5xx", "error_rate_4xx", "latency_p50_ms", "latency_p99_ms"}
"""Measured over requests; every other metric over the images of the window."""
INPUT_DRIFT_METRICS = {f"{measure}_{name}" for measure in ("psi", "ks") for name in FEATURES}
NEARER = 10
"""Traffic this many times nearer (summed PSI) the older training data than the serving model's has not
moved with the data, even a little beyond the drift limits of that older data."""
REPORT_FILE = "monitor_report.json"
PLOT_FILE = "drift.png"
REQUEST_FILE = "retrain_request.json"
BREACH_FIELDS = ("metric", "value", "threshold", "window", "samples")
"""What a retrain request keeps of each breached check."""


@dataclass(frozen=True)
class Request:
    time: datetime
    model_name: str
    model_version: str
    status: int
    latency_ms: float
    images: list[dict[str, Any]]


@checked("monitor")
def run_monitor(
    requests: str | Path,
    report: str | Path,
    *,
    baseline: str | Path | None = None,
    thresholds: str | Path | None = None,
    model_version: str | None = None,
    min_samples: int = 100,
    on_breach: str = retraining.ALERT_ONLY,
    retrain_data: str | None = None,
    retrain_until: str | None = None,
    registry: str | None = None,
    subscription_id: str | None = None,
    resource_group: str | None = None,
    workspace: str | None = None,
) -> dict[str, Any]:
    """Check the recent traffic, hand a breach to `on_breach`'s handler, write the report; returns it."""
    settings = retraining.RetrainSettings(
        retrain_data, retrain_until, registry, subscription_id, resource_group, workspace
    )
    handler = retraining.handler_for(on_breach, settings)  # refuses what it could not act on, before any work
    rules = read_thresholds(Path(thresholds) if thresholds else None)
    served, log = read_requests(Path(requests), model_version)
    accepted_shift = None
    if baseline is not None:
        statistics = read_baseline(Path(baseline))
        classes = classes_of(contracts.read_json(Path(baseline) / "manifest.json", "preprocessed_manifest"))
        origin = {"source": str(baseline), "model_version": None}
    else:
        uri = registry_uri(registry)
        newest = served[-1]
        statistics, classes, origin = registry_baseline(uri, newest.model_name, newest.model_version)
        drift_window = max(window for metric, (_, window) in rules.items() if metric in INPUT_DRIFT_METRICS)
        limits = {name: rules[f"psi_{name}"][0] for name in FEATURES}
        accepted_shift = check_accepted_shift(
            uri,
            newest.model_name,
            newest.model_version,
            served[-drift_window:],
            Path(requests),
            min_samples,
            limits,
            statistics,
        )
    print(f"baseline: {origin['source']}", flush=True)
    with staged_dir(Path(report)) as stage:
        measured: dict[int, dict[str, tuple[float | None, int]]] = {}
        checks = []
        for metric, (threshold, window) in rules.items():
            if window not in measured:
                measured[window] = measure(served[-window:], statistics)
            value, samples = measured[window][metric]
            checks.append(_check(metric, value, threshold, window, samples, min_samples))
        widest = served[-max(window for _, window in rules.values()) :]
        document = {
            "schema_version": 1,
            "generated_at": utc_iso(datetime.now(UTC)),
            "baseline": {
                "dataset_version": statistics["dataset_version"],
                "count": statistics["count"],
                **origin,
            },
            "model_version_filter": model_version,
            "model_versions": sorted({request.model_version for request in widest}),
            "log": log,
            "time_range": {"from": utc_iso(widest[0].time), "to": utc_iso(widest[-1].time)},
            "samples": {"requests": len(widest), "images": sum(len(r.images) for r in widest)},
            "summary": _summary(widest, statistics, classes),
            "checks": checks,
            **_verdict(checks),
            "accepted_shift": accepted_shift,
            "retrain": retraining.not_triggered(on_breach),
        }
        if document["drifting_features"] and accepted_shift and accepted_shift["clients_moved"] is False:
            document["alert_reasons"].append(
                f"clients did not move with the data: {accepted_shift['reason']}"
            )
        plot.drift_over_time(
            [request.time for request in served for _ in request.images],
            {name: np.array([i[name] for r in served for i in r.images]) for name in FEATURES},
            statistics["features"],
            {name: rules[f"psi_{name}"][0] for name in FEATURES},
            stage / PLOT_FILE,
        )
        _announce(document)
        breach_request = None
        if document["alert"]:
            breach_request = retrain_request(document, on_breach, retrain_data)
            contracts.write_json(stage / REQUEST_FILE, breach_request, "retrain_request")
            if handler is not None:
                document["retrain"] = retraining.hand_over(on_breach, handler, breach_request)
        if document["retrain"]["status"] != "not_triggered":
            print(f"retrain {document['retrain']['status']}: {document['retrain']['detail']}", flush=True)
        contracts.write_json(stage / REPORT_FILE, document, "monitor_report")
        (stage / PAGE_FILE).write_text(
            drift_page(document, stage / PLOT_FILE, breach_request, REQUEST_FILE), encoding="utf-8"
        )
    return document


def retrain_request(report: dict[str, Any], on_breach: str, data: str | None) -> dict[str, Any]:
    """The retrain request (schema `retrain_request`) for an alerting report: why, for which model
    versions and training data, on what new data, and when."""
    breached = [check for check in report["checks"] if check["outcome"] == "alert"]
    return {
        "schema_version": 1,
        "requested_at": report["generated_at"],
        "on_breach": on_breach,
        "model_versions": report["model_versions"],
        "baseline_dataset_version": report["baseline"]["dataset_version"],
        "data": data,
        "time_range": report["time_range"],
        "breached_checks": [{key: check[key] for key in BREACH_FIELDS} for check in breached],
        "drifting_features": report["drifting_features"],
        "reasons": report["alert_reasons"],
    }


def registry_baseline(uri: str, name: str, version: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Version `version`'s own training baseline, from its reference bundle in the registry, its class
    names and where it came from; a version without a readable bundle is a UserInputError that says
    what to pass."""
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        raise UserInputError(
            f"no registry at {database} to find {name} v{version}'s training data in;"
            " pass --registry, or --baseline (the preprocess output it was trained on)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "reference"
        fetched = references.fetch(uri, name, version, folder)
        if not fetched["found"]:
            raise UserInputError(
                f"no baseline for {name} v{version}: {fetched['reason']};"
                " pass --baseline (the preprocess output it was trained on)"
            )
        manifest, statistics = references.read_bundle(folder)
    origin = {
        "source": f"registry: {name} v{version}'s reference ({fetched['uri']})",
        "model_version": version,
    }
    return statistics, classes_of(manifest), origin


def check_accepted_shift(
    uri: str,
    name: str,
    version: str,
    window: list[Request],
    log_folder: Path,
    min_samples: int,
    limits: dict[str, float],
    serving: dict[str, Any],
) -> dict[str, Any] | None:
    """When `version` (trained on `serving`, its baseline) was promoted with an accepted data shift:
    whether the clients moved with the data, i.e. whether `window`'s traffic differs (PSI above `limits`,
    per feature) from the training data of the version it shifted from, unless it is still `NEARER` times
    nearer that data than `serving` (summed PSI): a class mix alone moves the features a little, and is
    not a move of the clients.
    None when no shift was accepted; a reference that cannot be read is a warning, never a verdict."""
    tags = client(uri).get_model_version(name, version).tags or {}
    if tags.get(SHIFT_TAG) != "accepted":
        return None
    reference_version = tags.get(SHIFT_REFERENCE_VERSION_TAG, "-")
    result = {
        "model_version": version,
        "reference_version": None if reference_version == "-" else reference_version,
        "reference_dataset_version": None,
        "findings": [],
        "clients_moved": None,
    }
    images = [image for request in window for image in request.images]
    if result["reference_version"] is None:
        return result | {"reason": f"v{version}'s accepted shift names no version it shifted from"}
    if len(images) < min_samples:
        return result | {
            "reason": f"{len(images)} images in the window, fewer than {min_samples}: too few to tell"
            f" whether clients moved from {name} v{reference_version}'s training data"
        }
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "reference"
        fetched = references.fetch(uri, name, reference_version, folder)
        if not fetched["found"]:
            print(
                f"warning: cannot tell whether clients moved with the data: {fetched['reason']}",
                file=sys.stderr,
                flush=True,
            )
            return result | {"reason": fetched["reason"]}
        _, training = references.read_bundle(folder)
    source = {
        "folder": str(log_folder),
        "requests": len(window),
        "window": len(window),
        "time_range": {"from": utc_iso(window[0].time), "to": utc_iso(window[-1].time)},
    }
    summary = data_shift.traffic_summary(images, source)
    findings = data_shift.compare_with_traffic(summary, training, limits)
    from_then = sum(finding["value"] for finding in findings)
    from_now = sum(finding["value"] for finding in data_shift.compare_with_traffic(summary, serving, limits))
    moved = bool(data_shift.shifted(findings)) and from_then * NEARER >= from_now
    evidence = (
        f"dataset {fetched['dataset_version'][:12]}; {', '.join(map(data_shift.describe, findings))};"
        f" summed PSI {from_then:.3g} from it against {from_now:.3g} from v{version}'s"
    )
    reason = (
        f"traffic differs from {name} v{reference_version}'s training data ({evidence}), as does the data"
        f" v{version} was trained on (shift accepted at evaluate)"
        if moved
        else f"traffic is like {name} v{reference_version}'s training data ({evidence}) but v{version} was"
        " trained on data shifted from it (accepted at evaluate)"
    )
    return result | {
        "reference_dataset_version": fetched["dataset_version"],
        "findings": findings,
        "clients_moved": moved,
        "reason": reason,
    }


def read_thresholds(path: Path | None) -> dict[str, tuple[float, int]]:
    """(threshold, window) per metric: the built-in rules, with those the file lists replaced."""
    if path is None:
        return {metric: (threshold, DEFAULT_WINDOW) for metric, threshold in DEFAULT_THRESHOLDS.items()}
    document = contracts.read_json(path, "monitor_thresholds")
    window = document.get("window", DEFAULT_WINDOW)
    rules = {metric: (threshold, window) for metric, threshold in DEFAULT_THRESHOLDS.items()}
    listed: set[str] = set()
    for check in document["checks"]:
        if check["metric"] in listed:
            raise UserInputError(f"{path}: metric {check['metric']} is listed twice")
        listed.add(check["metric"])
        rules[check["metric"]] = (float(check["threshold"]), check.get("window", window))
    return rules


def read_requests(folder: Path, model_version: str | None) -> tuple[list[Request], dict[str, Any]]:
    """Every valid record below `folder` (optionally of one model version), oldest first; what was read."""
    if not folder.is_dir():
        raise UserInputError(f"{folder}: request log folder not found")
    records, log = read_records(folder)
    if not log["lines"]:
        raise UserInputError(f"{folder}: no request records (no non-empty *.jsonl lines); is the log set?")
    if not records:
        example = log["bad_line_examples"][0]
        raise UserInputError(
            f"{folder}: none of the {log['lines']} lines is a request record, e.g. {example}"
        )
    requests = [
        Request(
            entry["time"],
            entry["model_name"],
            entry["model_version"],
            entry["status"],
            entry["latency_ms"],
            entry["images"],
        )
        for entry in records
    ]
    if model_version is not None:
        versions = sorted({request.model_version for request in requests})
        requests = [request for request in requests if request.model_version == model_version]
        if not requests:
            raise UserInputError(
                f"{folder}: no requests served by model version {model_version}; the log has {versions}"
            )
    log["requests"] = len(requests)
    if log["bad_lines"]:
        print(
            f"skipped {log['bad_lines']} of {log['lines']} log lines that are not request records,"
            f" e.g. {log['bad_line_examples'][0]}"
        )
    return requests, log


def measure(requests: list[Request], baseline: dict[str, Any]) -> dict[str, tuple[float | None, int]]:
    """(value, samples) of every metric over `requests`; value None when there is nothing to measure."""
    images = [image for request in requests for image in request.images]
    values: dict[str, tuple[float | None, int]] = {}
    for name in FEATURES:
        served = np.array([image[name] for image in images], dtype=np.float64)
        reference = baseline["features"][name]
        fractions = drift.binned_fractions(served, reference["bin_edges"])
        values[f"psi_{name}"] = (
            drift.psi(fractions, reference["fractions"]) if images else None,
            len(images),
        )
        values[f"ks_{name}"] = (
            drift.ks_distance(fractions, reference["fractions"]) if images else None,
            len(images),
        )
    classes = np.array([image["class"] for image in images], dtype=np.int64)
    confidence = np.array([image["confidence"] for image in images], dtype=np.float64)
    values["prediction_tv"] = (
        drift.prediction_distance(classes, baseline["class_priors"]) if images else None,
        len(images),
    )
    values["low_confidence_share"] = (
        float((confidence < LOW_CONFIDENCE).mean()) if images else None,
        len(images),
    )
    statuses = np.array([request.status for request in requests])
    values["error_rate_5xx"] = (float((statuses >= 500).mean()), len(requests))
    values["error_rate_4xx"] = (float(((statuses >= 400) & (statuses < 500)).mean()), len(requests))
    latencies = [request.latency_ms for request in requests if 200 <= request.status < 300]
    for name, percentile in (("latency_p50_ms", 50), ("latency_p99_ms", 99)):
        value = float(np.percentile(latencies, percentile)) if latencies else None
        values[name] = (value, len(latencies))
    return values


def _check(
    metric: str, value: float | None, threshold: float, window: int, samples: int, min_samples: int
) -> dict[str, Any]:
    if samples < min_samples or value is None:
        outcome = "insufficient_data"
    else:
        outcome = "alert" if value > threshold else "ok"
    return {
        "metric": metric,
        "value": None if value is None else round(value, 6),
        "threshold": threshold,
        "window": window,
        "samples": samples,
        "outcome": outcome,
    }


def _verdict(checks: list[dict[str, Any]]) -> dict[str, Any]:
    alerts = [check for check in checks if check["outcome"] == "alert"]
    reasons = [
        f"{check['metric']} {check['value']:.4g} > {check['threshold']:g} over the last {check['window']}"
        f" requests ({check['samples']} {'requests' if check['metric'] in REQUEST_METRICS else 'images'})"
        for check in alerts
    ]
    drifting = [
        name for name in FEATURES if any(check["metric"] in (f"psi_{name}", f"ks_{name}") for check in alerts)
    ]
    return {"alert": bool(alerts), "drifting_features": drifting, "alert_reasons": reasons}


def _summary(requests: list[Request], baseline: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    images = [image for request in requests for image in request.images]

    def mean(name: str) -> float | None:
        return round(float(np.mean([image[name] for image in images])), 6) if images else None

    served = np.array([image["class"] for image in images], dtype=np.int64)
    shares = (np.bincount(served, minlength=len(classes)) / len(images)).round(6).tolist() if images else None
    return {
        name: {"served": mean(name), "baseline": baseline["features"][name]["mean"]} for name in FEATURES
    } | {
        "mean_confidence": mean("confidence"),
        "low_confidence_below": LOW_CONFIDENCE,
        "classes": {
            name: {"served": None if shares is None else shares[label], "baseline": prior}
            for label, (name, prior) in enumerate(zip(classes, baseline["class_priors"], strict=True))
        },
    }


def _announce(report: dict[str, Any]) -> None:
    """The alert record on one line (for log-based alerting), or a one-line all-clear."""
    if report["alert"]:
        record = {key: report[key] for key in ("alert", "drifting_features", "alert_reasons", "time_range")}
        print(f"ALERT {json.dumps(record | {'model_versions': report['model_versions']})}", flush=True)
        return
    short = [check["metric"] for check in report["checks"] if check["outcome"] == "insufficient_data"]
    note = f"; insufficient data for {', '.join(short)}" if short else ""
    print(f"no alert over {report['samples']['requests']} requests{note}", flush=True)
