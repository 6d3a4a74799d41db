"""train: fit the CNN on preprocessed MNIST and write an MLflow model, a training summary and curves.

Framework-free interface (plain paths and scalars, named as the component's ports); TensorFlow is
imported inside. One custom training loop serves one process and many: under AML's `distribution:
{type: tensorflow, worker_count: N}`, `TF_CONFIG` names the cluster and the loop runs under
`MultiWorkerMirroredStrategy` (Keras 3 `model.fit` fails there with a PerReplica error; `strategy.run`
works). Reproducible: the seed fixes initialization, shuffling, dropout and augmentation, and TF op
determinism is on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import __version__, contracts, plots, tracking
from mnist_mlops.artifacts import file_name
from mnist_mlops.atomic import staged_dir
from mnist_mlops.dataset import load_split
from mnist_mlops.errors import UserInputError
from mnist_mlops.inference import predict_in_batches
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.ports import checked
from mnist_mlops.progress import Progress
from mnist_mlops.provenance import code_version, environment_hash

COMPONENT_NAME = "mnist_mlops_train"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
"""Logged as MLflow metric history after every epoch (step = epoch): a sweep's early termination reads
`val_accuracy` while the trial runs."""
PROGRESS_FIGURES = {"loss": "loss", "acc": "accuracy", "val_acc": "val_accuracy"}
"""Each epoch's progress line (`mnist_mlops.progress`), word -> metric: short, so that with the images/s
and the time left it fits an 80-column terminal."""


@dataclass(frozen=True)
class _Splits:
    """What train reads from preprocess: the manifest and the train and validation (images, labels)."""

    manifest: dict[str, Any]
    interface: ModelInterface
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]


@checked("train")
def run_train(
    preprocessed: str | Path,
    model: str | Path,
    training_summary: str | Path,
    training_curves: str | Path,
    *,
    epochs: int = 10,
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
    splits = _read_splits(Path(preprocessed), max_train_images)
    import keras
    import tensorflow as tf

    from .model import training_dataset

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    strategy, cluster = _strategy()
    global_batch = batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = _steps_per_epoch(Path(preprocessed), len(splits.train[0]), global_batch)
    network, optimizer = _network_and_optimizer(
        strategy, splits.interface, splits.manifest["normalization"], learning_rate, epochs, steps_per_epoch
    )
    dataset = strategy.experimental_distribute_dataset(training_dataset(*splits.train, global_batch, seed))
    train_step = _distributed_train_step(strategy, network, optimizer, global_batch, seed, augment)
    images_per_epoch = steps_per_epoch * global_batch
    hyperparameters = {
        "epochs": epochs,
        "batch_size": global_batch,
        "per_replica_batch_size": batch_size,
        "learning_rate": learning_rate,
        "augment": augment,
        "max_train_images": max_train_images,
    }
    is_chief = cluster is None or cluster["is_chief"]
    with _chief_run(is_chief) as run:
        run.params({"seed": seed, **hyperparameters})
        run.tags({"dataset_version": splits.manifest["dataset_version"]})
        progress = Progress(epochs, "epoch", items="img")

        def on_epoch(row: dict[str, float]) -> None:
            run.metrics({key: row[key] for key in EPOCH_METRICS}, step=row["epoch"])
            if is_chief:  # workers train in lockstep: one voice reports
                figures = {word: row[metric] for word, metric in PROGRESS_FIGURES.items()}
                progress.update(row["epoch"], items=row["epoch"] * images_per_epoch, **figures)

        started = time.perf_counter()
        history = _fit(network, train_step, dataset, splits.validation, epochs, images_per_epoch, on_epoch)
        wall = time.perf_counter() - started
        summary = _summary(
            splits.manifest, seed, hyperparameters, history, wall, epochs * images_per_epoch, cluster
        )
        contracts.validate(summary, "training_summary", source=str(training_summary))
        if not is_chief:
            return summary  # workers train in lockstep; only the chief writes outputs
        _save_model(network, Path(model), splits.interface, splits.validation[0][:2], summary)
        plots.training_curves(history, Path(training_curves))
        contracts.write_json(training_summary, summary, "training_summary")
        run.metrics({key: summary[key] for key in ("images_per_second", "wall_time_seconds")})
        run.tags({key: summary[key] for key in ("environment_hash", "code_version")})
        run.artifact(training_curves, name=file_name("train", "training_curves"))  # the platform names it
    return summary


def _chief_run(is_chief: bool) -> contextlib.AbstractContextManager[tracking.NodeRun]:
    """The node's MLflow run on the chief; nothing on other workers, which share its run on Azure ML
    (one process logs each epoch once)."""
    return tracking.node_run("train") if is_chief else contextlib.nullcontext(tracking.NodeRun(None))


def _read_splits(preprocessed: Path, max_train_images: int) -> _Splits:
    manifest = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    interface = ModelInterface.of_dataset(manifest)
    interface.check_trainable(str(preprocessed / "manifest.json"))
    train_images, train_labels = load_split(preprocessed, manifest, "train")
    if max_train_images:
        train_images, train_labels = train_images[:max_train_images], train_labels[:max_train_images]
    return _Splits(
        manifest, interface, (train_images, train_labels), load_split(preprocessed, manifest, "validation")
    )


def _steps_per_epoch(preprocessed: Path, train_count: int, global_batch: int) -> int:
    """Whole global batches per epoch (the remainder is dropped), refusing data smaller than one."""
    if train_count < global_batch:
        raise UserInputError(
            f"{preprocessed}: {train_count} training images, fewer than one batch of {global_batch}"
        )
    return train_count // global_batch


def _network_and_optimizer(
    strategy: Any,
    interface: ModelInterface,
    normalization: dict[str, float],
    learning_rate: float,
    epochs: int,
    steps_per_epoch: int,
) -> tuple[Any, Any]:
    """The CNN and Adam (one warm-up epoch, then cosine decay), created in the strategy's scope so
    their variables are mirrored across replicas."""
    import keras

    from .model import build_model

    with strategy.scope():
        network = build_model(interface, normalization["mean"], normalization["std"])
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, epochs * steps_per_epoch, warmup_target=learning_rate, warmup_steps=steps_per_epoch
        )
        optimizer = keras.optimizers.Adam(schedule)
    return network, optimizer


def _distributed_train_step(
    strategy: Any, network: Any, optimizer: Any, global_batch: int, seed: int, augment: bool
) -> Callable[..., Any]:
    """One optimizer step on every replica (`strategy.run`, which works where Keras 3 `fit` does not);
    returns the step's summed per-image loss and count of correct predictions over all replicas."""
    import keras
    import tensorflow as tf

    from .model import shift_images

    loss_of = keras.losses.SparseCategoricalCrossentropy(reduction="none")

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def replica_step(images, labels):
            if augment:
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                images = shift_images(images, tf.stack([tf.cast(step, tf.int32), seed + replica]))
            with tf.GradientTape() as tape:
                probabilities = network(images, training=True)
                losses = loss_of(labels, probabilities)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
            gradients = tape.gradient(loss, network.trainable_variables)
            optimizer.apply_gradients(zip(gradients, network.trainable_variables, strict=True))
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), labels), tf.float32)
            )
            return tf.reduce_sum(losses), correct

        losses, correct = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    return train_step


def _fit(
    network: Any,
    train_step: Callable[..., Any],
    dataset: Iterable[Any],
    validation: tuple[np.ndarray, np.ndarray],
    epochs: int,
    images_per_epoch: int,
    on_epoch: Callable[[dict[str, float]], None],
) -> list[dict[str, float]]:
    """Train for `epochs`, scoring the validation split after each; one history row per epoch, passed to
    `on_epoch` as soon as the epoch ends."""
    import tensorflow as tf

    @tf.function
    def predict(images: tf.Tensor) -> tf.Tensor:
        return network(images, training=False)

    history = []
    steps = itertools.count()  # the global step numbers the augmentation is keyed by
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        total_loss, total_correct = _train_epoch(train_step, dataset, steps)
        val_loss, val_accuracy = _evaluate(predict, *validation)
        row = {
            "epoch": epoch,
            "loss": total_loss / images_per_epoch,
            "accuracy": total_correct / images_per_epoch,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": time.perf_counter() - epoch_started,
        }
        history.append(row)
        on_epoch(row)
    return history


def _train_epoch(
    train_step: Callable[..., Any], dataset: Iterable[Any], steps: Iterator[int]
) -> tuple[float, float]:
    """One pass over the data: the summed per-image loss and the number of correct predictions, summed as
    tensors and read once at the end, so no step waits to hand its figures to Python."""
    import tensorflow as tf

    total_loss = total_correct = tf.constant(0.0)
    for images, labels in dataset:
        loss, correct = train_step(images, labels, tf.constant(next(steps), tf.int64))
        total_loss += loss
        total_correct += correct
    return float(total_loss), float(total_correct)


def _summary(
    manifest: dict[str, Any],
    seed: int,
    hyperparameters: dict[str, Any],
    history: list[dict[str, float]],
    wall: float,
    images_trained: int,
    cluster: dict | None,
) -> dict[str, Any]:
    """The training_summary document: what was trained on which data with which code, and how fast."""
    import keras
    import tensorflow as tf

    return {
        "schema_version": 1,
        "seed": seed,
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "environment_hash": environment_hash(),
        "dataset_version": manifest["dataset_version"],
        "code_version": code_version(),
        "hyperparameters": hyperparameters,
        "history": history,
        "wall_time_seconds": wall,
        "images_per_second": images_trained / wall,
        "metrics": {key: history[-1][key] for key in EPOCH_METRICS},
        "distributed": {
            "strategy": "MultiWorkerMirroredStrategy" if cluster else "default",
            "worker_count": cluster["workers"] if cluster else 1,
            "is_chief": cluster["is_chief"] if cluster else True,
        },
    }


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


def _save_model(
    network: Any, target: Path, interface: ModelInterface, example: np.ndarray, summary: dict
) -> None:
    """Save as an MLflow model (TensorFlow flavor) whose metadata records the interface (image shape and
    class names) and whose signature follows it: uint8 (-1, H, W[, 3]) in, float32 (-1, classes) out."""
    import mlflow.tensorflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *interface.image_shape), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, interface.class_count), "probabilities")]),
    )
    requirements = [
        f"tensorflow-cpu=={summary['tf_version']}",
        f"keras=={summary['keras_version']}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]
    with staged_dir(target) as stage:
        mlflow.tensorflow.save_model(
            network,
            str(stage / "model"),
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            metadata={
                "dataset_version": summary["dataset_version"],
                "code_version": summary["code_version"],
                "python": platform.python_version(),
                "producer": f"{COMPONENT_NAME} {__version__}",
                **interface.metadata(),
            },
        )
        for entry in (stage / "model").iterdir():
            entry.rename(stage / entry.name)
        (stage / "model").rmdir()
