"""The pipeline as an Azure ML pipeline job, composed with `azure.ai.ml.dsl.pipeline`.

ingest -> preprocess -> train -> evaluate -> register; deploy joins with its issue. register honours
the blessing itself (an unblessed model is declined with reasons), so no control flow is needed here;
on AML, MLflow's tracking URI points register at the workspace registry.
(No `from __future__ import annotations`: the SDK reads the port annotations at definition time.)
"""

from azure.ai.ml import Input, dsl

from mnist_mlops.components import evaluate, ingest, preprocess, register, train


@dsl.pipeline(
    name="mnist_mlops_training",
    display_name="MNIST training",
    description="Ingest a versioned, validated MNIST dataset, train a CNN, judge it against KPI thresholds.",
)
def training_pipeline(
    raw_data: Input(type="uri_folder"),
    epochs: int = 12,
    seed: int = 42,
):
    fetched = ingest(source_data=raw_data)
    prepared = preprocess(dataset=fetched.outputs.dataset, seed=seed)
    trained = train(preprocessed=prepared.outputs.preprocessed, epochs=epochs, seed=seed)
    judged = evaluate(challenger=trained.outputs.model, preprocessed=prepared.outputs.preprocessed)
    registered = register(
        model=trained.outputs.model,
        blessing=judged.outputs.blessing,
        evaluation=judged.outputs.evaluation,
        training_summary=trained.outputs.training_summary,
        data_report=fetched.outputs.data_report,
        preprocessed=prepared.outputs.preprocessed,
    )
    return {
        "data_report": fetched.outputs.data_report,
        "model": trained.outputs.model,
        "evaluation": judged.outputs.evaluation,
        "blessing": judged.outputs.blessing,
        "registration_record": registered.outputs.registration_record,
    }
