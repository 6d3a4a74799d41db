"""The deploy component: typed ports over `executor.run_deploy`.

Not deterministic: it moves the registry's `production` alias and appends to the deployment history,
so a cached result would claim a deployment that never happened.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_deploy",
    version=VERSION,
    display_name="Deploy registered model",
    description=(
        "Deploy a blessed, ready registry version (models:/<name>/<version> or @alias; never a local path "
        "or image). The model is first loaded in the real scoring server and must answer canary requests "
        "from the test split with the expected classes within a latency bound and reject invalid requests "
        "with 4xx; only then does the 'production' alias move. Targets: local (default), azureml or "
        "kubernetes (blue/green with staged traffic and automatic rollback). "
        "Appends to the deployment history."
    ),
    is_deterministic=False,
    tags={"stage": "deploy", "project": "mnist-mlops", "framework": "mlflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def deploy(
    test_data: Input(type="uri_folder", description="preprocess output; its test images are the canaries."),
    deployment_record: Output(
        type="uri_file", description="deployment_record.json: what serves now and why."
    ),
    model: Input(
        type="string",
        optional=True,
        description="Registry reference: models:/<name>/<version> or models:/<name>@<alias>.",
    ) = None,
    registration_record: Input(
        type="uri_file",
        optional=True,
        description="Instead of model: register's record; a declined model is skipped, with reasons.",
    ) = None,
    target: Input(
        type="string",
        default="azureml",
        enum=["local", "azureml", "kubernetes"],
        description="Where to deploy: the workspace's managed endpoint, a Kubernetes one, or this machine.",
    ) = "azureml",
    registry: Input(
        type="string",
        optional=True,
        description="MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db).",
    ) = None,
    endpoint_name: Input(
        type="string",
        optional=True,
        description="Endpoint name; default unique per workspace (Azure), the model name (local key file).",
    ) = None,
    port: Input(
        type="integer",
        default=5001,
        min=1,
        max=65535,
        description="local: the port `mnist-mlops serve` uses.",
    ) = 5001,
    canary_count: Input(
        type="integer",
        default=64,
        min=1,
        max=128,
        description=(
            "Canary test images, as many again from production's test split; each sent alone, then all in "
            "one JSON batch, so at most half the server's default batch limit (256), and fewer of large "
            "images (the batch must fit its 4 MiB body limit: e.g. 60 of 64x64x3)."
        ),
    ) = 64,
    max_canary_p99_ms: Input(
        type="number",
        default=50.0,
        min=0.1,
        max=60000.0,
        description="Latency bound for the canary requests (p99, ms).",
    ) = 50.0,
    subscription_id: Input(
        type="string", optional=True, description="azureml/kubernetes: subscription."
    ) = None,
    resource_group: Input(
        type="string", optional=True, description="azureml/kubernetes: resource group."
    ) = None,
    workspace: Input(type="string", optional=True, description="azureml/kubernetes: workspace name.") = None,
    compute: Input(type="string", optional=True, description="kubernetes: the attached AKS compute.") = None,
    instance_type: Input(
        type="string",
        optional=True,
        description="azureml: VM size (default Standard_DS3_v2); kubernetes: cluster instance type.",
    ) = None,
    instance_count: Input(
        type="integer", default=1, min=1, max=20, description="azureml/kubernetes: instances."
    ) = 1,
    mirror_percent: Input(
        type="integer",
        default=0,
        min=0,
        max=50,
        description="azureml: live traffic mirrored before the shift.",
    ) = 0,
):
    from mnist_mlops.components.deploy.executor import run_deploy
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_deploy(
            model,
            test_data,
            deployment_record,
            registration_record=registration_record,
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
