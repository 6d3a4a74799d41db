"""Hyperparameter sweeps, described once for every runner: which node, the values or ranges of each swept
parameter, the objective, and (Azure ML only) limits and early termination.

Locally (`mnist-mlops run --sweep train.learning_rate=0.001,0.003`) the runner trains every point of
the grid of explicit values as a trial through the step cache and keeps the best by the objective.
On Azure ML (`pipelines/aml.py`) the node becomes a sweep node that samples the space, reads the
objective's metric as the trial logs it to MLflow, and stops trials that fall behind (Bandit).

The objective is a declared fact of the swept component (`OBJECTIVES`), never of the runner: train's
validation accuracy, which train logs every epoch and writes in its training summary. Trials are
judged on the validation split only; the test split stays unseen until evaluate judges the pick.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.graph import Node, Param, Ref
from mnist_mlops.ports import check_value, load_spec, parse_value
from mnist_mlops.runner import is_artifact

DEFAULT = "default"
"""`--sweep default`: the default search space (Azure ML only: it samples ranges)."""


@dataclass(frozen=True)
class Objective:
    """The metric a trial is judged by: logged to MLflow under `metric` (Azure ML reads it as the trial
    runs), and its final value under `metrics.<metric>` in the JSON output `summary_port` (the local
    runner reads it there)."""

    metric: str
    goal: str
    summary_port: str

    def value(self, summary_file: Path) -> float:
        return float(json.loads(summary_file.read_text())["metrics"][self.metric])

    def best(self, values: list[float]) -> int:
        """The index of the best value; on a tie the first trial."""
        sign = 1 if self.goal == "maximize" else -1
        return max(range(len(values)), key=lambda index: (sign * values[index], -index))


OBJECTIVES = {"train": Objective("val_accuracy", "maximize", "training_summary")}
"""Per component that can be swept: what its trials are judged by (validation data only)."""


@dataclass(frozen=True)
class LogUniform:
    """A learning-rate-like range, sampled evenly in log space (Azure ML only)."""

    low: float
    high: float


@dataclass(frozen=True)
class Limits:
    """Azure ML: at most this many trials, this many at once, and time limits in seconds."""

    max_total_trials: int = 8
    max_concurrent_trials: int = 2
    timeout: int = 7200
    trial_timeout: int = 1800


@dataclass(frozen=True)
class Bandit:
    """Azure ML early termination: after `delay_evaluation` reports, stop a trial whose metric is more
    than `slack_factor` (relative) behind the best trial's, checked every `evaluation_interval` reports."""

    slack_factor: float = 0.1
    evaluation_interval: int = 1
    delay_evaluation: int = 3


DEFAULT_SPACE: dict[str, tuple[Any, ...] | LogUniform] = {
    "learning_rate": LogUniform(1e-4, 1e-2),
    "batch_size": (64, 128, 256),
    "epochs": (6, 12),
}
"""Train's default search space on Azure ML."""


@dataclass(frozen=True)
class Sweep:
    """One node trained once per point of its search space; the runner goes on with the best trial."""

    node: str
    component: str
    space: dict[str, tuple[Any, ...] | LogUniform]
    """Port -> explicit values (a tuple) or a range (Azure ML only)."""
    limits: Limits = field(default_factory=Limits)
    early_termination: Bandit = field(default_factory=Bandit)

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.component]

    @property
    def sampling(self) -> str:
        """Grid over explicit values; random when any parameter is a range."""
        return "grid" if all(isinstance(values, tuple) for values in self.space.values()) else "random"

    @property
    def max_total_trials(self) -> int:
        """A grid is tried whole, as locally, within the limit; a sampled space up to the limit."""
        if self.sampling != "grid":
            return self.limits.max_total_trials
        if len(self.grid()) > self.limits.max_total_trials:
            raise UserInputError(
                f"--sweep: {len(self.grid())} trials in the grid ({describe(self.space)}); Azure ML runs at"
                f" most {self.limits.max_total_trials} in one sweep: give fewer values"
            )
        return len(self.grid())

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the explicit values, the first parameter varying slowest."""
        if self.sampling != "grid":
            raise UserInputError(
                "--sweep: a local sweep needs explicit values (NODE.PARAM=V1,V2,...); ranges such as the"
                " default space's learning rate are sampled on Azure ML only"
            )
        names = list(self.space)
        return [dict(zip(names, point, strict=True)) for point in itertools.product(*self.space.values())]

    def without_swept(self, nodes: list[Node]) -> list[Node]:
        """The graph with the swept ports left unbound on the swept node: the sweep sets them."""
        return [
            Node(node.name, node.component, {p: v for p, v in node.inputs.items() if p not in self.space})
            if node.name == self.node
            else node
            for node in nodes
        ]


def describe(space: dict[str, tuple[Any, ...] | LogUniform]) -> str:
    """A search space in words, for help texts and the console."""
    return ", ".join(
        f"{port} log-uniform in [{values.low:g}, {values.high:g}]"
        if isinstance(values, LogUniform)
        else f"{port} in {{{','.join(map(str, values))}}}"
        for port, values in space.items()
    )


def parse_sweep(nodes: list[Node], items: Sequence[str], overrides: Sequence[str] = ()) -> Sweep | None:
    """The sweep `--sweep` items describe (None for none): `default`, and/or `NODE.PARAM=V1,V2,...`
    (each value typed and checked by the component's spec), all on one node. `overrides` are the
    `--set` items, none of which may set a swept parameter."""
    if not items:
        return None
    by_name = {node.name: node for node in nodes}
    swept: dict[tuple[str, str], str] = {}  # (node, param) -> the values' text
    for item in items:
        if item == DEFAULT:
            continue
        target, separator, text = item.partition("=")
        node_name, dot, param = target.partition(".")
        if not separator or not dot or not param:
            raise UserInputError(f"--sweep {item!r}: expected NODE.PARAM=V1,V2,... or {DEFAULT!r}")
        if node_name not in by_name:
            raise UserInputError(f"--sweep {item!r}: no node {node_name!r}; nodes: {', '.join(by_name)}")
        if (node_name, param) in swept:
            raise UserInputError(f"--sweep {item!r}: {node_name}.{param} is swept twice")
        swept[node_name, param] = text
    node_names = {node_name for node_name, _ in swept} or {_default_node(by_name)}
    if len(node_names) > 1:
        raise UserInputError(f"--sweep: one node at a time, not {', '.join(sorted(node_names))}")
    node = by_name[node_names.pop()]
    if node.component not in OBJECTIVES:
        raise UserInputError(
            f"--sweep: {node.name} ({node.component}) declares no objective to pick a trial by;"
            f" nodes that can be swept run {', '.join(OBJECTIVES)}"
        )
    spec = load_spec(node.component)
    space: dict[str, tuple[Any, ...] | LogUniform] = dict(DEFAULT_SPACE) if DEFAULT in items else {}
    for (_, param), text in swept.items():
        space[param] = _values(node, spec, param, text)
    for param, values in space.items():
        _check_port(node, spec, param, values)
        _refuse_also_set(node, param, overrides)
    return Sweep(node.name, node.component, space)


def _default_node(by_name: dict[str, Node]) -> str:
    names = [name for name, node in by_name.items() if node.component in OBJECTIVES]
    if len(names) != 1:
        raise UserInputError(
            f"--sweep {DEFAULT}: {len(names)} nodes of the graph can be swept; name one (NODE.PARAM=...)"
        )
    return names[0]


def _check_port(node: Node, spec: dict[str, Any], param: str, values: tuple[Any, ...] | LogUniform) -> None:
    settable = [
        name
        for name, definition in spec["inputs"].items()
        if not is_artifact(definition) and not isinstance(node.inputs.get(name), Ref)
    ]
    if param not in settable:
        raise UserInputError(
            f"--sweep {node.name}.{param}: not a parameter of {node.name}; parameters: {', '.join(settable)}"
        )
    bounds = (values.low, values.high) if isinstance(values, LogUniform) else values
    for value in bounds:
        try:
            check_value(node.name, param, spec["inputs"][param], value)
        except UserInputError as error:
            raise UserInputError(f"--sweep {node.name}.{param}: {error}") from None


def _values(node: Node, spec: dict[str, Any], param: str, text: str) -> tuple[Any, ...]:
    where = f"--sweep {node.name}.{param}={text}"
    if param not in spec["inputs"]:
        raise UserInputError(
            f"{where}: {node.name} has no input {param!r}; inputs: {', '.join(spec['inputs'])}"
        )
    try:
        values = tuple(parse_value(spec["inputs"][param], part.strip()) for part in text.split(","))
    except UserInputError as error:
        raise UserInputError(f"{where}: {error}") from None
    if len(values) < 2:
        raise UserInputError(
            f"{where}: a sweep needs two values or more (one value: --set {node.name}.{param}=...)"
        )
    if len(set(values)) < len(values):
        raise UserInputError(f"{where}: a value is given twice")
    return values


def _refuse_also_set(node: Node, param: str, overrides: Sequence[str]) -> None:
    bound = node.inputs.get(param)
    names = {f"{node.name}.{param}"} | ({bound.name} if isinstance(bound, Param) else set())
    for item in overrides:
        if item.partition("=")[0] in names:
            raise UserInputError(
                f"--set {item!r}: {node.name}.{param} is swept (--sweep); set it in one place"
            )


def log_bounds(values: LogUniform) -> tuple[float, float]:
    """The natural-log bounds Azure ML's LogUniform takes."""
    return math.log(values.low), math.log(values.high)
