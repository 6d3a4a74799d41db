"""Benchmark: the train component with default parameters vs the keras.io "simple MNIST convnet".

    python benchmarks/train.py [--tarball ../shared/data/mnist_png.tar.gz] [--rounds 2]

Both train on the shared MNIST in the same run on this machine and are scored on the same 10,000
hold-out test images. The reference is the keras.io example as published (60,000 training images,
batch 128, 15 epochs, Adam, validation_split=0.1, on rows in mixed order as keras.datasets serves
them). Each round trains the reference and then the component back to back, so both see the same
load, each in a fresh process (the component turns on TensorFlow's op determinism, a process-wide
switch that must not carry over into the next reference). The component's seed alternates between
the default and a second seed: accuracy is deterministic per seed, time is not. Seconds are reported
as median and spread over the rounds; `ratio` is the median of each round's component/reference time.
About 4-6 minutes a round on 2 quiet cores (10 under load). The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from common import DEFAULT_TARBALL, spread

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train

DEFAULT_SEED, SECOND_SEED = 42, 7
"""The component's default seed and the second seed the issue asks for."""


def keras_io_reference(dataset: Path) -> dict[str, float]:
    """Train the keras.io convnet exactly as published; returns its seconds, CPU seconds and test
    accuracy."""
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
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=0)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1]),
    }


def test_accuracy(model_dir: Path, preprocessed: Path) -> float:
    import mlflow.pyfunc

    images, labels = (
        np.load(preprocessed / "test" / "images.npy"),
        np.load(preprocessed / "test" / "labels.npy"),
    )
    probabilities = mlflow.pyfunc.load_model(str(model_dir)).predict(images)
    return float((np.asarray(probabilities).argmax(axis=1) == labels).mean())


def train_component(preprocessed: Path, folder: Path, seed: int) -> dict[str, float]:
    """Train with the component's defaults but `seed`; returns its seconds, CPU seconds (of the whole
    component, reading and saving included: an upper bound), test accuracy and epochs."""
    cpu_started = time.process_time()
    summary = run_train(
        preprocessed, folder / "model", folder / "summary.json", folder / "curves.png", seed=seed
    )
    return {
        "seconds": summary["wall_time_seconds"],
        "cpu_seconds": time.process_time() - cpu_started,
        "accuracy": test_accuracy(folder / "model", preprocessed),
        "epochs": summary["hyperparameters"]["epochs"],
    }


def isolated(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a fresh interpreter, so no TensorFlow switch carries over between trainings."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
        return process.submit(function, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    parser.add_argument(
        "--rounds", type=int, default=2, help="reference + component pairs; at least 2 (one per seed)"
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds {args.rounds}: need at least 2, one for each seed")
    runs: dict[str, list[dict[str, float]]] = {"reference": [], "component": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        run_ingest(str(args.tarball), work / "dataset", work / "data_report.json")
        run_preprocess(work / "dataset", work / "preprocessed")
        for round_number in range(args.rounds):
            runs["reference"].append(isolated(keras_io_reference, work / "dataset"))
            seed = (DEFAULT_SEED, SECOND_SEED)[round_number % 2]
            runs["component"].append(
                isolated(train_component, work / "preprocessed", work / f"round-{round_number}", seed)
                | {"seed": seed}
            )
            for side, run in runs.items():
                print(
                    f"round {round_number + 1}: {side} {run[-1]['seconds']:.1f}s "
                    f"({run[-1]['cpu_seconds']:.0f} CPU s), test accuracy {run[-1]['accuracy']:.4f}",
                    flush=True,
                )
    accuracy = {}
    for seed in (DEFAULT_SEED, SECOND_SEED):
        accuracies = {run["accuracy"] for run in runs["component"] if run["seed"] == seed}
        if len(accuracies) > 1:
            raise SystemExit(
                f"seed {seed} gave different test accuracies {sorted(accuracies)}: not deterministic"
            )
        accuracy[seed] = accuracies.pop()
    seconds = {side: spread([run["seconds"] for run in side_runs]) for side, side_runs in runs.items()}
    ratios = {
        figure: spread(
            [
                ours[figure] / reference[figure]
                for ours, reference in zip(runs["component"], runs["reference"], strict=True)
            ]
        )
        for figure in ("seconds", "cpu_seconds")
    }
    print(
        json.dumps(
            {
                "test_accuracy": round(accuracy[DEFAULT_SEED], 4),
                "second_seed_test_accuracy": round(accuracy[SECOND_SEED], 4),
                "train_seconds": round(seconds["component"]["median"], 1),
                "reference_test_accuracy": round(
                    statistics.median(run["accuracy"] for run in runs["reference"]), 4
                ),
                "reference_train_seconds": round(seconds["reference"]["median"], 1),
                "ratio": round(ratios["seconds"]["median"], 3),
                "train_seconds_spread": [round(seconds["component"][key], 1) for key in ("min", "max")],
                "reference_train_seconds_spread": [
                    round(seconds["reference"][key], 1) for key in ("min", "max")
                ],
                "ratio_spread": [round(ratios["seconds"][key], 3) for key in ("min", "max")],
                "cpu_ratio": round(ratios["cpu_seconds"]["median"], 3),
                "cpu_ratio_spread": [round(ratios["cpu_seconds"][key], 3) for key in ("min", "max")],
                "rounds": args.rounds,
                "epochs": runs["component"][0]["epochs"],
            }
        )
    )


if __name__ == "__main__":
    main()
