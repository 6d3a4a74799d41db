"""The training graph (`pipelines.graph`) rendered as a Kubeflow Pipelines v2 pipeline.

Nothing is written twice. Each KFP component is generated from the component's spec.yaml: its ports
(AML types mapped to KFP's), defaults and descriptions, and the spec's own `command`, with
`${{inputs.x}}` / `${{outputs.y}}` turned into KFP's input value, input path and output path
placeholders and each optional `$[[...]]` block into an "if present" one. It runs in the job image of
the spec's environment: the image Azure ML builds from the same folder, plus the code snapshot as
working directory (`containers.build_job_image`), because KFP has no code snapshot. Nothing is
installed at start, so a pod runs exactly the pinned environment and code it was given.

The command runs under `mnist_mlops.kfp_executor`, which reports the output artifacts to KFP (the
executor output file that KFP's Python components write; kfp.local reads nothing else). A component's
metadata.yaml may add KFP-only views (`kfp_reports`: Metrics, ClassificationMetrics, Markdown for the
KFP UI, built from a file the command writes into a folder output): they are extra outputs here, filled
by the executor, and no part of the spec or of Azure ML.

The pipeline is the same graph as on Azure ML: ingest reads a folder (`raw_data`, imported by URI:
`minio://`, `s3://`, `gs://` on a cluster, a path under the pipeline root with kfp.local), the champion
comes from the resolve_champion node, and the registry is a pipeline parameter (an MLflow tracking URI
the pods reach). deploy's target defaults to `local`: the registered version is validated in the real
scoring server inside its task, then the registry's `production` pointer moves.
"""

from __future__ import annotations

import inspect
import json
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import yaml

from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.graph import Node, Param, Ref, parameters, training_pipeline
from mnist_mlops.ports import load_metadata, load_spec
from mnist_mlops.runner import OPTIONAL_BLOCK, PLACEHOLDER, is_artifact

PIPELINE_NAME = "mnist-mlops-training"
PIPELINE_FILE = "mnist_mlops_training.yaml"
KFP_TYPES = {
    "string": "String",
    "integer": "Integer",
    "number": "Float",
    "boolean": "Boolean",
    "uri_folder": "Dataset",
    "uri_file": "Artifact",
    "mlflow_model": "Model",
}
"""Azure ML port type -> KFP type."""
PYTHON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool}
LAUNCHER = ["python", "-m", "mnist_mlops.kfp_executor", "{{$}}"]
REPORT_DESCRIPTION = (
    "KFP-only view of {port}/{file} for the KFP UI, filled by mnist_mlops.kfp_executor (no such output on"
    " Azure ML)."
)


def command_arguments(spec: dict[str, Any]) -> list[Any]:
    """The spec's command as KFP (v1 component format) arguments."""
    arguments: list[Any] = []
    position = 0
    for block in OPTIONAL_BLOCK.finditer(spec["command"]):
        arguments += _tokens(spec, spec["command"][position : block.start()])
        guarded: list[Any] = _tokens(spec, block.group(1))
        for kind, name in reversed(PLACEHOLDER.findall(block.group(1))):
            if kind == "outputs":  # KFP's isPresent takes inputs only: an output is always there
                raise UserInputError(
                    f"{spec['name']}: output {name!r} inside the optional block {block.group(0)!r}: only"
                    " inputs can be optional; move the output out of $[[...]]"
                )
            guarded = [{"if": {"cond": {"isPresent": name}, "then": guarded}}]
        arguments += guarded
        position = block.end()
    return arguments + _tokens(spec, spec["command"][position:])


def _tokens(spec: dict[str, Any], text: str) -> list[Any]:
    tokens: list[Any] = []
    for word in shlex.split(text):
        parts: list[Any] = []
        position = 0
        for match in PLACEHOLDER.finditer(word):
            parts += [word[position : match.start()]] if match.start() > position else []
            parts.append(_placeholder(spec, match.group(1), match.group(2)))
            position = match.end()
        parts += [word[position:]] if position < len(word) else []
        tokens.append(parts[0] if len(parts) == 1 else {"concat": parts})
    return tokens


def _placeholder(spec: dict[str, Any], kind: str, name: str) -> dict[str, str]:
    if kind == "outputs":
        return {"outputPath": name}
    return {"inputPath": name} if is_artifact(spec["inputs"][name]) else {"inputValue": name}


def checked_reports(spec: dict[str, Any], reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`reports` (metadata.yaml's `kfp_reports`), each named unlike the spec's ports and read from one of
    its folder outputs."""
    folders = [port for port, definition in spec["outputs"].items() if definition["type"] == "uri_folder"]
    for name, report in reports.items():
        if name in spec["inputs"] or name in spec["outputs"]:
            raise UserInputError(
                f"{spec['name']}: KFP report {name!r} is named as a port; give it another name"
            )
        if report["port"] not in folders:
            raise UserInputError(
                f"{spec['name']}: KFP report {name!r} reads {report['port']!r}, not a folder output"
                f" ({', '.join(folders) or 'there is none'})"
            )
    return reports


def component_document(stage: str, image: str) -> dict[str, Any]:
    """The KFP component (v1 component format, which KFP v2 loads) generated from `stage`'s spec.yaml,
    with the KFP-only report outputs of its metadata.yaml."""
    spec = load_spec(stage)
    reports = checked_reports(spec, load_metadata(stage).get("kfp_reports", {}))
    inputs = []
    for name, port in spec["inputs"].items():
        entry: dict[str, Any] = {"name": name, "type": KFP_TYPES[port["type"]]}
        entry |= {"description": port["description"]} if port.get("description") else {}
        if "default" in port:
            entry["default"] = str(port["default"])
        elif port.get("optional"):
            entry["optional"] = True
        inputs.append(entry)
    outputs = [
        {"name": name, "type": KFP_TYPES[port["type"]], "description": port.get("description", "")}
        for name, port in spec["outputs"].items()
    ]
    outputs += [
        {"name": name, "type": report["type"], "description": REPORT_DESCRIPTION.format(**report)}
        for name, report in reports.items()
    ]
    launcher = LAUNCHER + (["--reports", json.dumps(reports, separators=(",", ":"))] if reports else [])
    return {
        "name": stage,
        "description": spec["description"],
        "inputs": inputs,
        "outputs": outputs,
        "implementation": {
            "container": {"image": image, "command": [*launcher, "--", *command_arguments(spec)]}
        },
    }


def component(stage: str, image: str) -> Any:
    from kfp import components

    return components.load_component_from_text(yaml.safe_dump(component_document(stage, image)))


def job_images(registry: str = "localhost/") -> Callable[[str], str]:
    """stage -> the job image it runs in (its environment's, over this code) under `registry`; the code
    snapshot is listed and hashed once for all the images, each environment's tag made once."""
    from mnist_mlops.containers import environment_of, job_image_tag
    from mnist_mlops.snapshot import code_root, snapshot_files

    code = snapshot_files(code_root())
    by_environment: dict[Path, str] = {}

    def image(stage: str) -> str:
        folder = environment_of(stage)
        if folder not in by_environment:
            by_environment[folder] = job_image_tag(folder, registry, code)
        return by_environment[folder]

    return image


def kfp_graph(deploy_target: str = "local") -> list[Node]:
    """The training graph with ingest reading an imported folder and the registry a parameter."""
    return training_pipeline(
        {"source_data": Param("raw_data")},
        registry=Param("registry", required=True),
        deploy_target=deploy_target,
    )


def render(
    nodes: list[Node],
    image: Callable[[str], str],
    *,
    name: str = PIPELINE_NAME,
    description: str = "",
) -> Any:
    """A `dsl.pipeline` over the graph: one pipeline parameter per Param but those KFP binds itself (an
    artifact's as the URI an importer reads), one task per Node named as the node, cached only where
    the spec is deterministic.

    A Param of an optional port with no default (deploy's endpoint_name) is an optional pipeline
    parameter: left unset, the task's input is unset and the command's isPresent block drops it, as on
    Azure ML (KFP >= 2.5 on a cluster). kfp.local cannot leave a pipeline parameter unset: there, give
    it a value or bind the port before rendering (`apply_overrides`)."""
    from kfp import dsl

    bound_by_kfp = {"pipeline_run_id": dsl.PIPELINE_JOB_NAME_PLACEHOLDER}
    params = {
        value.name: value for node in nodes for value in node.inputs.values() if isinstance(value, Param)
    }
    definitions = {name: found for name, found in parameters(nodes).items() if name not in bound_by_kfp}
    made_components = {node.component: component(node.component, image(node.component)) for node in nodes}

    def body(*args, **kwargs):  # KFP reads the signature set below and passes every parameter
        values = body.__signature__.bind(*args, **kwargs).arguments
        imported: dict[str, Any] = {}
        made: dict[str, Any] = {}
        for node in nodes:
            spec = load_spec(node.component)
            bound = {}
            for port, value in node.inputs.items():
                if isinstance(value, Ref):
                    bound[port] = made[value.node].outputs[value.output]
                elif isinstance(value, Param) and value.name in bound_by_kfp:
                    bound[port] = bound_by_kfp[value.name]
                elif isinstance(value, Param) and is_artifact(spec["inputs"][port]):
                    if value.name not in imported:
                        imported[value.name] = _importer(values[value.name], spec["inputs"][port])
                    bound[port] = imported[value.name].output
                elif isinstance(value, Param):
                    bound[port] = values[value.name]
                elif isinstance(value, Path) or (value is not None and is_artifact(spec["inputs"][port])):
                    bound[port] = _importer(str(value), spec["inputs"][port]).output
                elif value is not None:
                    bound[port] = value
            task = made_components[node.component](**bound)
            task.set_display_name(spec["display_name"]).set_caching_options(spec["is_deterministic"])
            made[node.name] = task

    signature = []
    for param, (definition, default) in definitions.items():
        kind: Any = str if is_artifact(definition) else PYTHON_TYPES[definition["type"]]
        may_be_unset = bool(definition.get("optional")) and not params[param].required
        may_be_unset &= not is_artifact(definition)  # an importer needs its URI
        if default is None and may_be_unset:
            # an optional pipeline parameter; KFP reads typing.Optional, not `X | None`
            kind = Optional[kind]  # noqa: UP045
        signature.append(
            inspect.Parameter(
                param,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if default is None and not may_be_unset else default,
                annotation=kind,
            )
        )
    signature.sort(key=lambda parameter: parameter.default is not inspect.Parameter.empty)
    body.__signature__ = inspect.Signature(signature)
    body.__annotations__ = {parameter.name: parameter.annotation for parameter in signature}
    body.__name__ = name.replace("-", "_")
    return dsl.pipeline(name=name, description=description)(body)


def _importer(uri: Any, definition: dict[str, Any]) -> Any:
    from kfp import dsl

    artifact_class = {"Dataset": dsl.Dataset, "Model": dsl.Model}.get(
        KFP_TYPES[definition["type"]], dsl.Artifact
    )
    return dsl.importer(artifact_uri=uri, artifact_class=artifact_class, reimport=False)


def training_pipeline_function(nodes: list[Node] | None = None, registry: str = "localhost/") -> Any:
    """The training pipeline for KFP; images under `registry` (a prefix such as `myacr.azurecr.io/`)."""
    return render(
        nodes or kfp_graph(),
        job_images(registry),
        description=(
            "Ingest a versioned, validated MNIST dataset, train a CNN, judge it against the production "
            "champion and KPI thresholds, register it if blessed and deploy the registered version."
        ),
    )


def compile_kfp(out_dir: Path, registry: str = "localhost/", nodes: list[Node] | None = None) -> Path:
    """Write the pipeline's IR YAML to `out_dir`; atomically, so an upload never reads half a file. The
    images it names are built with `mnist-mlops image build --job` and pushed under `registry`."""
    from kfp import compiler

    if registry and not registry.endswith("/"):
        raise UserInputError(f"image registry {registry!r}: give a prefix ending in '/' (myacr.azurecr.io/)")
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / PIPELINE_FILE
        compiler.Compiler().compile(training_pipeline_function(nodes, registry), package_path=str(staged))
        target = Path(out_dir) / PIPELINE_FILE
        atomic_write_bytes(target, staged.read_bytes())
    return target
