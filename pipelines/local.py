"""Run a pipeline graph on this machine: each node runs its component's container command in its own
process, with inputs and outputs bound to folders under a run directory.

The graph: ingest -> preprocess -> train -> evaluate -> register -> deploy. Before the run, the
registry's `production` version (if any) is fetched as evaluate's champion, so the challenger is judged
against it on the same fresh test split. deploy runs only when register registered a version, and
deploys exactly that version (`models:/<name>/<version>`) to the local target.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import load_spec, parse_value
from mnist_mlops.runner import run_component


@dataclass(frozen=True)
class Ref:
    """An input bound to another node's output."""

    node: str
    output: str


@dataclass
class Node:
    name: str
    component: str
    inputs: dict[str, Any] = field(default_factory=dict)
    when: Callable[[Path], dict[str, Any] | str] | None = None
    """Decided at run time from the run folder: inputs to add, or a reason (str) to skip the node."""


def training_pipeline(data: str, sha256: str | None, registry: str | None, run_id: str) -> list[Node]:
    """ingest -> preprocess -> train -> evaluate -> register -> deploy, in execution order."""
    return [
        Node("ingest", "ingest", {"source_uri": data, "source_sha256": sha256}),
        Node("preprocess", "preprocess", {"dataset": Ref("ingest", "dataset")}),
        Node("train", "train", {"preprocessed": Ref("preprocess", "preprocessed")}),
        Node(
            "evaluate",
            "evaluate",
            {"challenger": Ref("train", "model"), "preprocessed": Ref("preprocess", "preprocessed")},
        ),
        Node(
            "register",
            "register",
            {
                "model": Ref("train", "model"),
                "blessing": Ref("evaluate", "blessing"),
                "evaluation": Ref("evaluate", "evaluation"),
                "training_summary": Ref("train", "training_summary"),
                "data_report": Ref("ingest", "data_report"),
                "preprocessed": Ref("preprocess", "preprocessed"),
                "registry": registry,
                "pipeline_run_id": run_id,
            },
        ),
        Node(
            "deploy",
            "deploy",
            {"test_data": Ref("preprocess", "preprocessed"), "registry": registry},
            when=_registered_version,
        ),
    ]


def _registered_version(run_dir: Path) -> dict[str, Any] | str:
    record = json.loads((run_dir / "register" / "registration_record.json").read_text())
    if not record["registered"]:
        return "the model was not registered"
    return {"model": f"models:/{record['model_name']}/{record['version']}"}


def champion_inputs(registry: str | None, model_name: str, destination: Path) -> dict[str, Any] | None:
    """evaluate's champion inputs: the registry's `production` version, downloaded; None if there is none."""
    from mnist_mlops.deployments import production_version
    from mnist_mlops.registry import client, registry_uri, sqlite_file

    uri = registry_uri(registry)
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        return None
    version = production_version(uri, model_name)
    if version is None:
        return None
    import mlflow.artifacts

    source = client(uri).get_model_version_download_uri(model_name, version)
    destination.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(destination), tracking_uri=uri)
    (model_dir,) = {path.parent for path in destination.rglob("MLmodel")}
    return {"champion": model_dir, "champion_reference": f"models:/{model_name}/{version}"}


def apply_overrides(nodes: list[Node], overrides: list[str]) -> None:
    """Apply `node.param=value` overrides, checked against the node's component spec."""
    by_name = {node.name: node for node in nodes}
    for item in overrides:
        target, separator, text = item.partition("=")
        node_name, dot, param = target.partition(".")
        if not separator or not dot:
            raise UserInputError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        if node_name not in by_name:
            raise UserInputError(f"--set {item!r}: no node {node_name!r}; nodes: {', '.join(by_name)}")
        spec = load_spec(by_name[node_name].component)
        if param not in spec["inputs"] or spec["inputs"][param]["type"].startswith("uri_"):
            names = [name for name, port in spec["inputs"].items() if not port["type"].startswith("uri_")]
            raise UserInputError(
                f"--set {item!r}: {node_name} has no parameter {param!r}; parameters: {', '.join(names)}"
            )
        by_name[node_name].inputs[param] = parse_value(spec["inputs"][param], text)


def output_path(run_dir: Path, node: str, port: str, kind: str) -> Path:
    return run_dir / node / (f"{port}.json" if kind == "uri_file" else port)


def _ref_path(run_dir: Path, ref: Ref, nodes: list[Node]) -> Path:
    """Where another node's output lives, from the output's type in that node's spec."""
    (component,) = [node.component for node in nodes if node.name == ref.node]
    return output_path(run_dir, ref.node, ref.output, load_spec(component)["outputs"][ref.output]["type"])


def run_nodes(nodes: list[Node], run_dir: Path) -> int:
    """Run `nodes` in order; print progress and a summary; return the exit code."""
    results = []
    for node in nodes:
        spec = load_spec(node.component)
        if node.when is not None:
            decision = node.when(run_dir)
            if isinstance(decision, str):
                print(f"[{node.name}] skipped: {decision}", flush=True)
                results.append((node.name, "skipped", 0.0))
                continue
            node.inputs |= decision
        inputs = {
            port: _ref_path(run_dir, value, nodes) if isinstance(value, Ref) else value
            for port, value in node.inputs.items()
            if value is not None
        }
        outputs = {
            port: output_path(run_dir, node.name, port, d["type"]) for port, d in spec["outputs"].items()
        }
        log = run_dir / node.name / "log.txt"
        print(f"[{node.name}] running", flush=True)
        started = time.perf_counter()
        code = run_component(node.component, inputs, outputs, log_path=log).returncode
        seconds = time.perf_counter() - started
        status = "done" if code == 0 else "failed"
        results.append((node.name, status, seconds))
        print(f"[{node.name}] {status} in {seconds:.1f}s", flush=True)
        if code != 0:
            tail = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
            print(f"node {node.name} failed (exit {code}): {' '.join(tail)}\n  log: {log}")
            _summary(results)
            return 1
    _summary(results)
    _outcome(run_dir)
    print(f"outputs: {run_dir}")
    return 0


def _summary(results: list[tuple[str, str, float]]) -> None:
    print(f"\n{'node':<12} {'status':<8} {'seconds':>8}")
    for name, status, seconds in results:
        print(f"{name:<12} {status:<8} {seconds:>8.1f}")


def _outcome(run_dir: Path) -> None:
    """The gate's verdict and the registration: the pipeline's answer whether or not the model passed."""
    blessing_path = run_dir / "evaluate" / "blessing.json"
    if blessing_path.is_file():
        blessing = json.loads(blessing_path.read_text())
        verdict = "blessed" if blessing["blessed"] else "NOT blessed"
        print(f"\nmodel {verdict}:")
        for reason in blessing["reasons"]:
            print(f"  - {reason}")
    record_path = run_dir / "register" / "registration_record.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record["registered"]:
            print(
                f"registered {record['model_name']} version {record['version']} in {record['registry_uri']}"
            )
        else:
            print("not registered")
    deployment_path = run_dir / "deploy" / "deployment_record.json"
    if deployment_path.is_file():
        deployment = json.loads(deployment_path.read_text())
        print(
            f"deployed {deployment['model_name']} v{deployment['model_version']} to production "
            f"(was {deployment['previous_version'] or '-'}); serve it with: mnist-mlops serve "
            f"--model models:/{deployment['model_name']}@production"
        )


def run_training_pipeline(
    data: str, *, sha256: str | None, runs_dir: Path, overrides: list[str], registry: str | None = None
) -> int:
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    nodes = training_pipeline(data, sha256, registry, run_id)
    apply_overrides(nodes, overrides)
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    print(f"run {run_id} in {run_dir}")
    model_name = next(node for node in nodes if node.name == "register").inputs.get(
        "model_name", "mnist-mlops"
    )
    champion = champion_inputs(registry, model_name, run_dir / "champion")
    if champion:
        print(f"champion: {champion['champion_reference']} (production), judged on the same test split")
        next(node for node in nodes if node.name == "evaluate").inputs |= champion
    else:
        print("champion: none in production yet (first run)")
    return run_nodes(nodes, run_dir)
