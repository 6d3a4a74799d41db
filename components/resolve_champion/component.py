"""The resolve_champion component: typed ports over `executor.run_resolve_champion`.

Not deterministic: the pointer may name another version, and clients may send other images, by the
next run (TFX's Resolver node).
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_resolve_champion",
    version=VERSION,
    display_name="Resolve the champion",
    description=(
        "Find the version a registry pointer (production by default) names and hand it on as evaluate's "
        "champion with the data it was trained and tested on (its reference bundle in the registry) and a "
        "summary of what clients sent it recently (the request log), or say there is none."
    ),
    is_deterministic=False,
    tags={"stage": "resolve_champion", "project": "mnist-mlops", "framework": "mlflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def resolve_champion(
    champion: Output(
        type="uri_folder",
        description=(
            "champion.json (champion_record); when there is a champion, the model in model/ and its "
            "reference bundle in reference/; traffic.json when clients sent enough images recently."
        ),
    ),
    model_name: Input(
        type="string", default="mnist-mlops", description="Registered model name."
    ) = "mnist-mlops",
    pointer: Input(
        type="string", default="production", description="The alias (or pointer tag) naming the champion."
    ) = "production",
    registry: Input(
        type="string",
        optional=True,
        description="MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db).",
    ) = None,
    request_log: Input(
        type="uri_folder",
        optional=True,
        description=(
            "The scoring server's request log folder (must exist when given); default: the local serving "
            "state's folder for this model, beside the registry (absent: no traffic)."
        ),
    ) = None,
    traffic_window: Input(
        type="integer",
        default=1000,
        min=100,
        max=1000000,
        description=(
            "At most this many of the newest served images are summarised in traffic.json (at least the "
            "100 a comparison needs)."
        ),
    ) = 1000,
):
    from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_resolve_champion(
            champion,
            model_name=model_name,
            pointer=pointer,
            registry=registry,
            request_log=request_log,
            traffic_window=traffic_window,
        )
