"""A registered model's reference: what it was trained and tested on, kept beside it in the registry so
that any later run can ask "is the new data still like production's?" without the old run's folder.

register logs the bundle under the registering run (artifact path `reference`) and names it in the
version's tag `reference_uri`; resolve_champion fetches the production version's bundle for evaluate,
deploy draws canary images from it, the monitor takes a serving version's training baseline from it.
The bundle (schema `reference_manifest` for reference.json):
    reference.json             dataset version, image shape and classes (what a model trained on it
                               takes and answers), file sha256s, how the test split was sampled
    baseline_statistics.json   the training split's statistics (preprocess's)
    data_report.json           ingest's report of that dataset
    test/images.npy, test/labels.npy   the test split, evenly sampled down to MAX_TEST_IMAGES
A bundle that cannot be fetched or does not verify is reported as missing with the reason, never raised:
the registry may outlive a run's artifacts, and a missing reference is a finding, not a crash.
A bundle written before bundles recorded the image shape and classes reads as MNIST's (`dataset`'s
defaults), which is what every model registered then was trained on.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import contracts
from mnist_mlops.dataset import classes_of, image_shape_of, load_split, save_array
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file

TAG = "reference_uri"
ARTIFACT_PATH = "reference"
MANIFEST = "reference.json"
BASELINE = "baseline_statistics.json"
DATA_REPORT = "data_report.json"
MAX_TEST_IMAGES = 10_000
"""MNIST's whole test split; larger ones are sampled evenly, so the bundle stays a few MB."""


def write_bundle(folder: Path, preprocessed: Path, data_report: Path) -> dict[str, Any]:
    """Write the bundle for a model trained on `preprocessed` into `folder`; returns its manifest."""
    source = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    images, labels = load_split(preprocessed, source, "test")
    rows = np.linspace(0, len(images) - 1, min(len(images), MAX_TEST_IMAGES)).round().astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    baseline = preprocessed / source["baseline_statistics"]["path"]
    shutil.copyfile(baseline, folder / BASELINE)
    shutil.copyfile(data_report, folder / DATA_REPORT)
    manifest = {
        "schema_version": 1,
        "dataset_version": source["dataset_version"],
        "image_shape": list(image_shape_of(source)),
        "classes": classes_of(source),
        "baseline_statistics": {"path": BASELINE, "sha256": sha256_file(folder / BASELINE)},
        "data_report": {"path": DATA_REPORT, "sha256": sha256_file(folder / DATA_REPORT)},
        "splits": {
            "test": {
                "count": len(rows),
                "of": len(images),
                "files": {
                    "images": save_array(folder, "test/images.npy", images[rows]),
                    "labels": save_array(folder, "test/labels.npy", labels[rows]),
                },
            }
        },
    }
    contracts.write_json(folder / MANIFEST, manifest, "reference_manifest")
    return manifest


def read_bundle(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and the training baseline of a bundle, verified against the manifest's sha256s."""
    manifest = contracts.read_json(folder / MANIFEST, "reference_manifest")
    for entry in (manifest["baseline_statistics"], manifest["data_report"]):
        path = folder / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise UserInputError(f"{path}: missing or not the file {folder / MANIFEST} names")
    baseline = contracts.read_json(folder / manifest["baseline_statistics"]["path"], "baseline_statistics")
    return manifest, baseline


def test_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's test images and labels, verified, of the image shape and classes it records."""
    return load_split(folder, contracts.read_json(folder / MANIFEST, "reference_manifest"), "test")


def fetch(uri: str, model_name: str, version: str, destination: Path) -> dict[str, Any]:
    """Download and verify version `version`'s bundle into `destination`; returns what happened:
    {found, uri, dataset_version, reason}. `destination` exists only when found."""
    from mlflow.exceptions import MlflowException

    from mnist_mlops.registry import client, download_folder

    where = f"{model_name} v{version}"
    try:
        tags = client(uri).get_model_version(model_name, version).tags or {}
    except MlflowException as error:
        return _missing(None, f"{where}: cannot read its tags ({str(error).splitlines()[0]})")
    source = tags.get(TAG)
    if not source:
        return _missing(None, f"{where} was registered without a reference (no {TAG} tag)")
    try:
        download_folder(uri, source, destination, MANIFEST)
        manifest, _ = read_bundle(destination)
        test_split(destination)
    except (MlflowException, OSError, UserInputError, ValueError) as error:
        shutil.rmtree(destination, ignore_errors=True)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        return _missing(source, f"{where}'s reference {source} cannot be read ({detail})")
    return {
        "found": True,
        "uri": source,
        "dataset_version": manifest["dataset_version"],
        "reason": f"{where} was trained on dataset {manifest['dataset_version'][:12]}",
    }


def _missing(source: str | None, reason: str) -> dict[str, Any]:
    return {"found": False, "uri": source, "dataset_version": None, "reason": reason}
