"""The training baseline a preprocess output carries (schema `baseline_statistics`), read one way by
every stage that compares other data with it: evaluate (new training data against production's) and
the monitor (traffic against training data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file


def read_baseline(preprocessed: Path) -> dict[str, Any]:
    """The baseline of a preprocess output, checked against the sha256 its manifest records."""
    manifest = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    entry = manifest["baseline_statistics"]
    path = preprocessed / entry["path"]
    baseline = contracts.read_json(path, "baseline_statistics")
    if sha256_file(path) != entry["sha256"]:
        raise UserInputError(f"{path}: differs from the sha256 recorded in {preprocessed / 'manifest.json'}")
    return baseline
