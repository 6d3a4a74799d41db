"""The batch_score component: typed ports over `executor.run_batch_score`.

Not deterministic: the model is a registry reference, and an alias (`@production`) may point at another
version tomorrow, so AML must never replay an earlier run's predictions for the same inputs. (A fixed
version would be safe to reuse, but the choice cannot depend on a parameter's value.)
"""

from mldesigner import Input, Output, command_component

VERSION = "0.2.0"
TAGS = {"stage": "batch_score", "project": "mnist-mlops", "framework": "mlflow"}
ENVIRONMENT = "../environments/model/environment.yaml"
CODE = "../.."
# TAGS, ENVIRONMENT and CODE: shared with the parallel component and its merge (`parallel.py`), the same
# stage, image and code.


@command_component(
    name="mnist_mlops_batch_score",
    version=VERSION,
    display_name="Batch score images",
    description=(
        "Score a folder or tarball of PNGs of the model's image shape with a ready registry version "
        "(models:/<name>/<version> or @alias; never a local path), in mini-batches of files. Bad files "
        "(not a PNG, truncated, wrong size, decompression bombs) are skipped and reported, never fatal. "
        "Files are labelled by their class folders as `labels` says (labels=folders refuses classes the "
        "model does not answer). Progress is checkpointed per mini-batch beside the predictions, so an "
        "interrupted run resumes; outputs appear atomically."
    ),
    is_deterministic=False,
    tags=TAGS,
    environment=ENVIRONMENT,
    code=CODE,
)
def batch_score(
    images: Input(
        type="uri_folder",
        description="PNG files at any depth, or a folder holding one .tar.gz (locally also a .tar.gz path).",
    ),
    predictions: Output(
        type="uri_file",
        description=(
            "predictions.csv: path,class,label,confidence,expected (class and label: the prediction's "
            "index and name; expected: the class folder's name, when labelled)."
        ),
    ),
    summary: Output(
        type="uri_file", description="batch_score_summary.json: counts, skipped files, classes, accuracy."
    ),
    model: Input(
        type="string", description="Registry reference: models:/<name>/<version> or models:/<name>@<alias>."
    ),
    registry: Input(
        type="string",
        optional=True,
        description="MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db).",
    ) = None,
    mini_batch_size: Input(
        type="integer",
        default=2048,
        min=1,
        max=65536,
        description="Files per mini-batch: the unit of work and of checkpointing.",
    ) = 2048,
    workers: Input(
        type="integer",
        default=1,
        min=1,
        max=32,
        description="Scoring processes, each loading the model once (1: score in the component's process).",
    ) = 1,
    labels: Input(
        type="string",
        default="auto",
        enum=["auto", "folders", "none"],
        description=(
            "Expected classes from folder names: auto (a folder whose siblings holding files all name "
            "classes of the model), folders (every file's folder must name one), none."
        ),
    ) = "auto",
):
    from mnist_mlops.components.batch_score.executor import run_batch_score
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_batch_score(
            model,
            images,
            predictions,
            summary,
            registry=registry,
            mini_batch_size=mini_batch_size,
            workers=workers,
            labels=labels,
        )
