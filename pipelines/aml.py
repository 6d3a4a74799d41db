"""The pipeline as an Azure ML pipeline job, composed with `azure.ai.ml.dsl.pipeline`.

ingest -> preprocess -> train -> evaluate -> register -> deploy, the graph of `pipelines.graph`.

The blessing gates register and deploy through the components themselves, not a `dsl.condition`:
register declines an unblessed model (writing the gate's reasons) and deploy reads register's record and
records "skipped". Why: the gate then holds wherever a component runs (a notebook, the designer, KFP,
the CLI), the reasons are always written down, and no control output is needed that only AML honours.

Settings (`training_job`): a default compute for every node, a separate (GPU) compute for train, a
user-assigned managed identity for data and registry access (least privilege: the identity needs only
its datastore and workspace roles, not the submitter's), and reuse per node from each component's
`is_deterministic` (preprocess and train reuse results for identical inputs; ingest, evaluate, register
and deploy always run, as they read the outside world: the source, the champion, the registry).
(No `from __future__ import annotations`: the SDK reads the port annotations at definition time.)
"""

import shutil
import tempfile
from pathlib import Path

import yaml
from azure.ai.ml import Input, dsl
from azure.ai.ml.entities import ManagedIdentityConfiguration, PipelineJob

from mnist_mlops.components import deploy, evaluate, ingest, preprocess, register, train


@dsl.pipeline(
    name="mnist_mlops_training",
    display_name="MNIST training",
    description=(
        "Ingest a versioned, validated MNIST dataset, train a CNN, judge it against the production champion "
        "and KPI thresholds, register it if blessed and deploy it after infra validation."
    ),
)
def training_pipeline(
    raw_data: Input(type="uri_folder"),
    epochs: int = 12,
    seed: int = 42,
    deploy_target: str = "azureml",
    endpoint_name: str = "mnist-mlops",
):
    fetched = ingest(source_data=raw_data)
    prepared = preprocess(dataset=fetched.outputs.dataset, seed=seed)
    trained = train(preprocessed=prepared.outputs.preprocessed, epochs=epochs, seed=seed)
    judged = evaluate(challenger=trained.outputs.model, preprocessed=prepared.outputs.preprocessed)
    registered = register(
        model=trained.outputs.model,
        blessing=judged.outputs.blessing,
        evaluation=judged.outputs.evaluation,
        training_summary=trained.outputs.training_summary,
        data_report=fetched.outputs.data_report,
        preprocessed=prepared.outputs.preprocessed,
    )
    deployed = deploy(
        test_data=prepared.outputs.preprocessed,
        registration_record=registered.outputs.registration_record,
        target=deploy_target,
        endpoint_name=endpoint_name,
    )
    return {
        "data_report": fetched.outputs.data_report,
        "model": trained.outputs.model,
        "evaluation": judged.outputs.evaluation,
        "blessing": judged.outputs.blessing,
        "registration_record": registered.outputs.registration_record,
        "deployment_record": deployed.outputs.deployment_record,
    }


def training_job(
    raw_data: str = "azureml://datastores/workspaceblobstore/paths/mnist/",
    *,
    compute: str = "cpu-cluster",
    train_compute: str = "gpu-cluster",
    identity_client_id: str | None = None,
    epochs: int = 12,
    deploy_target: str = "azureml",
) -> PipelineJob:
    """The pipeline job with its settings: computes, identity and per-node reuse."""
    job = training_pipeline(
        raw_data=Input(type="uri_folder", path=raw_data), epochs=epochs, deploy_target=deploy_target
    )
    job.settings.default_compute = compute
    job.settings.force_rerun = False  # reuse where a component is deterministic; see the module docstring
    job.jobs["trained"].compute = train_compute
    if identity_client_id:
        job.identity = ManagedIdentityConfiguration(client_id=identity_client_id)
    return job


def compile_aml(out_dir: Path, job: PipelineJob | None = None) -> Path:
    """Write `pipeline.yml` plus each component folder (spec.yaml, code, environment) under `out_dir`;
    the pipeline refers to the components by relative path, so the folder is portable and loads back
    with `azure.ai.ml.load_job`. Refuses a pipeline that fails validation, naming node and port."""
    from azure.ai.ml import load_job

    from mnist_mlops.atomic import staged_dir
    from mnist_mlops.azure_jobs import validation_problems
    from mnist_mlops.errors import UserInputError
    from mnist_mlops.ports import component_dir

    job = job or training_job()
    problems = validation_problems(job)
    if problems:
        raise UserInputError("the pipeline is invalid:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-compile-") as scratch:
        job.dump(Path(scratch) / "pipeline.yml")
        document = yaml.safe_load((Path(scratch) / "pipeline.yml").read_text())
    with staged_dir(Path(out_dir)) as stage:
        for node in document["jobs"].values():
            name = node["component"]["name"].removeprefix("mnist_mlops_")
            if not (stage / "components" / name).exists():
                shutil.copytree(
                    component_dir(name),
                    stage / "components" / name,
                    ignore=shutil.ignore_patterns("tests", "__pycache__"),
                )
            node["component"] = f"./components/{name}/spec.yaml"
        (stage / "pipeline.yml").write_text(yaml.safe_dump(document, sort_keys=False))
        loaded = load_job(stage / "pipeline.yml")
        if not loaded._validate().passed:
            raise UserInputError(
                f"the compiled pipeline does not load back: {loaded._validate().error_messages}"
            )
    return Path(out_dir) / "pipeline.yml"
