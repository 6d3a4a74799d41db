"""The training graph as data, and how to get one: the built-in graph, or any Azure ML pipeline job
composed from these components (a notebook's variant, say), plus `--set` overrides.

The graph: ingest -> preprocess -> resolve_champion -> train -> evaluate -> register -> deploy.
resolve_champion hands evaluate the registry's `production` version (or a record that there is none)
with its reference (what it was trained and tested on) and a summary of recent traffic, so on every
runner the challenger is judged against it on the same fresh test split and on production's own, and
the new training data against production's and against what clients send. deploy reads register's
record: it deploys exactly the version registered (`models:/<name>/<version>`), or records "skipped"
with the gate's reasons when the model was declined (the components honour the blessing, so no control
flow). `pipelines/aml.py` composes the same graph for Azure ML; a test compares them edge by edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_mlops.artifacts import file_name
from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import check_value, component_names, load_spec, parse_value
from mnist_mlops.runner import NODE_OUTPUT, PARENT_INPUT, is_artifact


@dataclass(frozen=True)
class Ref:
    """An input bound to another node's output."""

    node: str
    output: str


@dataclass(frozen=True)
class Param:
    """An input bound to a pipeline parameter: a pipeline input on Azure ML and Kubeflow (set at
    submission, in the studio), its value (or the port's default) on the local runner."""

    name: str
    value: Any = None
    required: bool = False
    """The pipeline cannot run without it (an MLflow registry on Kubeflow, which has none of its own)."""


@dataclass
class Node:
    name: str
    component: str
    inputs: dict[str, Any] = field(default_factory=dict)


def training_pipeline(
    source: dict[str, Any], registry: str | None = None, deploy_target: str = "local"
) -> list[Node]:
    """The training graph, in execution order: ingest -> preprocess -> resolve_champion -> train ->
    evaluate -> register -> deploy. `source` is ingest's source inputs (a URI and pin locally, a mounted
    folder on Azure ML); `registry` None means the platform's (MLFLOW_TRACKING_URI, else ./mlflow.db)."""
    seed = Param("seed")
    model_name = Param("model_name")  # the champion is looked up under the name the challenger registers as
    return [
        Node("ingest", "ingest", source),
        Node("preprocess", "preprocess", {"dataset": Ref("ingest", "dataset"), "seed": seed}),
        Node("resolve_champion", "resolve_champion", {"model_name": model_name, "registry": registry}),
        Node(
            "train",
            "train",
            {
                "preprocessed": Ref("preprocess", "preprocessed"),
                "epochs": Param("epochs"),
                "batch_size": Param("batch_size"),
                "learning_rate": Param("learning_rate"),
                "seed": seed,
            },
        ),
        Node(
            "evaluate",
            "evaluate",
            {
                "challenger": Ref("train", "model"),
                "preprocessed": Ref("preprocess", "preprocessed"),
                "champion": Ref("resolve_champion", "champion"),
                # a pipeline input on every runner: promoting shifted data is a decision made at submission
                "accept_data_shift": Param("accept_data_shift"),
            },
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
                "model_name": model_name,
                "registry": registry,
                "pipeline_run_id": Param("pipeline_run_id"),
            },
        ),
        Node(
            "deploy",
            "deploy",
            {
                "test_data": Ref("preprocess", "preprocessed"),
                "registration_record": Ref("register", "registration_record"),
                "registry": registry,
                "target": Param("deploy_target", deploy_target),
                "endpoint_name": Param("endpoint_name"),
                "canary_count": Param("canary_count"),
            },
        ),
    ]


def parameters(nodes: list[Node]) -> dict[str, tuple[dict[str, Any], Any]]:
    """Each pipeline parameter of the graph: (the port definition it feeds, its value or the port's
    default). A parameter feeding several ports takes the first one's definition."""
    found: dict[str, tuple[dict[str, Any], Any]] = {}
    for node in nodes:
        spec = load_spec(node.component)
        for port, value in node.inputs.items():
            if isinstance(value, Param) and value.name not in found:
                definition = spec["inputs"][port]
                default = definition.get("default") if value.value is None else value.value
                found[value.name] = (definition, default)
    return found


def bind_parameters(nodes: list[Node], values: dict[str, Any]) -> None:
    """Replace every Param by its value (given, else the graph's, else the port's default)."""
    defaults = {name: default for name, (_, default) in parameters(nodes).items()}
    for node in nodes:
        for port, value in list(node.inputs.items()):
            if isinstance(value, Param):
                node.inputs[port] = values.get(value.name, defaults[value.name])


def nodes_from_aml(job: Any) -> list[Node]:
    """The local nodes of an `azure.ai.ml` pipeline job composed from these components (a notebook
    variant, say): its edges become Refs, pipeline inputs their values, in dependency order."""
    document = job._to_dict()
    values = {}
    for name, value in job.inputs.items():
        data = getattr(value, "_data", value)
        values[name] = getattr(data, "path", data)  # an Input's local path or a parameter's value
    pending: dict[str, Node] = {}
    for name, node in document["jobs"].items():
        if node.get("type") == "sweep":
            raise UserInputError(
                f"node {name} is an Azure ML sweep node; locally, sweep with mnist-mlops run --sweep"
                f" {name}.PARAM=V1,V2"
            )
        stage = str(getattr(job.jobs[name].component, "name", "")).removeprefix("mnist_mlops_")
        if stage not in component_names():
            raise UserInputError(f"node {name}: {stage!r} is not one of this project's components")
        inputs: dict[str, Any] = {}
        for port, binding in (node.get("inputs") or {}).items():
            text = binding.get("path") if isinstance(binding, dict) else binding
            if edge := NODE_OUTPUT.fullmatch(str(text)):
                inputs[port] = Ref(edge["node"], edge["port"])
            elif parent := PARENT_INPUT.fullmatch(str(text)):
                inputs[port] = values.get(parent["name"])
            else:
                inputs[port] = text
        pending[name] = Node(name, stage, inputs)
    ordered: list[Node] = []
    while pending:
        ready = [
            node
            for node in pending.values()
            if all(value.node not in pending for value in node.inputs.values() if isinstance(value, Ref))
        ]
        if not ready:
            raise UserInputError(f"the pipeline has a cycle among {', '.join(pending)}")
        for node in sorted(ready, key=lambda item: list(document["jobs"]).index(item.name)):
            ordered.append(pending.pop(node.name))
    return ordered


def parameter_overrides(nodes: list[Node], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split `--set` items into pipeline parameters (`model_name=shop`: every port the parameter feeds,
    checked against the first one's definition) and node overrides (`node.input=value`, left as they are)."""
    definitions = {name: definition for name, (definition, _) in parameters(nodes).items()}
    values: dict[str, Any] = {}
    rest: list[str] = []
    for item in overrides:
        target, separator, text = item.partition("=")
        if "." in target or not separator:
            rest.append(item)
            continue
        if target not in definitions:
            raise UserInputError(
                f"--set {item!r}: no pipeline parameter {target!r}; parameters: {', '.join(definitions)}"
                " (or NODE.PARAM=VALUE for one node's input)"
            )
        values[target] = parse_value(definitions[target], text)
        check_value("pipeline", target, definitions[target], values[target])
    return values, rest


def apply_overrides(nodes: list[Node], overrides: list[str]) -> None:
    """Apply `node.input=value` overrides, checked against the node's component spec: parameters, and
    artifact inputs no other node feeds (evaluate.thresholds=kpis.json, say)."""
    by_name = {node.name: node for node in nodes}
    for item in overrides:
        target, separator, text = item.partition("=")
        node_name, dot, param = target.partition(".")
        if not separator or not dot:
            raise UserInputError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        if node_name not in by_name:
            raise UserInputError(f"--set {item!r}: no node {node_name!r}; nodes: {', '.join(by_name)}")
        node = by_name[node_name]
        spec = load_spec(node.component)
        settable = [name for name in spec["inputs"] if not isinstance(node.inputs.get(name), Ref)]
        if param not in settable:
            raise UserInputError(
                f"--set {item!r}: {node_name} has no settable input {param!r} (those bound to another node's"
                f" output are not); settable: {', '.join(settable)}"
            )
        if is_artifact(spec["inputs"][param]):
            if not Path(text).exists():
                raise UserInputError(f"--set {item!r}: no such file or folder {text!r}")
            node.inputs[param] = Path(text)
        else:
            node.inputs[param] = parse_value(spec["inputs"][param], text)
            check_value(node_name, param, spec["inputs"][param], node.inputs[param])


def output_path(run_dir: Path, node: str, component: str, port: str) -> Path:
    """Where a node's output lives in a local run: a folder named after the port, or a file named after
    the port and what it holds (`artifacts.file_name`)."""
    is_file = load_spec(component)["outputs"][port]["type"] == "uri_file"
    return run_dir / node / (file_name(component, port) if is_file else port)


def ref_path(run_dir: Path, ref: Ref, nodes: list[Node]) -> Path:
    """Where another node's output lives."""
    (component,) = [node.component for node in nodes if node.name == ref.node]
    return output_path(run_dir, ref.node, component, ref.output)
