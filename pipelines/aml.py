"""The training graph (`pipelines.graph`) rendered as an Azure ML pipeline job with `azure.ai.ml.dsl`.

Nothing is written twice: the nodes, their edges and the pipeline parameters come from the graph, and
each component is its checked-in spec.yaml loaded from the code snapshot (`mnist_mlops.snapshot`), so
what the pipeline runs is what `az ml component create -f components/<c>/spec.yaml` registers. The
champion comes from the graph's resolve_champion node, as on every runner.

The blessing gates register and deploy through the components themselves, not a `dsl.condition`:
register declines an unblessed model (writing the gate's reasons) and deploy reads register's record and
records "skipped". Why: the gate then holds wherever a component runs (a notebook, the designer, KFP,
the CLI), the reasons are always written down, and no control output is needed that only AML honours.

Settings (`training_job`): a default compute for every node; train's own compute, instance count and
workers (`distribution: tensorflow`, whose TF_CONFIG the train component reads), CPU by default as
the model environment is CPU-only; a user-assigned managed identity for data and registry access; reuse
per node from each component's `is_deterministic`; ingest's dataset registered by ingest itself as a
data asset versioned by its content (`mnist_mlops.data_assets`), which later pipelines take as
`azureml:<name>:<version>`. Optionally train becomes a hyperparameter sweep node (`pipelines.sweep`),
still named train, so evaluate and register get the best trial's model.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml import Input, dsl
from azure.ai.ml.entities import Component, ManagedIdentityConfiguration, PipelineJob

from mnist_mlops.data_assets import DATASET_ASSET
from mnist_mlops.pipelines.graph import Node, Param, Ref, parameters, training_pipeline
from mnist_mlops.pipelines.job_options import RAW_DATA
from mnist_mlops.pipelines.sweep import Sweep, log_bounds
from mnist_mlops.provenance import CODE_VERSION_ENV, code_version
from mnist_mlops.runner import is_artifact
from mnist_mlops.snapshot import code_root
from mnist_mlops.uris import is_blob_sas_url, redact

PIPELINE_NAME = "mnist_mlops_training"
OUTPUTS = {
    "data_report": ("ingest", "data_report"),
    "model": ("train", "model"),
    "evaluation": ("evaluate", "evaluation"),
    "blessing": ("evaluate", "blessing"),
    "registration_record": ("register", "registration_record"),
    "deployment_record": ("deploy", "deployment_record"),
}
"""The pipeline's outputs: what the CI/CD gate downloads."""


@cache
def component(stage: str) -> Component:
    """A component as Azure ML loads it: its spec.yaml in the code snapshot."""
    from azure.ai.ml import load_component

    return load_component(code_root() / "components" / stage / "spec.yaml")


def render(
    nodes: list[Node], *, name: str = PIPELINE_NAME, description: str = "", sweep: Sweep | None = None
) -> Any:
    """A `dsl.pipeline` function over the graph: one pipeline input per Param, one node per Node; with a
    `sweep`, its node becomes a sweep node of the same name, so downstream nodes get the best trial's
    outputs. (The SDK accepts a sweep only while the pipeline is being built, hence here.)"""
    if sweep is not None:
        nodes = sweep.without_swept(nodes)

    def body(**values):  # the SDK reads the signature and annotations set below
        made: dict[str, Any] = {}
        for node in nodes:
            bound = {}
            for port, value in node.inputs.items():
                if isinstance(value, Ref):
                    bound[port] = made[value.node].outputs[value.output]
                elif isinstance(value, Param):
                    bound[port] = values[value.name]
                elif value is not None:
                    bound[port] = value
            made[node.name] = component(node.component)(**bound)
            if sweep is not None and node.name == sweep.node:
                made[node.name] = made[node.name].sweep(**sweep_arguments(sweep))
            made[node.name].name = node.name
        return {output: made[node].outputs[port] for output, (node, port) in OUTPUTS.items() if node in made}

    signature = []
    for param, (definition, default) in parameters(nodes).items():
        if is_artifact(definition):
            annotation: Any = Input(type=definition["type"])  # data the pipeline cannot run without
            signature.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
        else:
            signature.append(
                inspect.Parameter(
                    param,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Input(type=definition["type"], optional=default is None),
                )
            )
    body.__signature__ = inspect.Signature(signature)
    body.__annotations__ = {parameter.name: parameter.annotation for parameter in signature}
    body.__name__ = name
    return dsl.pipeline(name=name, description=description)(body)


def sweep_arguments(sweep: Sweep) -> dict[str, Any]:
    """The sweep as the arguments of azure-ai-ml's `Command.sweep`. A boolean is refused: the service
    hands a boolean choice to the trial as 1/0, which the component reads as false."""
    from azure.ai.ml.sweep import BanditPolicy, Choice, LogUniform

    from mnist_mlops.errors import UserInputError
    from mnist_mlops.ports import load_spec

    inputs = load_spec(sweep.component)["inputs"]
    for port in sweep.space:
        if inputs[port]["type"] == "boolean":
            raise UserInputError(
                f"--sweep {sweep.node}.{port}: Azure ML passes a boolean choice to the trial as 1/0, which"
                " the component reads as false; sweep it locally (mnist-mlops run --sweep)"
            )

    space = {
        port: Choice(list(values)) if isinstance(values, tuple) else LogUniform(*(log_bounds(values)))
        for port, values in sweep.space.items()
    }
    policy = sweep.early_termination
    return {
        "primary_metric": sweep.objective.metric,
        "goal": sweep.objective.goal,
        "sampling_algorithm": sweep.sampling,
        "search_space": space,
        "early_termination_policy": BanditPolicy(
            slack_factor=policy.slack_factor,
            evaluation_interval=policy.evaluation_interval,
            delay_evaluation=policy.delay_evaluation,
        ),
        "max_total_trials": sweep.max_total_trials,
        "max_concurrent_trials": sweep.limits.max_concurrent_trials,
        "timeout": sweep.limits.timeout,
        "trial_timeout": sweep.limits.trial_timeout,
    }


def aml_graph(deploy_target: str = "azureml", dataset_asset: str | None = DATASET_ASSET) -> list[Node]:
    """The training graph with ingest reading a mounted folder and registering its dataset as the data
    asset `dataset_asset` (a pipeline parameter; None registers none), the registry the job's own MLflow."""
    source: dict[str, Any] = {"source_data": Param("raw_data")}
    if dataset_asset:
        source["asset_name"] = Param("dataset_asset", dataset_asset)
    return training_pipeline(source, registry=None, deploy_target=deploy_target)


def training_pipeline_function(
    deploy_target: str = "azureml", dataset_asset: str | None = DATASET_ASSET, sweep: Sweep | None = None
) -> Any:
    return render(
        aml_graph(deploy_target, dataset_asset),
        sweep=sweep,
        description=(
            "Ingest a versioned, validated MNIST dataset, train a CNN, judge it against the production "
            "champion and KPI thresholds, register it if blessed and deploy it after infra validation."
        ),
    )


def training_job(
    raw_data: str = RAW_DATA,
    *,
    compute: str = "cpu-cluster",
    train_compute: str | None = None,
    train_instance_count: int = 1,
    train_workers_per_instance: int = 1,
    identity_client_id: str | None = None,
    epochs: int | None = None,
    deploy_target: str = "azureml",
    dataset_asset: str | None = DATASET_ASSET,
    accept_data_shift: bool = False,
    sweep: Sweep | None = None,
) -> PipelineJob:
    """The pipeline job with its settings: computes, distributed training, identity, reuse, data asset,
    whether a shift of the training data from production's is accepted (a recorded decision), and a
    hyperparameter sweep of train (`pipelines.sweep`; its trials train on one instance each)."""
    from azure.ai.ml import TensorFlowDistribution
    from azure.ai.ml.entities import JobResourceConfiguration

    from mnist_mlops.errors import UserInputError

    if train_instance_count < 1 or train_workers_per_instance < 1:
        raise UserInputError("train_instance_count and train_workers_per_instance must be at least 1")
    if sweep is not None and train_instance_count * train_workers_per_instance > 1:
        raise UserInputError("a sweep's trials train on one instance each; drop the distributed training")
    if sweep is not None and epochs is not None and "epochs" in sweep.space:
        raise UserInputError("epochs is swept; give it in one place")
    if is_blob_sas_url(raw_data):  # a job's inputs are kept with its definition, readable in the workspace
        raise UserInputError(
            f"data {redact(raw_data)}: a SAS token in a job's input is stored with the job's definition;"
            " give an azureml:// datastore path, read with the job's identity"
        )
    values: dict[str, Any] = {"raw_data": Input(type="uri_folder", path=raw_data)}
    if epochs is not None:
        values["epochs"] = epochs
    if accept_data_shift:
        values["accept_data_shift"] = True
    job = training_pipeline_function(deploy_target, dataset_asset, sweep)(**values)
    job.settings.default_compute = compute
    job.settings.force_rerun = False  # reuse where a component is deterministic; see the module docstring
    trained = job.jobs["train"]
    trained.compute = train_compute or compute
    if train_instance_count * train_workers_per_instance > 1:
        trained.resources = JobResourceConfiguration(instance_count=train_instance_count)
        trained.distribution = TensorFlowDistribution(
            worker_count=train_instance_count * train_workers_per_instance
        )
    for node in job.jobs.values():  # code lineage: the snapshot carries no git history
        node.environment_variables = {**(node.environment_variables or {}), CODE_VERSION_ENV: code_version()}
    if identity_client_id:
        job.identity = ManagedIdentityConfiguration(client_id=identity_client_id)
    return job


def _bundle_local_inputs(inputs: dict[str, Any], folder: Path) -> None:
    """Copy each local file or folder input into the compiled folder and refer to it relatively, so
    `az ml job create` uploads it from there (the SDK dumps a local path as `azureml:<path>`, which the
    service would read as an asset name)."""
    for port, binding in inputs.items():
        if not isinstance(binding, dict) or not str(binding.get("path", "")).startswith("azureml:"):
            continue
        local = Path(binding["path"].removeprefix("azureml:"))
        if not local.is_absolute() or not local.exists():
            continue  # an asset reference such as azureml:mnist-mlops-dataset:3
        target = folder / port / local.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, target) if local.is_dir() else shutil.copy2(local, target)
        binding["path"] = "./" + target.relative_to(folder.parent.parent).as_posix()


def compile_aml(out_dir: Path, job: PipelineJob | None = None) -> Path:
    """Write `pipeline.yml` beside the code snapshot (components/, mnist_mlops/, ...) under `out_dir`;
    the pipeline refers to each component's spec by relative path, so the folder is portable and loads
    back with `azure.ai.ml.load_job`. Refuses a pipeline that fails validation, naming node and port."""
    from azure.ai.ml import load_job

    from mnist_mlops.atomic import staged_dir
    from mnist_mlops.azure_jobs import restore_booleans, spec_file_of, validation_problems
    from mnist_mlops.errors import UserInputError
    from mnist_mlops.snapshot import materialize

    job = job or training_job()
    problems = validation_problems(job)
    if problems:
        raise UserInputError("the pipeline is invalid:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-compile-") as scratch:
        job.dump(Path(scratch) / "pipeline.yml")
        document = yaml.safe_load((Path(scratch) / "pipeline.yml").read_text())
    document["inputs"] = restore_booleans(document.get("inputs") or {}, job.component.inputs)
    document["jobs"] = {name: document["jobs"][name] for name in job.jobs}  # in execution order
    with staged_dir(Path(out_dir)) as stage:
        materialize(stage)
        for node_name, node in document["jobs"].items():
            kind = "trial" if node.get("type") == "sweep" else "component"  # a sweep node runs its trial
            node[kind] = "./" + spec_file_of(node[kind]["name"]).relative_to(code_root()).as_posix()
            if node.get("type") == "parallel":  # the SDK dumps the component's task with paths of its own
                node.pop("task")
            _bundle_local_inputs(node.get("inputs") or {}, stage / "inputs" / node_name)
        _bundle_local_inputs(document.get("inputs") or {}, stage / "inputs" / "pipeline")
        (stage / "pipeline.yml").write_text(yaml.safe_dump(document, sort_keys=False))
        loaded = load_job(stage / "pipeline.yml")
        if not loaded._validate().passed:
            raise UserInputError(
                f"the compiled pipeline does not load back: {loaded._validate().error_messages}"
            )
    return Path(out_dir) / "pipeline.yml"
