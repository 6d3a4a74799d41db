"""preprocess: turn an ingested dataset into training-ready splits plus the statistics later stages need.

Framework-free: plain paths and scalars. Output folder:
    manifest.json              preprocessed_manifest schema (normalization constants, split files, and
                               the dataset's image shape and classes, copied from its manifest)
    baseline_statistics.json   baseline_statistics schema (what monitoring and validation compare to)
    {train,validation,test}/{images,labels}.npy   uint8, memory-mappable, streamed by tf.data

The validation split is stratified and seeded, drawn from every class in proportion (never the last
rows: MNIST folders are sorted by label). `testing` is kept whole as the hold-out test split. Train rows
are shuffled with the same seed, so a reader streaming them in order still sees mixed classes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import __version__, contracts, features, tracking
from mnist_mlops.atomic import staged_dir
from mnist_mlops.dataset import classes_of, describe_shape, load_split, save_array
from mnist_mlops.hashing import sha256_file
from mnist_mlops.ports import checked

COMPONENT_NAME = "mnist_mlops_preprocess"


@checked("preprocess")
def run_preprocess(
    dataset: str | Path,
    preprocessed: str | Path,
    *,
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> dict[str, Any]:
    """Split and describe the ingested `dataset` into the folder `preprocessed`; returns its manifest."""
    dataset = Path(dataset)
    source = contracts.read_json(dataset / "manifest.json", "dataset_manifest")
    classes = classes_of(source)
    splits = {name: load_split(dataset, source, name) for name in ("training", "testing")}

    rng = np.random.default_rng(seed)
    train_rows, validation_rows = stratified_split(splits["training"][1], validation_fraction, rng)
    train_rows = rng.permutation(train_rows)
    images, labels = splits["training"]
    outputs = {
        "train": (images[train_rows], labels[train_rows]),
        "validation": (images[validation_rows], labels[validation_rows]),
        "test": splits["testing"],
    }
    train_histograms = features.class_pixel_histograms(*outputs["train"], len(classes))
    baseline = baseline_statistics(
        *outputs["train"], train_histograms, dataset_version=source["dataset_version"]
    )
    pixel_mean, pixel_std = features.histogram_moments(train_histograms.sum(axis=0))

    manifest: dict[str, Any] = {
        "schema_version": 1,
        "dataset_version": source["dataset_version"],
        "source_manifest_sha256": sha256_file(dataset / "manifest.json"),
        "seed": seed,
        "validation_fraction": validation_fraction,
        "image_shape": source["image_shape"],
        "classes": classes,
        "normalization": {"scale": 1 / 255.0, "mean": pixel_mean / 255.0, "std": pixel_std / 255.0},
        "splits": {},
        "producer": {"component": COMPONENT_NAME, "version": __version__},
    }
    with staged_dir(Path(preprocessed)) as stage:
        for name, (split_images, split_labels) in outputs.items():
            manifest["splits"][name] = {
                "count": len(split_images),
                "class_counts": features.class_counts(split_labels, len(classes)),
                "files": {
                    "images": save_array(stage, f"{name}/images.npy", split_images),
                    "labels": save_array(stage, f"{name}/labels.npy", split_labels),
                },
            }
        contracts.write_json(stage / "baseline_statistics.json", baseline, "baseline_statistics")
        manifest["baseline_statistics"] = {
            "path": "baseline_statistics.json",
            "sha256": sha256_file(stage / "baseline_statistics.json"),
        }
        contracts.write_json(stage / "manifest.json", manifest, "preprocessed_manifest")
    with tracking.node_run("preprocess") as run:
        _log_splits(run, manifest, source["source_uri"])
    return manifest


def _log_splits(run: tracking.NodeRun, manifest: dict[str, Any], source_uri: str) -> None:
    """The dataset as the node's MLflow input for training, the split sizes and the normalization."""
    counts = {f"{name}_count": split["count"] for name, split in manifest["splits"].items()}
    run.dataset(
        source_uri,
        manifest["dataset_version"],
        "training",
        {
            "image_shape": describe_shape(manifest["image_shape"]),
            "class_count": len(manifest["classes"]),
            **counts,
        },
    )
    run.params({"seed": manifest["seed"], "validation_fraction": manifest["validation_fraction"]})
    normalization = manifest["normalization"]
    run.metrics(
        counts | {"normalization_mean": normalization["mean"], "normalization_std": normalization["std"]}
    )
    run.tags({"dataset_version": manifest["dataset_version"]})


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation): `fraction` of every class, chosen at random, goes to validation."""
    train, validation = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(rows) * fraction)
        validation.append(rows[:cut])
        train.append(rows[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def baseline_statistics(
    images: np.ndarray, labels: np.ndarray, class_histograms: np.ndarray, *, dataset_version: str
) -> dict[str, Any]:
    """Class priors, per-class pixel statistics and feature histograms of the training split.

    `class_histograms` is `features.class_pixel_histograms(images, labels, class_count)`.
    """
    per_class = []
    values_per_image = math.prod(images.shape[1:])
    for label, histogram in enumerate(class_histograms):
        mean, std = features.histogram_moments(histogram)
        count = int(histogram.sum()) // values_per_image
        per_class.append(
            {"class": label, "count": count, "pixel_mean": mean / 255.0, "pixel_std": std / 255.0}
        )
    histogram = class_histograms.sum(axis=0).astype(np.float64)
    return {
        "schema_version": 1,
        "dataset_version": dataset_version,
        "count": len(images),
        "class_priors": features.class_priors(labels, len(class_histograms)),
        "per_class": per_class,
        "intensity_histogram": (histogram / max(histogram.sum(), 1)).tolist(),
        "mean_image": mean_image(images),
        "features": {
            name: features.feature_histogram(name, values)
            for name, values in features.per_image(images).items()
        },
    }


def mean_image(images: np.ndarray) -> list:
    """The average image on the 0-1 scale (4 decimals; per channel for colour images): where the ink
    usually is, so a change of position, size or orientation shows even when every intensity statistic
    stays the same."""
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(images), 4096):
        total += images[start : start + 4096].sum(axis=0, dtype=np.float64)
    return np.round(total / max(len(images), 1) / 255.0, 4).tolist()
