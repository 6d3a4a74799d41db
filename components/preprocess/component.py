"""The preprocess component: typed ports over `executor.run_preprocess`.

Deterministic: its output is a pure function of the dataset content, the seed and the fraction, so
reusing an earlier run's output for identical inputs is safe.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_preprocess",
    version=VERSION,
    display_name="Preprocess MNIST data",
    description=(
        "Stratified, seeded train/validation split of an ingested dataset, hold-out test split, "
        "normalization constants and the baseline statistics monitoring compares against."
    ),
    is_deterministic=True,
    tags={"stage": "preprocess", "project": "mnist-mlops", "framework": "none"},
    environment="../environments/data/environment.yaml",
    code="../..",
)
def preprocess(
    dataset: Input(type="uri_folder", description="An ingested dataset (manifest.json: dataset_manifest)."),
    preprocessed: Output(
        type="uri_folder",
        description="train/validation/test arrays, manifest.json and baseline_statistics.json.",
    ),
    validation_fraction: Input(
        type="number",
        default=0.1,
        min=0.01,
        max=0.5,
        description="Share of each class held out for validation.",
    ) = 0.1,
    seed: Input(
        type="integer", default=42, min=0, max=2147483647, description="Seed of the split and shuffle."
    ) = 42,
):
    from mnist_mlops.components.preprocess.executor import run_preprocess
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_preprocess(dataset, preprocessed, validation_fraction=validation_fraction, seed=seed)
