"""`runs/<id>/report.html`: a pipeline run on one page a person opens in any browser, with no network.

The graph with each node's status, time and cache hit; the data report; the training curves; the
confusion matrix and misclassified grid; the blessing with its reasons beside the champion's figures; the
lineage. Everything is read from the run folder (run.json and what its nodes wrote there), so the page can
be written again for any run folder, an older one or one copied from another machine (`mnist-mlops report`).
A part the run never produced (stopped by --until, a failed node, a declined challenger) says why it is
missing instead of failing the page; the lineage says so too when the registry cannot be asked.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.artifacts import artifact_of
from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import UserInputError
from mnist_mlops.html_report import (
    GraphNode,
    Markup,
    Section,
    badge,
    bullets,
    element,
    facts,
    graph,
    image,
    join,
    note,
    page,
    paragraph,
    preformatted,
    table,
)
from mnist_mlops.pipelines.graph import Ref, training_pipeline
from mnist_mlops.ports import load_spec
from mnist_mlops.serving.lineage import read_run_record, render, trace

REPORT_FILE = "report.html"
NOT_RUN = "not run"
EVALUATION_REPORT = "evaluation_report.json"
"""The document in evaluate's `evaluation` folder (the other documents are file outputs of their own)."""


@cache
def _producers() -> dict[str, str]:
    """Output port -> the stage whose node writes it, from the graph and the specs."""
    return {
        port: node.component
        for node in training_pipeline({}, None)
        for port in load_spec(node.component)["outputs"]
    }


def write_run_report(run_dir: Path, *, registry: str | None = None) -> Path:
    """Write `run_dir`/report.html from the run folder; returns its path. `registry`: where the lineage
    asks about the run's model (default: the registry its registration names)."""
    run = _Run(Path(run_dir), read_run_record(Path(run_dir)))
    sections = [
        Section("Graph", _graph_section(run)),
        Section("Data", _data_section(run)),
        Section("Training", _training_section(run)),
        Section("Evaluation", _evaluation_section(run)),
        Section("Blessing", _blessing_section(run)),
        Section("Lineage", _lineage_section(run, registry)),
    ]
    record = run.record
    tracking = record.get("tracking")
    summary = facts(
        [
            ("status", badge(record["status"])),
            ("outcome", record["outcome"]),
            ("pipeline", record["pipeline"]),
            ("started", record["started_at"]),
            ("finished", record["finished_at"]),
            ("run folder", str(run.folder.resolve())),
            ("MLflow run", f"{tracking['run_id']} in {tracking['uri']}" if tracking else "not tracked"),
        ]
    )
    path = run.folder / REPORT_FILE
    atomic_write_text(path, page(f"Run {record['run_id']}", summary, sections))
    return path


class _Run:
    """A run folder and its record, with its nodes' outputs found in the folder itself (run.json names
    them where the run was started, which need not be here)."""

    def __init__(self, folder: Path, record: dict[str, Any]) -> None:
        self.folder = folder
        self.record = record
        self.outputs: dict[str, Path] = {}
        for node in record["nodes"]:
            for port, output in node["outputs"].items():
                self.outputs[port] = folder / node["name"] / Path(output["path"]).name

    def document(self, port: str) -> tuple[dict[str, Any] | None, Markup | None]:
        """The document output `port` holds (its artifact's schema), validated, or None and a note
        saying why it is missing."""
        schema = artifact_of(_producers()[port], port)
        if port not in self.outputs:
            return None, self.missing(port)
        path = self.outputs[port]
        path = path / EVALUATION_REPORT if schema == "evaluation_report" else path
        try:
            return contracts.read_json(path, schema), None
        except UserInputError as error:
            return None, note(f"{schema} cannot be read: {error}")

    def missing(self, port: str) -> Markup:
        """Why the run has no `port` output: its node failed, or the run never reached it."""
        stage = _producers()[port]
        nodes = [node for node in self.record["nodes"] if node["component"] == f"mnist_mlops_{stage}"]
        if nodes and nodes[-1]["status"] == "failed":
            return note(f"not available: {nodes[-1]['name']} failed (log: {nodes[-1]['log']})")
        if nodes:
            return note(f"not available: {nodes[-1]['name']} wrote no {port}")
        ended = "stopped" if self.record["status"] == "failed" else "ended"
        return note(f"not available: the run {ended} before {stage} ({self.record['outcome']})")


def _graph_section(run: _Run) -> list[Markup]:
    entries = run.record["nodes"]
    names = [entry["name"] for entry in entries]
    edges = {
        (Path(given["path"]).parent.name, entry["name"])
        for entry in entries
        for given in entry["inputs"].values()
        if Path(given["path"]).parent.parent.name == run.record["run_id"]
    }
    boxes = [GraphNode(entry["name"], entry["status"], _detail(entry), _tooltip(entry)) for entry in entries]
    planned = training_pipeline({})
    if names != [node.name for node in planned] and names == [node.name for node in planned][: len(names)]:
        for node in planned[len(names) :]:
            boxes.append(GraphNode(node.name, NOT_RUN, "", f"{node.component}: the run ended before it"))
            edges |= {(value.node, node.name) for value in node.inputs.values() if isinstance(value, Ref)}
    rows = [
        (
            entry["name"],
            f"{entry['component']} {entry['component_version']}",
            badge(entry["status"]),
            f"{entry['seconds']:.1f}",
            _cache(entry),
            entry["log"],
        )
        for entry in entries
    ]
    rows += [(box.name, "-", badge(NOT_RUN), None, None, None) for box in boxes[len(entries) :]]
    headers = ("node", "component", "status", "seconds", "cache", "log")
    return [graph(boxes, edges), table(headers, rows)]


def _detail(entry: dict[str, Any]) -> str:
    if "sweep" in entry:
        return f"{len(entry['sweep']['trials'])} trials, {entry['seconds']:.1f} s"
    if entry["status"] == "cached":
        return "cache hit" + (" (by rule)" if "reused_because" in entry else "")
    return f"{entry['seconds']:.1f} s" if entry["status"] in ("done", "failed") else ""


def _tooltip(entry: dict[str, Any]) -> str:
    key = (entry["cache_key"] or "-")[:12]
    return "\n".join(
        [f"{entry['component']} {entry['component_version']}", f"cache key {key}"]
        + ([entry["reused_because"]] if "reused_because" in entry else [])
    )


def _cache(entry: dict[str, Any]) -> str:
    key = (entry["cache_key"] or "-")[:12]
    if entry["status"] != "cached":
        return f"miss, stored as {key}" if entry["status"] == "done" else "-"
    return f"hit {key}" + (f": {entry['reused_because']}" if "reused_because" in entry else "")


def _data_section(run: _Run) -> list[Markup]:
    report, missing = run.document("data_report")
    if report is None:
        return [missing]
    splits = [
        (
            split,
            statistics["count"],
            "x".join(map(str, statistics["image_shape"])),
            statistics["mode"],
            len(statistics["class_counts"]),
            f"{statistics['pixel_mean']:.2f}",
            f"{statistics['ink_fraction']:.4f}",
            statistics["duplicates"],
        )
        for split, statistics in report["splits"].items()
    ]
    checks = [
        (check["name"], badge(check["outcome"]), check["value"], check["threshold"], check["reason"])
        for check in report["checks"]
    ]
    return [
        facts(
            [
                ("validation", badge(report["outcome"])),
                ("dataset version", report["dataset_version"]),
                ("source", f"{report['source_uri']} ({report['source_format']})"),
                ("ingested", report["generated_at"]),
                ("newest source file", report["newest_source_time"]),
                ("invalid files", report["invalid_count"]),
                ("data asset", report.get("data_asset")),
            ]
        ),
        table(
            ("split", "images", "shape", "mode", "classes", "pixel mean", "ink fraction", "duplicates"),
            splits,
        ),
        table(("check", "outcome", "value", "threshold", "reason"), checks),
    ]


def _training_section(run: _Run) -> list[Markup]:
    curves = (
        image(run.outputs["training_curves"], "training curves")
        if "training_curves" in run.outputs
        else run.missing("training_curves")
    )
    sweeps = [_sweep(entry) for entry in run.record["nodes"] if "sweep" in entry]
    summary, missing = run.document("training_summary")
    if summary is None:
        return [curves, missing, *sweeps]
    return [
        curves,
        *sweeps,
        facts(
            [
                *summary["hyperparameters"].items(),
                *((f"final {name}", f"{value:.4f}") for name, value in summary["metrics"].items()),
                ("epochs run", len(summary["history"])),
                ("images per second", f"{summary['images_per_second']:.1f}"),
                ("wall time", f"{summary['wall_time_seconds']:.1f} s"),
                ("code version", summary["code_version"]),
                ("environment hash", summary["environment_hash"]),
            ]
        ),
    ]


def _sweep(entry: dict[str, Any]) -> Markup:
    """A swept node's trials, each with its values and its objective, the chosen one marked."""
    metric = entry["sweep"]["objective"]["metric"]
    rows = [
        (
            trial["name"],
            ", ".join(f"{port}={value}" for port, value in trial["parameters"].items()),
            badge(trial["status"]),
            f"{trial['seconds']:.1f}",
            trial["objective"],
            "chosen" if trial["chosen"] else "",
        )
        for trial in entry["sweep"]["trials"]
    ]
    goal = entry["sweep"]["objective"]["goal"]
    return join(
        [
            element("h3", f"Sweep of {entry['name']}: {goal} {metric}"),
            table(("trial", "values", "status", "seconds", metric, ""), rows),
        ]
    )


def _evaluation_section(run: _Run) -> list[Markup]:
    report, missing = run.document("evaluation")
    if report is None:
        return [missing]
    folder = run.outputs["evaluation"]
    return [
        paragraph(
            f"accuracy {report['accuracy']:.4f} on {report['test_count']} test images of dataset"
            f" {report['dataset_version'][:12]}"
        ),
        element("h3", "Confusion matrix"),
        image(folder / "confusion_matrix.png", "confusion matrix"),
        element("h3", "Misclassified test images"),
        image(folder / "misclassified.png", "misclassified test images"),
    ]


def _blessing_section(run: _Run) -> list[Markup]:
    blessing, missing = run.document("blessing")
    if blessing is None:
        return [missing]
    verdict = "blessed" if blessing["blessed"] else "not blessed"
    parts = [paragraph(badge(verdict), " ", f"data shift: {blessing['data_shift']['decision']}")]
    parts.append(bullets(blessing["reasons"]))
    report, missing = run.document("evaluation")
    parts += _comparison(report) if report is not None else [missing]
    parts += [element("h3", "Registration and deployment"), facts(_registration(run))]
    return parts


def _comparison(report: dict[str, Any]) -> list[Markup]:
    """The challenger's figures beside the champion's on the same test split, then every gate."""
    champion = report["champion"]
    heading = f"champion v{champion['version']}" if champion else "champion"
    rows: list[Sequence[Any]] = [
        ("test images", report["test_count"], champion and champion["test_count"]),
        ("accuracy", f"{report['accuracy']:.4f}", champion and f"{champion['accuracy']:.4f}"),
        (
            "p50 latency (ms)",
            f"{report['latency']['p50_ms']:.2f}",
            champion and f"{champion['latency']['p50_ms']:.2f}",
        ),
        (
            "p99 latency (ms)",
            f"{report['latency']['p99_ms']:.2f}",
            champion and f"{champion['latency']['p99_ms']:.2f}",
        ),
    ]
    theirs = {row["name"]: row for row in champion["per_class"]} if champion else {}
    rows += [
        (
            f"recall of {row['name']}",
            f"{row['recall']:.4f}",
            f"{theirs[row['name']]['recall']:.4f}" if row["name"] in theirs else None,
        )
        for row in report["per_class"]
    ]
    if split := report["data_shift"]["reference_split"]:
        rows.append(
            (
                f"accuracy on the champion's test split ({split['test_count']} images)",
                f"{split['challenger_accuracy']:.4f}",
                f"{split['champion_accuracy']:.4f}",
            )
        )
    gates = [
        (gate["name"], badge(gate["outcome"]), gate["value"], gate["threshold"], gate["reason"])
        for gate in report["thresholds"]
    ]
    return [
        element("h3", "Challenger and champion"),
        table(("figure", "challenger", heading), rows),
        *([] if champion else [note("no champion was scored: the max_regression gate says why")]),
        element("h3", "Gates"),
        table(("gate", "outcome", "value", "threshold", "reason"), gates),
    ]


def _registration(run: _Run) -> list[tuple[str, object]]:
    registration, registered = run.document("registration_record")
    if registration is not None:
        registered = (
            f"{registration['model_name']} v{registration['version']}"
            if registration["registered"]
            else "nothing registered"
        )
    deployment, deployed = run.document("deployment_record")
    if deployment is not None:
        where = f"{deployment['target']} {deployment['endpoint'] or ''}".rstrip()
        done = f"{deployment['model_name']} v{deployment['model_version']} to {where}"
        if deployment["outcome"] == "skipped":
            done = f"production stays at {deployment['previous_version'] or 'nothing'}"
        deployed = join([badge(deployment["outcome"]), f" {done}"])
    return [("registration", registered), ("deployment", deployed)]


def _lineage_section(run: _Run, registry: str | None) -> list[Markup]:
    """The lineage of the run folder; when the registry cannot be asked, the page says why instead."""
    if registry is None:
        registration, _ = run.document("registration_record")
        registry = registration["registry_uri"] if registration and registration["registered"] else None
    try:
        document = trace(str(run.folder), registry=registry, runs_dir=run.folder.parent)
    except UserInputError as error:
        return [note(f"lineage not available: {error}")]
    except Exception as error:  # the registry's client, network and database errors: the page stays whole
        return [note(f"lineage not available: {type(error).__name__}: {error}")]
    parts = (
        []
        if document["model"]
        else [note("this run registered no model version: no registry links or deployments")]
    )
    return [*parts, preformatted(render(document))]


def report_finished_run(run_dir: Path) -> Path | None:
    """`write_run_report` at the end of a local run, which it must never fail or lose: the run's outputs
    and run.json are its product, the page only shows them, so an error is told on stderr and the run
    goes on. Prints where the page is."""
    try:
        path = write_run_report(run_dir)
    except Exception as error:  # anything at all: the run ends as it would have without its page
        print(f"warning: no run report ({type(error).__name__}: {error})", file=sys.stderr, flush=True)
        return None
    print(f"run report: {path}", flush=True)
    return path
