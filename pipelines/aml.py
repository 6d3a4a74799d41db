"""The pipeline as an Azure ML pipeline job, composed with `azure.ai.ml.dsl.pipeline`.

For now the data stages: ingest -> preprocess. The model stages join with their issues.
(No `from __future__ import annotations`: the SDK reads the port annotations at definition time.)
"""

from azure.ai.ml import Input, dsl

from mnist_mlops.components import ingest, preprocess


@dsl.pipeline(
    name="mnist_mlops_data",
    display_name="MNIST data stages",
    description="Ingest a versioned, validated MNIST dataset and prepare training-ready splits.",
)
def data_pipeline(raw_data: Input(type="uri_folder"), validation_fraction: float = 0.1, seed: int = 42):
    fetched = ingest(source_data=raw_data)
    prepared = preprocess(dataset=fetched.outputs.dataset, validation_fraction=validation_fraction, seed=seed)
    return {
        "dataset": fetched.outputs.dataset,
        "data_report": fetched.outputs.data_report,
        "preprocessed": prepared.outputs.preprocessed,
    }
