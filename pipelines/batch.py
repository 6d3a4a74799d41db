"""The batch-scoring pipeline: a folder of PNGs scored by a registered model across processes, then
merged once into batch_score's predictions.csv and a `parallel_score_summary`.

- Azure ML (`batch_scoring_job`): the data asset (`images`, a uri_folder: `azureml:<name>:<version>` or
  `@latest`) and the model by registry reference (`models:/<name>@production`, resolved in the job's
  MLflow registry) go to batch_score's parallel component (`components/batch_score/parallel_spec.yaml`:
  `instance_count` nodes x `max_concurrency_per_instance` processes, mini-batches of files), whose rows
  and records go to the merge (`merge_spec.yaml`); the pipeline's outputs are the merged predictions
  and summary. `compile_batch` writes it like the training pipeline (`compile_aml`) with a daily
  schedule beside it (`pipelines.schedules`).
- Kubeflow (`kfp_batch_pipeline`): the same entry script and merge in the model job image; the input is
  sharded by file index and fanned out with `dsl.ParallelFor`, one task per shard playing the parallel
  runner for one process (`parallel_entry.score_shard`), and `dsl.Collected` hands every shard's rows
  and records to one merge task.
"""

import sys
from functools import cache
from pathlib import Path
from typing import Any

from mnist_mlops.components.batch_score.parallel import SETTINGS
from mnist_mlops.errors import UserInputError

PIPELINE_NAME = "mnist_mlops_batch_scoring"
KFP_PIPELINE_NAME = "mnist-mlops-batch-scoring"
KFP_PIPELINE_FILE = "mnist_mlops_batch_scoring.yaml"
IMAGES = "azureml:mnist-mlops-batch-images@latest"
PRODUCTION = "models:/mnist-mlops@production"
SCHEDULE_NAME = "mnist-mlops-daily-batch-score"
SHARD_ROWS = "rows.csv"
SHARD_RECORDS = "records"
"""What a Kubeflow shard task writes into its output folder: its rows and its process's records."""
DESCRIPTION = (
    "Score a folder of PNGs with a registered model across nodes and processes, then merge the rows into"
    " batch_score's predictions.csv and a summary of scored, skipped and missing files."
)


@cache
def batch_components() -> tuple[Any, Any]:
    """batch_score's parallel component and its merge, as Azure ML loads them from the code snapshot."""
    from azure.ai.ml import load_component

    from mnist_mlops.snapshot import code_root

    folder = code_root() / "components" / "batch_score"
    return load_component(folder / "parallel_spec.yaml"), load_component(folder / "merge_spec.yaml")


def _checked(model: str, labels: str, **counts: int) -> None:
    """The values Azure ML would only refuse inside a step: a registry reference, a labels mode, counts."""
    from mnist_mlops.ports import check_value
    from mnist_mlops.serving.scorer import parse_model_uri

    parse_model_uri(model)
    merge = batch_components()[1]
    check_value(merge.name, "labels", {"type": "string", "enum": list(merge.inputs["labels"].enum)}, labels)
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{name}={value!r}: must be a whole number >= 1")


def batch_scoring_job(
    images: str = IMAGES,
    model: str = PRODUCTION,
    *,
    labels: str = "auto",
    compute: str = "cpu-cluster",
    instance_count: int = SETTINGS["instance_count"],
    max_concurrency_per_instance: int = SETTINGS["max_concurrency_per_instance"],
    mini_batch_size: int = int(SETTINGS["mini_batch_size"]),
    identity_client_id: str | None = None,
) -> Any:
    """The Azure ML batch-scoring pipeline job: parallel scoring, then the merge."""
    from azure.ai.ml import Input, dsl
    from azure.ai.ml.entities import JobResourceConfiguration, ManagedIdentityConfiguration

    from mnist_mlops.provenance import CODE_VERSION_ENV, code_version

    _checked(
        model,
        labels,
        instance_count=instance_count,
        max_concurrency_per_instance=max_concurrency_per_instance,
        mini_batch_size=mini_batch_size,
    )
    parallel, merge = batch_components()

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def batch_scoring(images: Input(type="uri_folder"), model: str, labels: str) -> dict[str, Any]:
        scored = parallel(images=images, model=model)
        scored.name = "score"
        scored.resources = JobResourceConfiguration(instance_count=instance_count)
        scored.max_concurrency_per_instance = max_concurrency_per_instance
        scored.mini_batch_size = str(mini_batch_size)
        merged = merge(images=images, rows=scored.outputs.rows, records=scored.outputs.records, labels=labels)
        merged.name = "merge"
        return {"predictions": merged.outputs.predictions, "summary": merged.outputs.summary}

    job = batch_scoring(images=Input(type="uri_folder", path=images), model=model, labels=labels)
    job.settings.default_compute = compute
    for node in job.jobs.values():
        node.environment_variables = {**(node.environment_variables or {}), CODE_VERSION_ENV: code_version()}
    if identity_client_id:
        job.identity = ManagedIdentityConfiguration(client_id=identity_client_id)
    return job


def compile_batch(out_dir: Path, job: Any | None = None, *, schedule: bool = True) -> list[Path]:
    """Write the batch pipeline (`compile_aml`: pipeline.yml beside the code snapshot) and, with
    `schedule`, its daily schedule (03:00 UTC) for `az ml schedule create --file`; returns the files."""
    from mnist_mlops.pipelines.aml import compile_aml
    from mnist_mlops.pipelines.schedules import EXPERIMENT_NAME, retraining_schedule, write_schedule

    job = job or batch_scoring_job()
    job.experiment_name = job.experiment_name or EXPERIMENT_NAME
    pipeline_file = compile_aml(Path(out_dir), job)
    if not schedule:
        return [pipeline_file]
    daily = retraining_schedule(
        job,
        name=SCHEDULE_NAME,
        frequency="day",
        week_days=None,
        display_name="MNIST batch scoring",
        description="Score the batch images with the production model every day at 03:00 UTC.",
        hours=3,
    )
    return [pipeline_file, write_schedule(daily, Path(out_dir) / f"{SCHEDULE_NAME}.yml", pipeline_file)]


def kfp_batch_pipeline(shards: int, image: str) -> Any:
    """The Kubeflow batch pipeline: `shards` scoring tasks in a `dsl.ParallelFor`, each scoring every
    `shards`-th file of `images` in `image` (batch_score's job image), then one merge task over all of
    them (`dsl.Collected`). `images` is imported by URI (a path under the pipeline root with kfp.local),
    `registry` is an MLflow tracking URI the pods reach."""
    from kfp import dsl

    from mnist_mlops.pipelines.kfp import LAUNCHER

    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise UserInputError(f"shards={shards!r}: must be a whole number >= 1")

    @dsl.container_component
    def score_shard(
        images: dsl.Input[dsl.Dataset],
        model: str,
        registry: str,
        shard: int,
        shards: int,
        mini_batch_size: int,
        scored: dsl.Output[dsl.Dataset],
    ):
        return dsl.ContainerSpec(
            image=image,
            command=[*LAUNCHER, "--", "python", "-m", "mnist_mlops.components.batch_score.parallel_entry"],
            args=[
                *("--images", images.path, "--model", model, "--registry", registry),
                *("--shard", shard, "--shards", shards, "--mini-batch-size", mini_batch_size),
                *("--rows", dsl.ConcatPlaceholder([scored.path, f"/{SHARD_ROWS}"])),
                *("--records", dsl.ConcatPlaceholder([scored.path, f"/{SHARD_RECORDS}"])),
            ],
        )

    @dsl.container_component
    def merge(
        images: dsl.Input[dsl.Dataset],
        scored: dsl.Input[list[dsl.Dataset]],
        registry: str,
        labels: str,
        predictions: dsl.Output[dsl.Artifact],
        summary: dsl.Output[dsl.Artifact],
    ):
        return dsl.ContainerSpec(
            image=image,
            command=[*LAUNCHER, "--", "python", "-m", "mnist_mlops.pipelines.batch", "merge-shards", "{{$}}"],
            args=[
                *("--images", images.path, "--registry", registry, "--labels", labels),
                *("--predictions", predictions.path, "--summary", summary.path),
            ],
        )

    @dsl.pipeline(name=KFP_PIPELINE_NAME, description=DESCRIPTION)
    def batch_scoring(
        images: str,
        registry: str,
        model: str = PRODUCTION,
        labels: str = "auto",
        mini_batch_size: int = int(SETTINGS["mini_batch_size"]),
    ):
        imported = dsl.importer(artifact_uri=images, artifact_class=dsl.Dataset, reimport=False)
        with dsl.ParallelFor(list(range(shards))) as shard:
            scored = score_shard(
                images=imported.output,
                model=model,
                registry=registry,
                shard=shard,
                shards=shards,
                mini_batch_size=mini_batch_size,
            ).set_caching_options(False)  # an alias moves: never reuse predictions
        merge(
            images=imported.output,
            scored=dsl.Collected(scored.outputs["scored"]),
            registry=registry,
            labels=labels,
        ).set_caching_options(False)

    return batch_scoring


def compile_kfp_batch(out_dir: Path, registry: str = "localhost/", shards: int = 4) -> Path:
    """Write the Kubeflow batch pipeline's IR YAML to `out_dir`, atomically."""
    import tempfile

    from kfp import compiler

    from mnist_mlops.atomic import atomic_write_bytes
    from mnist_mlops.pipelines.kfp import job_images

    if registry and not registry.endswith("/"):
        raise UserInputError(f"image registry {registry!r}: give a prefix ending in '/' (myacr.azurecr.io/)")
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / KFP_PIPELINE_FILE
        pipeline = kfp_batch_pipeline(shards, job_images(registry)("batch_score"))
        compiler.Compiler().compile(pipeline, package_path=str(staged))
        target = Path(out_dir) / KFP_PIPELINE_FILE
        atomic_write_bytes(target, staged.read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    """`merge-shards EXECUTOR_INPUT ...`: the Kubeflow merge task, given every shard task's output folder
    through the executor input (KFP has no placeholder for a list of artifacts)."""
    import argparse
    import json

    from mnist_mlops.components.batch_score.parallel_merge import merge_parallel_score
    from mnist_mlops.errors import exit_on_user_error
    from mnist_mlops.kfp_executor import local_path

    parser = argparse.ArgumentParser(prog="python -m mnist_mlops.pipelines.batch")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    merge = commands.add_parser("merge-shards", help=main.__doc__)
    merge.add_argument("executor_input", help="the task's executor input JSON ({{$}})")
    for option in ("--images", "--predictions", "--summary", "--registry"):
        merge.add_argument(option, required=True)
    merge.add_argument("--labels", default="auto")
    arguments = parser.parse_args(argv)
    with exit_on_user_error():
        try:
            listing = json.loads(arguments.executor_input)["inputs"]["artifacts"]["scored"]["artifacts"]
            shards = [Path(local_path(artifact["uri"])) for artifact in listing]
        except (ValueError, KeyError, TypeError):
            raise UserInputError("the executor input has no list of `scored` artifacts with URIs") from None
        summary = merge_parallel_score(
            arguments.images,
            [shard / SHARD_ROWS for shard in shards],
            [shard / SHARD_RECORDS for shard in shards],
            arguments.predictions,
            arguments.summary,
            labels=arguments.labels,
            registry=arguments.registry,
        )
    print(f"merged {len(shards)} shards: {summary['scored']} scored, {summary['skipped_count']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
