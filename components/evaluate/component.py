"""The evaluate component: typed ports over `executor.run_evaluate`, the production-validation gate.

Not deterministic: it times the model (latency is a gate) and its verdict depends on the champion of
the moment, so a cached verdict must never stand in for a fresh one.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_evaluate",
    version=VERSION,
    display_name="Evaluate and bless",
    description=(
        "Score the challenger and the production champion on this run's test split against KPI thresholds "
        "(accuracy, per-class recall, regression vs champion, p99 latency); compare the training data with "
        "the data production was trained on and with recent traffic, and both models on production's own "
        "test split; always writes the report, a model card, figures and the blessing with its reasons. "
        "Per-class figures follow the model's own classes; data labelled with classes it does not answer "
        "is refused."
    ),
    is_deterministic=False,
    tags={"stage": "evaluate", "project": "mnist-mlops", "framework": "tensorflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def evaluate(
    challenger: Input(type="mlflow_model", description="The newly trained model."),
    preprocessed: Input(
        type="uri_folder", description="This run's preprocess output; its test split is used."
    ),
    evaluation: Output(
        type="uri_folder",
        description="evaluation_report.json, model_card.md, confusion_matrix.png, misclassified.png.",
    ),
    blessing: Output(type="uri_file", description="blessing.json: blessed true/false with the reasons."),
    champion: Input(
        type="uri_folder",
        optional=True,
        description="resolve_champion's folder: the production model, or a record that there is none.",
    ) = None,
    thresholds: Input(
        type="uri_file",
        optional=True,
        description=(
            "kpi_thresholds JSON; MNIST's defaults built in (the blessing says when they judged another "
            "problem)."
        ),
    ) = None,
    accept_data_shift: Input(
        type="boolean",
        default=False,
        description=(
            "Promote even when the training data shifted from production's: an explicit decision, recorded "
            "in the blessing, model card and registry tags."
        ),
    ) = False,
):
    from mnist_mlops.components.evaluate.executor import run_evaluate
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_evaluate(
            challenger,
            preprocessed,
            evaluation,
            blessing,
            champion=champion,
            thresholds=thresholds,
            accept_data_shift=accept_data_shift,
        )
