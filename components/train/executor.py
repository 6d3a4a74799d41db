"""train: fit the CNN on preprocessed MNIST and write an MLflow model, a training summary and curves.

Framework-free interface (plain paths and scalars); TensorFlow is imported inside. One custom training
loop serves one process and many: under AML's `distribution: {type: tensorflow, worker_count: N}`,
`TF_CONFIG` names the cluster and the loop runs under `MultiWorkerMirroredStrategy` (Keras 3
`model.fit` fails there with a PerReplica error; `strategy.run` works). Reproducible: the seed fixes
initialization, shuffling, dropout and augmentation, and TF op determinism is on.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import __version__, contracts
from mnist_mlops.atomic import staged_dir
from mnist_mlops.dataset import load_split
from mnist_mlops.errors import UserInputError
from mnist_mlops.inference import predict_in_batches
from mnist_mlops.ports import checked
from mnist_mlops.provenance import code_version, environment_hash

COMPONENT_NAME = "mnist_mlops_train"


@checked("train")
def run_train(
    preprocessed_dir: str | Path,
    model_dir: str | Path,
    summary_path: str | Path,
    curves_path: str | Path,
    *,
    epochs: int = 12,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 42,
    augment: bool = True,
    max_train_images: int = 0,
) -> dict[str, Any]:
    """Train and write the outputs (the chief's, under a multi-worker strategy); returns the summary.

    `max_train_images` > 0 trains on a stratified-enough prefix of the (already shuffled) train split:
    for smoke tests and CI, never for a model that is meant to be registered.
    """
    import keras
    import tensorflow as tf

    from .model import build_model, shift_images, training_dataset

    preprocessed_dir = Path(preprocessed_dir)
    manifest = contracts.read_json(preprocessed_dir / "manifest.json", "preprocessed_manifest")
    train_images, train_labels = load_split(preprocessed_dir, manifest, "train")
    validation_images, validation_labels = load_split(preprocessed_dir, manifest, "validation")
    if max_train_images:
        train_images, train_labels = train_images[:max_train_images], train_labels[:max_train_images]

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    strategy, cluster = _strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * replicas
    if len(train_images) < global_batch:
        raise UserInputError(
            f"{preprocessed_dir}: {len(train_images)} training images, fewer than one batch of {global_batch}"
        )
    steps_per_epoch = len(train_images) // global_batch
    normalization = manifest["normalization"]
    with strategy.scope():
        model = build_model(normalization["mean"], normalization["std"])
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, epochs * steps_per_epoch, warmup_target=learning_rate, warmup_steps=steps_per_epoch
        )
        optimizer = keras.optimizers.Adam(schedule)
    loss_of = keras.losses.SparseCategoricalCrossentropy(reduction="none")
    dataset = strategy.experimental_distribute_dataset(
        training_dataset(train_images, train_labels, global_batch, seed)
    )

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def replica_step(images, labels):
            if augment:
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                images = shift_images(images, tf.stack([tf.cast(step, tf.int32), seed + replica]))
            with tf.GradientTape() as tape:
                probabilities = model(images, training=True)
                losses = loss_of(labels, probabilities)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), labels), tf.float32)
            )
            return tf.reduce_sum(losses), correct

        losses, correct = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    @tf.function
    def predict(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    history = []
    started = time.perf_counter()
    step = 0
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        total_loss = total_correct = 0.0
        for images, labels in dataset:
            loss, correct = train_step(images, labels, tf.constant(step, tf.int64))
            total_loss += float(loss)
            total_correct += float(correct)
            step += 1
        seen = steps_per_epoch * global_batch
        val_loss, val_accuracy = _evaluate(predict, validation_images, validation_labels)
        history.append(
            {
                "epoch": epoch,
                "loss": total_loss / seen,
                "accuracy": total_correct / seen,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": time.perf_counter() - epoch_started,
            }
        )
        print(
            f"epoch {epoch}/{epochs}: loss {history[-1]['loss']:.4f} accuracy {history[-1]['accuracy']:.4f} "
            f"val_loss {val_loss:.4f} val_accuracy {val_accuracy:.4f} ({history[-1]['seconds']:.1f}s)",
            flush=True,
        )
    wall = time.perf_counter() - started
    summary = {
        "schema_version": 1,
        "seed": seed,
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "environment_hash": environment_hash(),
        "dataset_version": manifest["dataset_version"],
        "code_version": code_version(),
        "hyperparameters": {
            "epochs": epochs,
            "batch_size": global_batch,
            "per_replica_batch_size": batch_size,
            "learning_rate": learning_rate,
            "augment": augment,
            "max_train_images": max_train_images,
        },
        "history": history,
        "wall_time_seconds": wall,
        "images_per_second": epochs * steps_per_epoch * global_batch / wall,
        "metrics": {key: history[-1][key] for key in ("loss", "accuracy", "val_loss", "val_accuracy")},
        "distributed": {
            "strategy": "MultiWorkerMirroredStrategy" if cluster else "default",
            "worker_count": cluster["workers"] if cluster else 1,
            "is_chief": cluster["is_chief"] if cluster else True,
        },
    }
    contracts.validate(summary, "training_summary", source=str(summary_path))
    if cluster and not cluster["is_chief"]:
        return summary  # workers train in lockstep; only the chief writes outputs
    _save_model(model, Path(model_dir), validation_images[:2], summary)
    from mnist_mlops.plots import training_curves

    training_curves(history, Path(curves_path))
    contracts.write_json(summary_path, summary, "training_summary")
    return summary


def _evaluate(predict, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    probabilities = predict_in_batches(predict, images)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    return loss, float((probabilities.argmax(axis=1) == labels).mean())


def _strategy() -> tuple[Any, dict | None]:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else the default strategy."""
    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return tf.distribute.get_strategy(), None
    try:
        config = json.loads(raw)
        workers = len(config["cluster"].get("worker", [])) + len(config["cluster"].get("chief", []))
        task = config["task"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserInputError(f"TF_CONFIG is not a valid cluster description ({error})") from None
    if workers <= 1:
        return tf.distribute.get_strategy(), None
    is_chief = task["type"] == "chief" or (
        task["type"] == "worker" and task["index"] == 0 and "chief" not in config["cluster"]
    )
    return tf.distribute.MultiWorkerMirroredStrategy(), {"workers": workers, "is_chief": is_chief}


def _save_model(model, target: Path, example: np.ndarray, summary: dict) -> None:
    """Save as an MLflow model (TensorFlow flavor) with a uint8 (-1, 28, 28) signature."""
    import mlflow.tensorflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10), "probabilities")]),
    )
    requirements = [
        f"tensorflow-cpu=={summary['tf_version']}",
        f"keras=={summary['keras_version']}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]
    with staged_dir(target) as stage:
        mlflow.tensorflow.save_model(
            model,
            str(stage / "model"),
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            metadata={
                "dataset_version": summary["dataset_version"],
                "code_version": summary["code_version"],
                "python": platform.python_version(),
                "producer": f"{COMPONENT_NAME} {__version__}",
            },
        )
        for entry in (stage / "model").iterdir():
            entry.rename(stage / entry.name)
        (stage / "model").rmdir()
