"""batch_score spread over nodes and processes on Azure ML: a `parallel` component and its merge.

Why in batch_score's folder and not a component folder of its own: it is the same stage with the same
unit of work (`executor.score_mini_batch`), model loading, environment and version; only the runner
differs. A folder of its own would hold no executor of its own (components never import each other),
and a parallel spec cannot be a CLI subcommand, a local runner step or a Kubeflow component, which every
`components/<stage>/component.py` is.

- `parallel_component()`: `mnist_mlops_batch_score_parallel`, the entry script `parallel_entry.py`
  under Azure ML's parallel runner: `images` split into mini-batches of files, each scored by a process
  that loaded the registered model once; rows appended to `rows`, skipped files and versions to
  `records`. Its ports are batch_score's (`images`, `model`); the registry is the job's MLflow
  (MLFLOW_TRACKING_URI), as for every node of the Azure ML pipelines.
- `batch_score_merge`: `mnist_mlops_batch_score_merge`, a command component that turns rows and records
  into batch_score's predictions.csv and a `parallel_score_summary` (`parallel_merge`).

`mnist-mlops specs` writes `parallel_spec.yaml` and `merge_spec.yaml` beside spec.yaml from these, with
the code snapshot and environment of batch_score's own spec.
"""

from typing import Any

from mldesigner import Input, Output, command_component

from mnist_mlops.components.batch_score.component import CODE, ENVIRONMENT, TAGS, VERSION
from mnist_mlops.ports import load_spec

PARALLEL_NAME = "mnist_mlops_batch_score_parallel"
MERGE_NAME = "mnist_mlops_batch_score_merge"
ENTRY_SCRIPT = "components/batch_score/parallel_entry.py"
"""Relative to the code snapshot (the repository root), as the runner imports it."""
SETTINGS: dict[str, Any] = {
    "mini_batch_size": "1024",
    "instance_count": 1,
    "max_concurrency_per_instance": 2,
    "error_threshold": -1,
    "mini_batch_error_threshold": 0,
    "retry_settings": {"max_retries": 2, "timeout": 300},
    "logging_level": "INFO",
}
"""The parallel settings, each a default a pipeline node may override. error_threshold -1: bad files
never fail the job (batch_score skips them too; the summary lists them); mini_batch_error_threshold 0:
a mini-batch that still fails after its retries (a crash, a timeout) fails the job. 1024 files per
mini-batch: a mini-batch is about 0.1 s of scoring on one core, long enough that the runner's own cost
per mini-batch stays small, short enough to spread 100,000 files over many processes."""
IMAGES = (
    "A folder of PNG files at any depth, split by the runner into mini-batches of files (a tarball in it"
    " would be one file that is no PNG)."
)
_SCORE = load_spec("batch_score")


def parallel_component() -> Any:
    """The parallel component as azure-ai-ml builds it (`parallel_run_function`), without its code and
    environment, which `mnist-mlops specs` takes from batch_score's spec."""
    from azure.ai.ml import Input as AmlInput
    from azure.ai.ml import Output as AmlOutput
    from azure.ai.ml.parallel import RunFunction, parallel_run_function

    node = parallel_run_function(
        name=PARALLEL_NAME,
        version=VERSION,
        display_name="Batch score images in parallel",
        description=(
            "Score a folder of PNGs with a ready registry version (models:/<name>/<version> or @alias) across"
            " nodes and processes: Azure ML's parallel runner hands each process mini-batches of files; each"
            " process loads the model once (its ONNX export when it has one) and appends one CSV row per"
            " scored file to `rows`. Files that cannot be scored get no row (they count against"
            " error_threshold) and are recorded with their reason in `records`. Merge both with"
            " mnist_mlops_batch_score_merge into batch_score's predictions.csv and a summary."
        ),
        tags=TAGS,
        is_deterministic=False,
        inputs={
            "images": AmlInput(type="uri_folder", mode="ro_mount", description=IMAGES),
            "model": AmlInput(type="string", description=_SCORE["inputs"]["model"]["description"]),
        },
        outputs={
            "rows": AmlOutput(
                type="uri_file",
                description=(
                    "One CSV line per scored file, path,class,label,confidence, (expected left empty), in the"
                    " order mini-batches finished; no header."
                ),
            ),
            "records": AmlOutput(
                type="uri_folder",
                description="One JSON-lines file per process: the version it loaded, skipped files and why.",
            ),
        },
        input_data="${{inputs.images}}",
        task=RunFunction(
            entry_script=ENTRY_SCRIPT,
            program_arguments=(
                "--images ${{inputs.images}} --model ${{inputs.model}} --records ${{outputs.records}}"
            ),
            append_row_to="${{outputs.rows}}",
        ),
        **SETTINGS,
    )
    return node.component


@command_component(
    name=MERGE_NAME,
    version=VERSION,
    display_name="Merge parallel batch scores",
    description=(
        "Merge the rows and records of mnist_mlops_batch_score_parallel (or of a Kubeflow fan-out) over the"
        " whole images folder: predictions.csv exactly as batch_score writes it (sorted by path, expected"
        " filled as `labels` says) and a parallel_score_summary (scored, skipped with reasons, missing,"
        " class distribution, accuracy). Refuses processes that scored with different versions."
    ),
    is_deterministic=False,
    tags=TAGS,
    environment=ENVIRONMENT,
    code=CODE,
)
def batch_score_merge(
    images: Input(type="uri_folder", description=IMAGES),
    rows: Input(type="uri_file", description="The parallel component's rows."),
    records: Input(type="uri_folder", description="The parallel component's records."),
    predictions: Output(type="uri_file", description=_SCORE["outputs"]["predictions"]["description"]),
    summary: Output(type="uri_file", description="parallel_score_summary.json: counts, skipped, missing."),
    registry: Input(
        type="string", optional=True, description=_SCORE["inputs"]["registry"]["description"]
    ) = None,
    labels: Input(
        type="string",
        default="auto",
        enum=_SCORE["inputs"]["labels"]["enum"],
        description=_SCORE["inputs"]["labels"]["description"],
    ) = "auto",
):
    from mnist_mlops.components.batch_score.parallel_merge import merge_parallel_score
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        merge_parallel_score(
            images, [rows], [records], predictions, summary, labels=labels, registry=registry
        )
