"""The resolve_champion component: typed ports over `executor.run_resolve_champion`.

Not deterministic: the pointer may name another version by the next run (TFX's Resolver node).
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_resolve_champion",
    version=VERSION,
    display_name="Resolve the champion",
    description=(
        "Find the version a registry pointer (production by default) names and hand it on as evaluate's "
        "champion, or say there is none; the challenger is judged against it on the same fresh test data."
    ),
    is_deterministic=False,
    tags={"stage": "resolve_champion", "project": "mnist-mlops", "framework": "mlflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def resolve_champion(
    champion: Output(
        type="uri_folder",
        description="champion.json (champion_record) and, when there is a champion, the model in model/.",
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
):
    from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_resolve_champion(champion, model_name=model_name, pointer=pointer, registry=registry)
