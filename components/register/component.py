"""The register component: typed ports over `executor.run_register`.

Not deterministic: each run creates a new registry version (a cached result would point at a version
that a retry never made).
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_register",
    version=VERSION,
    display_name="Register blessed model",
    description=(
        "Register a blessed model in the MLflow registry with its lineage (dataset, data report, code, "
        "components, environment, run, metrics, data-shift decision) and its reference bundle (the data "
        "it was trained and tested on); verified by loading it back before it is marked ready and "
        "aliased 'challenger'. An unblessed model is declined with the gate's reasons."
    ),
    is_deterministic=False,
    tags={"stage": "register", "project": "mnist-mlops", "framework": "mlflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def register(
    model: Input(type="mlflow_model", description="The trained model."),
    blessing: Input(
        type="uri_file", description="blessing.json from evaluate (its data_shift decision goes to the tags)."
    ),
    evaluation: Input(type="uri_folder", description="evaluate's folder (evaluation_report.json)."),
    training_summary: Input(type="uri_file", description="training_summary.json from train."),
    data_report: Input(
        type="uri_file", description="data_report.json from ingest; kept in the reference bundle."
    ),
    preprocessed: Input(
        type="uri_folder",
        description=(
            "preprocess output; its test images are the golden batch, its baseline and test split the "
            "reference bundle."
        ),
    ),
    registration_record: Output(type="uri_file", description="registration_record.json: version or reasons."),
    model_name: Input(
        type="string", default="mnist-mlops", description="Registered model name."
    ) = "mnist-mlops",
    registry: Input(
        type="string",
        optional=True,
        description="MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db).",
    ) = None,
    pipeline_run_id: Input(type="string", optional=True, description="Recorded in the lineage.") = None,
):
    from mnist_mlops.components.register.executor import run_register
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_register(
            model,
            blessing,
            evaluation,
            training_summary,
            data_report,
            preprocessed,
            registration_record,
            model_name=model_name,
            registry=registry,
            pipeline_run_id=pipeline_run_id,
        )
