"""Benchmark: the train component with default parameters vs the keras.io "simple MNIST convnet".

    python benchmarks/train.py [--tarball ../shared/data/mnist_png.tar.gz]

Both train on the shared MNIST in the same run on this machine and are scored on the same 10,000
hold-out test images. The reference is the keras.io example as published (60,000 training images,
batch 128, 15 epochs, Adam, validation_split=0.1, on rows in mixed order as keras.datasets serves
them). The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train

DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_png.tar.gz"


def keras_io_reference(dataset: Path) -> tuple[float, float]:
    """Train the keras.io convnet exactly as published; returns (train seconds, test accuracy)."""
    import keras

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        images = np.load(dataset / split / "images.npy").astype("float32")[..., None] / 255
        return images, keras.utils.to_categorical(np.load(dataset / split / "labels.npy"), 10)

    (x_train, y_train), (x_test, y_test) = load("training"), load("testing")
    # keras.datasets.mnist comes in MNIST's original, mixed order; the ingested arrays are sorted by
    # label folder, and validation_split takes the last rows, so restore a mixed order first.
    order = np.random.default_rng(0).permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]
    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=0)
    seconds = time.perf_counter() - started
    return seconds, float(model.evaluate(x_test, y_test, verbose=0)[1])


def test_accuracy(model_dir: Path, preprocessed: Path) -> float:
    import mlflow.pyfunc

    images, labels = (
        np.load(preprocessed / "test" / "images.npy"),
        np.load(preprocessed / "test" / "labels.npy"),
    )
    probabilities = mlflow.pyfunc.load_model(str(model_dir)).predict(images)
    return float((np.asarray(probabilities).argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        run_ingest(str(args.tarball), work / "dataset", work / "data_report.json")
        run_preprocess(work / "dataset", work / "preprocessed")
        summary = run_train(work / "preprocessed", work / "model", work / "summary.json", work / "curves.png")
        accuracy = test_accuracy(work / "model", work / "preprocessed")
        print(
            f"train component: {summary['wall_time_seconds']:.1f}s, test accuracy {accuracy:.4f}", flush=True
        )
        reference_seconds, reference_accuracy = keras_io_reference(work / "dataset")
        print(
            f"keras.io reference: {reference_seconds:.1f}s, test accuracy {reference_accuracy:.4f}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "test_accuracy": round(accuracy, 4),
                "train_seconds": round(summary["wall_time_seconds"], 1),
                "images_per_s": round(summary["images_per_second"]),
                "epochs": summary["hyperparameters"]["epochs"],
                "reference_test_accuracy": round(reference_accuracy, 4),
                "reference_train_seconds": round(reference_seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
