"""The train component: typed ports over `executor.run_train`.

Deterministic given its inputs and seed (TF op determinism is on), so AML may reuse a run with the
same data, code and parameters. For multi-worker training set `distribution` on the node, e.g.
`node.distribution = {"type": "tensorflow", "worker_count": 2}`: AML then sets TF_CONFIG per worker.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_train",
    version=VERSION,
    display_name="Train MNIST CNN",
    description=(
        "Train a TensorFlow/Keras CNN on preprocessed MNIST with seeded, deterministic ops and shift "
        "augmentation; writes an MLflow model (uint8 28x28 signature), a training summary and curves."
    ),
    is_deterministic=True,
    tags={"stage": "train", "project": "mnist-mlops", "framework": "tensorflow"},
    environment="../environments/model/environment.yaml",
    code="../..",
)
def train(
    preprocessed: Input(
        type="uri_folder", description="Output of preprocess (manifest.json: preprocessed_manifest)."
    ),
    model: Output(
        type="mlflow_model",
        description=(
            "MLflow model, TensorFlow flavor: uint8 images of the dataset's shape in, one probability per"
            " class out (MLmodel metadata: image_shape, classes)."
        ),
    ),
    training_summary: Output(
        type="uri_file", description="training_summary.json: history, timing, provenance."
    ),
    training_curves: Output(type="uri_file", description="PNG of loss and accuracy per epoch."),
    epochs: Input(
        type="integer", default=10, min=1, max=200, description="Passes over the train split."
    ) = 10,
    batch_size: Input(
        type="integer", default=128, min=8, max=4096, description="Images per step per worker."
    ) = 128,
    learning_rate: Input(
        type="number",
        default=0.003,
        min=0.00001,
        max=1.0,
        description="Peak Adam learning rate (cosine decay).",
    ) = 0.003,
    seed: Input(
        type="integer", default=42, min=0, max=2147483647, description="Seed of init, order, dropout."
    ) = 42,
    augment: Input(type="boolean", default=True, description="Random shifts of up to 2 pixels.") = True,
    max_train_images: Input(
        type="integer",
        default=0,
        min=0,
        max=10000000,
        description="Train on a prefix only (smoke tests); 0 = all.",
    ) = 0,
):
    from mnist_mlops.components.train.executor import run_train
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_train(
            preprocessed,
            model,
            training_summary,
            training_curves,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            augment=augment,
            max_train_images=max_train_images,
        )
