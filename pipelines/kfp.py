"""The pipeline for Kubeflow Pipelines v2: one lightweight component per stage, each a thin wrapper over
the same `run_<stage>` executor that the AML components and the local runner call, and the training
pipeline wired like pipelines/graph.py.

Ports: every wrapper's parameters are its stage's spec.yaml ports, same names and defaults (drift-
tested); uri_folder ports are Dataset (evaluate's report folder: Artifact), mlflow_model ports Model,
uri_file ports Artifact whose `.path` is the file itself. The pipeline feeds ingest a `source_uri`
(its folder port `source_data` stays for imported artifacts) and takes evaluate's thresholds as JSON
text, which a small `kpi_thresholds` step writes to the file evaluate reads.

No control flow: deploy reads register's record and deploys exactly the registered version, or writes
a "skipped" record with the gate's reasons, as in the local runner. The champion comes from the
resolve_champion task, whose folder always exists (with a record when there is no champion), so no
`dsl.If` branches need merging.

Images: the components run on `python:3.11` and pip-install the project at start, which suits
`kfp.local.SubprocessRunner` (the packages are already installed there). On a cluster that would fetch
`mnist-mlops` from whatever index the pod sees: run each component in its own image instead, built
from its `environment/Dockerfile` (`mnist-mlops image build`) and pushed, as `base_image` with no
`packages_to_install`, so the pinned environment AML runs is the one KFP runs.

KFP reads the annotations at decoration time, so no `from __future__ import annotations` here; and its
type parser rejects PEP 604 unions (`str | None`), hence `Optional`.
"""

# ruff: noqa: UP045

import tempfile
from pathlib import Path
from typing import Optional

from kfp import compiler, dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.ports import load_spec

BASE_IMAGE = "python:3.11"
DATA_PACKAGES = ["mnist-mlops"]
MODEL_PACKAGES = ["mnist-mlops[model]"]
"""The model stages' runtime (TensorFlow, MLflow, the scoring server), as their Dockerfile installs it."""
PIPELINE_FILE = "mnist_mlops_training.yaml"


@dsl.component(base_image=BASE_IMAGE, packages_to_install=DATA_PACKAGES)
def ingest(
    dataset: Output[Dataset],
    data_report: Output[Artifact],
    source_data: Optional[Input[Dataset]] = None,
    source_uri: Optional[str] = None,
    source_sha256: Optional[str] = None,
    reference_report: Optional[Input[Artifact]] = None,
    max_age_days: int = 365,
    on_stale: str = "warn",
    on_invalid: str = "fail",
    max_invalid_fraction: float = 0.001,
    max_prior_shift: float = 0.05,
    max_stat_shift: float = 0.1,
):
    """Fetch MNIST from a URI (or an imported folder) into a versioned dataset with a data report."""
    from mnist_mlops.components.ingest.executor import run_ingest
    from mnist_mlops.errors import UserInputError, exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("ingest", locals())
        if (source_data is None) == (source_uri is None):
            raise UserInputError("give exactly one of source_data (a folder artifact) or source_uri (a URI)")
        run_ingest(
            source_data.path if source_data else source_uri,
            dataset.path,
            data_report.path,
            source_sha256=source_sha256,
            reference_report=reference_report.path if reference_report else None,
            max_age_days=max_age_days,
            on_stale=on_stale,
            on_invalid=on_invalid,
            max_invalid_fraction=max_invalid_fraction,
            max_prior_shift=max_prior_shift,
            max_stat_shift=max_stat_shift,
        )


@dsl.component(base_image=BASE_IMAGE, packages_to_install=DATA_PACKAGES)
def preprocess(
    dataset: Input[Dataset],
    preprocessed: Output[Dataset],
    validation_fraction: float = 0.1,
    seed: int = 42,
):
    """Seeded stratified train/validation split, hold-out test split and baseline statistics."""
    from mnist_mlops.components.preprocess.executor import run_preprocess
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("preprocess", locals())
        run_preprocess(dataset.path, preprocessed.path, validation_fraction=validation_fraction, seed=seed)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=MODEL_PACKAGES)
def train(
    preprocessed: Input[Dataset],
    model: Output[Model],
    training_summary: Output[Artifact],
    training_curves: Output[Artifact],
    epochs: int = 12,
    batch_size: int = 128,
    learning_rate: float = 0.003,
    seed: int = 42,
    augment: bool = True,
    max_train_images: int = 0,
):
    """Train the CNN; writes an MLflow model, the training summary and the curves."""
    from mnist_mlops.components.train.executor import run_train
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("train", locals())
        run_train(
            preprocessed.path,
            model.path,
            training_summary.path,
            training_curves.path,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            augment=augment,
            max_train_images=max_train_images,
        )


@dsl.component(base_image=BASE_IMAGE, packages_to_install=DATA_PACKAGES)
def kpi_thresholds(thresholds_json: str, thresholds: Output[Artifact]):
    """evaluate's thresholds file from a pipeline parameter: a kpi_thresholds JSON document, or empty
    for evaluate's built-in defaults. Checked against the schema before train starts, not after."""
    import json

    from mnist_mlops import contracts
    from mnist_mlops.components.evaluate.executor import DEFAULT_THRESHOLDS
    from mnist_mlops.errors import UserInputError, exit_on_user_error

    with exit_on_user_error():
        try:
            document = json.loads(thresholds_json) if thresholds_json.strip() else DEFAULT_THRESHOLDS
        except ValueError as error:
            raise UserInputError(f"thresholds: not valid JSON ({error})") from None
        contracts.write_json(thresholds.path, document, "kpi_thresholds")


@dsl.component(base_image=BASE_IMAGE, packages_to_install=MODEL_PACKAGES)
def evaluate(
    challenger: Input[Model],
    preprocessed: Input[Dataset],
    evaluation: Output[Artifact],
    blessing: Output[Artifact],
    champion: Optional[Input[Dataset]] = None,
    thresholds: Optional[Input[Artifact]] = None,
):
    """Judge the challenger (and the champion, if given) against the KPI thresholds; write the blessing."""
    from mnist_mlops.components.evaluate.executor import run_evaluate
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("evaluate", locals())
        run_evaluate(
            challenger.path,
            preprocessed.path,
            evaluation.path,
            blessing.path,
            champion_dir=champion.path if champion else None,
            thresholds_path=thresholds.path if thresholds else None,
        )


@dsl.component(base_image=BASE_IMAGE, packages_to_install=MODEL_PACKAGES)
def resolve_champion(
    champion: Output[Dataset],
    model_name: str = "mnist-mlops",
    pointer: str = "production",
    registry: Optional[str] = None,
):
    """The version the registry pointer names, as evaluate's champion, or a record that there is none."""
    from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("resolve_champion", locals())
        run_resolve_champion(champion.path, model_name=model_name, pointer=pointer, registry=registry)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=MODEL_PACKAGES)
def register(
    model: Input[Model],
    blessing: Input[Artifact],
    evaluation: Input[Artifact],
    training_summary: Input[Artifact],
    data_report: Input[Artifact],
    preprocessed: Input[Dataset],
    registration_record: Output[Artifact],
    model_name: str = "mnist-mlops",
    registry: Optional[str] = None,
    pipeline_run_id: Optional[str] = None,
):
    """Register the model if blessed, verified and with its lineage; else record why not."""
    from mnist_mlops.components.register.executor import run_register
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("register", locals())
        run_register(
            model.path,
            blessing.path,
            evaluation.path,
            training_summary.path,
            data_report.path,
            preprocessed.path,
            registration_record.path,
            model_name=model_name,
            registry=registry,
            pipeline_run_id=pipeline_run_id,
        )


@dsl.component(base_image=BASE_IMAGE, packages_to_install=MODEL_PACKAGES)
def deploy(
    test_data: Input[Dataset],
    deployment_record: Output[Artifact],
    model: Optional[str] = None,
    registration_record: Optional[Input[Artifact]] = None,
    target: str = "azureml",
    registry: Optional[str] = None,
    endpoint_name: Optional[str] = None,
    port: int = 5001,
    canary_count: int = 64,
    max_canary_p99_ms: float = 50.0,
    subscription_id: Optional[str] = None,
    resource_group: Optional[str] = None,
    workspace: Optional[str] = None,
    compute: Optional[str] = None,
    instance_type: Optional[str] = None,
    instance_count: int = 1,
    mirror_percent: int = 0,
):
    """Validate the registered version in the real scoring server, then move `production` to it."""
    from mnist_mlops.components.deploy.executor import run_deploy
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.ports import check_parameters

    with exit_on_user_error():
        check_parameters("deploy", locals())
        run_deploy(
            model,
            test_data.path,
            deployment_record.path,
            registration_record_path=registration_record.path if registration_record else None,
            target=target,
            registry=registry,
            endpoint_name=endpoint_name,
            port=port,
            canary_count=canary_count,
            max_canary_p99_ms=max_canary_p99_ms,
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace=workspace,
            compute=compute,
            instance_type=instance_type,
            instance_count=instance_count,
            mirror_percent=mirror_percent,
        )


COMPONENTS = {
    "ingest": ingest,
    "preprocess": preprocess,
    "resolve_champion": resolve_champion,
    "train": train,
    "evaluate": evaluate,
    "register": register,
    "deploy": deploy,
}
"""The KFP component of each stage, by stage name."""


def _as_specified(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
    """Name the task as its spec does and cache it only if the spec says it is deterministic: a cached
    ingest, evaluate, register or deploy would stand for a fetch, verdict, version or rollout that never
    happened."""
    spec = load_spec(stage)
    return task.set_display_name(spec["display_name"]).set_caching_options(spec["is_deterministic"])


@dsl.pipeline(
    name="mnist-mlops-training",
    description=(
        "Ingest a versioned, validated MNIST dataset, train a CNN, judge it against KPI thresholds, "
        "register it if blessed and deploy the registered version."
    ),
)
def training_pipeline(
    source_uri: str,
    registry: str,
    source_sha256: str = "",
    validation_fraction: float = 0.1,
    seed: int = 42,
    epochs: int = 12,
    batch_size: int = 128,
    learning_rate: float = 0.003,
    max_train_images: int = 0,
    thresholds: str = "",
    model_name: str = "mnist-mlops",
    canary_count: int = 64,
    max_canary_p99_ms: float = 50.0,
):
    """ingest -> preprocess -> resolve_champion -> train -> evaluate -> register -> deploy.

    `thresholds` is a kpi_thresholds JSON document ("" = evaluate's defaults); `source_sha256` pins an
    http(s) tarball ("" = none). deploy targets `local`: the version is validated in a scoring server
    started in the task's own environment, and the registry's `production` alias moves.
    """
    fetched = _as_specified(ingest(source_uri=source_uri, source_sha256=source_sha256), "ingest")
    prepared = _as_specified(
        preprocess(dataset=fetched.outputs["dataset"], validation_fraction=validation_fraction, seed=seed),
        "preprocess",
    )
    kpis = kpi_thresholds(thresholds_json=thresholds).set_display_name("KPI thresholds")
    resolved = _as_specified(resolve_champion(model_name=model_name, registry=registry), "resolve_champion")
    trained = _as_specified(
        train(
            preprocessed=prepared.outputs["preprocessed"],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            max_train_images=max_train_images,
        ),
        "train",
    ).after(kpis)
    judged = _as_specified(
        evaluate(
            challenger=trained.outputs["model"],
            preprocessed=prepared.outputs["preprocessed"],
            champion=resolved.outputs["champion"],
            thresholds=kpis.outputs["thresholds"],
        ),
        "evaluate",
    )
    registered = _as_specified(
        register(
            model=trained.outputs["model"],
            blessing=judged.outputs["blessing"],
            evaluation=judged.outputs["evaluation"],
            training_summary=trained.outputs["training_summary"],
            data_report=fetched.outputs["data_report"],
            preprocessed=prepared.outputs["preprocessed"],
            model_name=model_name,
            registry=registry,
            pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ),
        "register",
    )
    _as_specified(
        deploy(
            test_data=prepared.outputs["preprocessed"],
            registration_record=registered.outputs["registration_record"],
            target="local",
            registry=registry,
            canary_count=canary_count,
            max_canary_p99_ms=max_canary_p99_ms,
        ),
        "deploy",
    )


def compile_kfp(out_dir: Path) -> Path:
    """Write the pipeline's IR YAML to `out_dir`; atomically, so an upload never reads half a file."""
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / PIPELINE_FILE
        compiler.Compiler().compile(training_pipeline, package_path=str(staged))
        target = Path(out_dir) / PIPELINE_FILE
        atomic_write_bytes(target, staged.read_bytes())
    return target
