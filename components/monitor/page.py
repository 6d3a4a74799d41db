"""report.html: the monitor's report as a page a person opens with no network (`mnist_mlops.html_report`):
the verdict, every check's value against its threshold, the drift plot, the served traffic against the
baseline, and what the breach triggered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_mlops import features
from mnist_mlops.html_report import Markup, Section, badge, bullets, facts, image, note, page, table

PAGE_FILE = "report.html"


def drift_page(report: dict[str, Any], plot: Path, request: dict[str, Any] | None, request_file: str) -> str:
    """The page of `report` (schema monitor_report) with the drift plot at `plot` and the retrain request
    written beside it as `request_file`, if any."""
    verdict = "alert" if report["alert"] else "ok"
    summary = facts(
        [
            ("verdict", badge(verdict)),
            ("generated", report["generated_at"]),
            ("traffic", f"{report['time_range']['from']} to {report['time_range']['to']}"),
            ("requests", report["samples"]["requests"]),
            ("images", report["samples"]["images"]),
            ("model versions", ", ".join(report["model_versions"])),
            (
                "baseline",
                f"{report['baseline']['source']} (dataset {report['baseline']['dataset_version'][:12]})",
            ),
        ]
    )
    checks = [
        (
            check["metric"],
            badge(check["outcome"]),
            check["value"],
            check["threshold"],
            check["window"],
            check["samples"],
        )
        for check in report["checks"]
    ]
    sections = [
        Section(
            "Checks",
            [
                bullets(report["alert_reasons"]) if report["alert"] else note("no check alerted"),
                table(("metric", "outcome", "value", "threshold", "window (requests)", "samples"), checks),
            ],
        ),
        Section("Drift over time", [image(plot, "drift over time")]),
        Section("Traffic against the baseline", _traffic(report["summary"])),
        Section("Retraining", _retraining(report, request, request_file)),
    ]
    if report["accepted_shift"] is not None:
        shift = report["accepted_shift"]
        moved = {True: "yes", False: "no", None: "cannot tell"}[shift["clients_moved"]]
        sections.insert(
            2, Section("Accepted data shift", [facts([("clients moved", moved), ("why", shift["reason"])])])
        )
    log = report["log"]
    read = f"{log['lines']} lines in {log['files']} files, {log['requests']} requests kept"
    skipped = (
        [f"{log['bad_lines']} lines skipped, e.g.:", bullets(log["bad_line_examples"])]
        if log["bad_lines"]
        else []
    )
    sections.append(Section("Request log", [facts([("read", read)]), *skipped]))
    return page("Monitor report", summary, sections)


def _traffic(summary: dict[str, Any]) -> list[Markup]:
    means = [(name, summary[name]["served"], summary[name]["baseline"]) for name in features.PER_IMAGE]
    classes = [(name, shares["served"], shares["baseline"]) for name, shares in summary["classes"].items()]
    return [
        table(("feature (mean)", "served", "baseline"), means),
        facts(
            [
                ("mean confidence", summary["mean_confidence"]),
                ("low confidence", f"below {summary['low_confidence_below']}"),
            ]
        ),
        table(("class", "share served", "share in training"), classes),
    ]


def _retraining(report: dict[str, Any], request: dict[str, Any] | None, request_file: str) -> list[Markup]:
    retrain = report["retrain"]
    handed = facts(
        [
            ("on breach", retrain["on_breach"]),
            ("status", badge(retrain["status"])),
            ("run", retrain["run_id"]),
            ("detail", retrain["detail"]),
        ]
    )
    if request is None:
        return [handed, note("no retrain request: nothing alerted")]
    return [
        handed,
        facts(
            [
                ("retrain request", request_file),
                ("data", request["data"]),
                ("trained on dataset", request["baseline_dataset_version"]),
                ("drifting features", ", ".join(request["drifting_features"]) or None),
            ]
        ),
    ]
