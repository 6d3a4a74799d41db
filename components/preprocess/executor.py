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
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import __version__, contracts, features, tracking
from mnist_mlops.atomic import staged_dir
from mnist_mlops.dataset import (
    classes_of,
    describe_shape,
    image_shape_of,
    load_split,
    save_array,
)
from mnist_mlops.hashing import sha256_file, sha256_files
from mnist_mlops.npyfiles import allocate_npy, read_rows, write_rows
from mnist_mlops.ports import checked
from mnist_mlops.workers import ordered_results

COMPONENT_NAME = "mnist_mlops_preprocess"
COPY_ROWS = 8192
"""Rows per copy job: 6.4 MB of MNIST images, and several jobs per split so that every CPU has work."""


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
    names = ("training", "testing")
    # the sha256 checks side by side, done before forking
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        splits = dict(zip(names, pool.map(partial(_open_split, dataset, source), names), strict=True))

    rng = np.random.default_rng(seed)
    train_rows, validation_rows = stratified_split(splits["training"][1], validation_fraction, rng)
    train_rows = rng.permutation(train_rows)
    training_images, training_labels = splits["training"]
    testing_images, testing_labels = splits["testing"]
    outputs = {
        "train": (training_images, train_rows, training_labels[train_rows]),
        "validation": (training_images, validation_rows, training_labels[validation_rows]),
        "test": (testing_images, np.arange(len(testing_labels)), testing_labels),
    }
    train = _TrainingSummary(image_shape_of(source), len(classes))

    manifest: dict[str, Any] = {
        "schema_version": 1,
        "dataset_version": source["dataset_version"],
        "source_manifest_sha256": sha256_file(dataset / "manifest.json"),
        "seed": seed,
        "validation_fraction": validation_fraction,
        "image_shape": source["image_shape"],
        "classes": classes,
        "normalization": {},  # from the training rows, as they are gathered
        "splits": {},
        "producer": {"component": COMPONENT_NAME, "version": __version__},
    }
    with staged_dir(Path(preprocessed)) as stage:
        jobs = []
        for name, (images_path, rows, split_labels) in outputs.items():
            target = stage / name / "images.npy"
            data_offset = allocate_npy(target, (len(rows), *image_shape_of(source)))
            row_bytes = math.prod(image_shape_of(source))
            jobs += [
                (
                    images_path,
                    rows[start : start + COPY_ROWS],
                    target,
                    data_offset + start * row_bytes,
                    split_labels[start : start + COPY_ROWS] if name == "train" else None,
                    len(classes),
                )
                for start in range(0, len(rows), COPY_ROWS)
            ]
        for block_summary in ordered_results(_copy_rows, jobs):
            if block_summary is not None:
                train.merge(block_summary)
        image_hashes = sha256_files([stage / name / "images.npy" for name in outputs])
        for (name, (_, _, split_labels)), image_hash in zip(outputs.items(), image_hashes, strict=True):
            manifest["splits"][name] = {
                "count": len(split_labels),
                "class_counts": features.class_counts(split_labels, len(classes)),
                "files": {
                    "images": {"path": f"{name}/images.npy", "sha256": image_hash},
                    "labels": save_array(stage, f"{name}/labels.npy", split_labels),
                },
            }
        pixel_mean, pixel_std = features.histogram_moments(train.class_histograms.sum(axis=0))
        manifest["normalization"] = {"scale": 1 / 255.0, "mean": pixel_mean / 255.0, "std": pixel_std / 255.0}
        baseline = train.baseline(outputs["train"][2], dataset_version=source["dataset_version"])
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
    summary = _TrainingSummary(images.shape[1:], len(class_histograms))
    summary.add(images, labels, class_histograms)
    return summary.baseline(labels, dataset_version=dataset_version)


class _TrainingSummary:
    """What the baseline needs of the training split, added a block of rows at a time, so the split is
    never in memory whole. Pixel sums and histograms are exact integers whatever the blocks, and the
    per-image features are per row: the statistics are the same for any blocking."""

    def __init__(self, image_shape: tuple[int, ...], class_count: int) -> None:
        self.class_histograms = np.zeros((class_count, 256), dtype=np.int64)
        self.image_sum = np.zeros(image_shape, dtype=np.float64)
        self.per_image: dict[str, list[np.ndarray]] = {name: [] for name in features.PER_IMAGE}

    def add(self, images: np.ndarray, labels: np.ndarray, class_histograms: np.ndarray | None = None) -> None:
        if class_histograms is None:
            class_histograms = features.class_pixel_histograms(images, labels, len(self.class_histograms))
        self.class_histograms += class_histograms
        self.image_sum += images.sum(axis=0, dtype=np.float64)  # cast a buffer at a time: no float64 copy
        for name, values in features.per_image(images).items():
            self.per_image[name].append(values)

    def merge(self, other: _TrainingSummary) -> None:
        """Add the summary of the rows that follow this one's."""
        self.class_histograms += other.class_histograms
        self.image_sum += other.image_sum
        for name, values in other.per_image.items():
            self.per_image[name] += values

    def baseline(self, labels: np.ndarray, *, dataset_version: str) -> dict[str, Any]:
        per_class = []
        values_per_image = math.prod(self.image_sum.shape)
        for label, histogram in enumerate(self.class_histograms):
            mean, std = features.histogram_moments(histogram)
            count = int(histogram.sum()) // values_per_image
            per_class.append(
                {"class": label, "count": count, "pixel_mean": mean / 255.0, "pixel_std": std / 255.0}
            )
        histogram = self.class_histograms.sum(axis=0).astype(np.float64)
        mean_image = np.round(self.image_sum / max(len(labels), 1) / 255.0, 4)
        return {
            "schema_version": 1,
            "dataset_version": dataset_version,
            "count": len(labels),
            "class_priors": features.class_priors(labels, len(self.class_histograms)),
            "per_class": per_class,
            "intensity_histogram": (histogram / max(histogram.sum(), 1)).tolist(),
            "mean_image": mean_image.tolist(),
            "features": {
                name: features.feature_histogram(name, np.concatenate(values))
                for name, values in self.per_image.items()
            },
        }


def _copy_rows(
    source: Path, rows: np.ndarray, target: Path, offset: int, labels: np.ndarray | None, class_count: int
) -> _TrainingSummary | None:
    """Copy `rows` of the .npy array `source` into `target` at byte `offset` (a worker's job); with
    `labels` (the train split), also summarise them for the baseline."""
    images = read_rows(source, rows)
    write_rows(target, offset, images)
    if labels is None:
        return None
    summary = _TrainingSummary(images.shape[1:], class_count)
    summary.add(images, labels)
    return summary


def _open_split(root: Path, manifest: dict[str, Any], split: str) -> tuple[Path, np.ndarray]:
    """The verified images file and the labels of a non-empty split of the ingested dataset; the
    images are read later, a block of rows at a time."""
    images, labels = load_split(root, manifest, split, mmap=True)  # checked here; its pages are never read
    return Path(images.filename), labels
