"""The monitor component: typed ports over `executor.run_monitor`.

Not deterministic: it reads a request log that grows between runs and a registry whose serving version
moves (and may start a retraining), so a cached report would describe traffic that is long gone. The
retrain ports configure the handler `on_breach` names (`mnist_mlops.retraining`); the monitor passes
them through, and reads `registry` itself only to find the serving model's training data.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_monitor",
    version=VERSION,
    display_name="Monitor production traffic",
    description=(
        "Compare the scoring server's recent requests with the serving model's training data (by default its "
        "reference in the registry): input drift (PSI and KS distance of mean intensity and ink fraction), "
        "prediction drift (total variation against the class priors), low-confidence share, 4xx/5xx rates "
        "and p50/p99 latency, each over a window of recent requests against a threshold. After an accepted "
        "data shift it also says whether clients moved with the data. Writes the report and a "
        "drift-over-time plot; on a breach it alerts, writes a retrain request and hands it to a handler: "
        "the training pipeline run here, the Azure ML training pipeline submitted, or your own."
    ),
    is_deterministic=False,
    tags={"stage": "monitor", "project": "mnist-mlops", "framework": "numpy"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def monitor(
    requests: Input(
        type="uri_folder", description="The scoring server's request log folder (*.jsonl request records)."
    ),
    report: Output(
        type="uri_folder",
        description="monitor_report.json, drift.png, report.html; on an alert retrain_request.json.",
    ),
    baseline: Input(
        type="uri_folder",
        optional=True,
        description=(
            "preprocess output of the serving model's training data (its baseline_statistics.json); "
            "default: the reference bundle in the registry of the version that served the newest request."
        ),
    ) = None,
    thresholds: Input(
        type="uri_file",
        optional=True,
        description="monitor_thresholds JSON (metric, threshold, window in requests); defaults built in.",
    ) = None,
    model_version: Input(
        type="string", optional=True, description="Only requests served by this model version."
    ) = None,
    min_samples: Input(
        type="integer",
        default=100,
        min=1,
        max=1000000,
        description="Fewer images (requests, for error rates and latency) in a window: insufficient data.",
    ) = 100,
    on_breach: Input(
        type="string",
        default="alert",
        description=(
            "Who gets the retrain request on an alert: alert (nobody), retrain_local (the training pipeline "
            "run here), retrain_aml (submitted to Azure ML) or your handler as package.module:function."
        ),
    ) = "alert",
    retrain_data: Input(
        type="string",
        optional=True,
        description="Data the retraining reads (required for retrain_local; retrain_aml: a datastore URI).",
    ) = None,
    retrain_until: Input(
        type="string",
        optional=True,
        enum=["ingest", "preprocess", "train", "evaluate", "register", "deploy"],
        description="retrain_local: stop the pipeline after this node (mnist-mlops run --until).",
    ) = None,
    registry: Input(
        type="string",
        optional=True,
        description=(
            "MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db): where the serving model's "
            "training data is found without a baseline, and where retrain_local registers."
        ),
    ) = None,
    subscription_id: Input(type="string", optional=True, description="retrain_aml: subscription.") = None,
    resource_group: Input(type="string", optional=True, description="retrain_aml: resource group.") = None,
    workspace: Input(type="string", optional=True, description="retrain_aml: workspace name.") = None,
):
    from mnist_mlops.components.monitor.executor import run_monitor
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_monitor(
            requests,
            report,
            baseline=baseline,
            thresholds=thresholds,
            model_version=model_version,
            min_samples=min_samples,
            on_breach=on_breach,
            retrain_data=retrain_data,
            retrain_until=retrain_until,
            registry=registry,
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace=workspace,
        )
