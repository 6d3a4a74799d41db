"""preprocess: stratified seeded split, hold-out kept whole, verified inputs, baseline statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts, workers
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess import executor as preprocess
from mnist_mlops.components.preprocess.executor import run_preprocess, stratified_split
from mnist_mlops.errors import UserInputError
from tests.datasets import small_splits, write_png_tree


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    source = write_png_tree(tmp_path / "src", small_splits(train_per_class=20, test_per_class=4))
    run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    return tmp_path / "dataset"


def load(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(folder / split / "images.npy"), np.load(folder / split / "labels.npy")


def test_split_is_stratified_and_test_is_kept_whole(tmp_path, dataset):
    manifest = run_preprocess(dataset, tmp_path / "pre", validation_fraction=0.2, seed=7)
    contracts.read_json(tmp_path / "pre" / "manifest.json", "preprocessed_manifest")
    assert manifest["splits"]["validation"]["class_counts"] == [4] * 10
    assert manifest["splits"]["train"]["class_counts"] == [16] * 10
    test_images, _ = load(tmp_path / "pre", "test")
    original, _ = load(dataset, "testing")
    assert np.array_equal(test_images, original)
    train_images, train_labels = load(tmp_path / "pre", "train")
    validation_images, _ = load(tmp_path / "pre", "validation")
    seen = {image.tobytes() for image in train_images}
    assert not seen & {image.tobytes() for image in validation_images}
    assert len(seen) + len(validation_images) == 200
    assert not np.array_equal(train_labels, np.sort(train_labels)), "train rows must be shuffled"


def test_same_seed_same_output_other_seed_other_split(tmp_path, dataset):
    run_preprocess(dataset, tmp_path / "a", seed=1)
    run_preprocess(dataset, tmp_path / "b", seed=1)
    run_preprocess(dataset, tmp_path / "c", seed=2)
    for split in ("train", "validation", "test"):
        assert np.array_equal(load(tmp_path / "a", split)[0], load(tmp_path / "b", split)[0])
    assert not np.array_equal(load(tmp_path / "a", "validation")[0], load(tmp_path / "c", "validation")[0])
    manifest_a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest_b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest_a == manifest_b


def test_normalization_and_baseline_statistics(tmp_path, dataset):
    manifest = run_preprocess(dataset, tmp_path / "pre")
    images, labels = load(tmp_path / "pre", "train")
    scaled = images.astype(np.float64) / 255
    assert manifest["normalization"]["mean"] == pytest.approx(scaled.mean())
    assert manifest["normalization"]["std"] == pytest.approx(scaled.std())
    baseline = contracts.read_json(tmp_path / "pre" / "baseline_statistics.json", "baseline_statistics")
    assert baseline["dataset_version"] == manifest["dataset_version"]
    assert baseline["class_priors"] == pytest.approx([0.1] * 10)
    assert baseline["per_class"][3]["pixel_mean"] == pytest.approx(scaled[labels == 3].mean())
    assert sum(baseline["intensity_histogram"]) == pytest.approx(1.0)
    assert sum(baseline["features"]["ink_fraction"]["fractions"]) == pytest.approx(1.0)


def test_tampered_input_is_refused_and_nothing_written(tmp_path, dataset):
    images = np.load(dataset / "training" / "images.npy")
    images[0, 0, 0] ^= 0xFF
    np.save(dataset / "training" / "images.npy", images)
    with pytest.raises(UserInputError, match=r"images\.npy: sha256 .* does not match the manifest"):
        run_preprocess(dataset, tmp_path / "pre")
    assert not (tmp_path / "pre").exists()


def test_missing_manifest_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(contracts.ContractError, match=r"manifest\.json: file not found"):
        run_preprocess(tmp_path / "empty", tmp_path / "pre")


def test_manifest_paths_cannot_leave_the_folder(tmp_path, dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["splits"]["training"]["files"]["images"]["path"] = "../../etc/images.npy"
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="outside the folder"):
        run_preprocess(dataset, tmp_path / "pre")


def test_rows_copied_in_7_row_blocks_by_two_workers_are_what_numpy_saves(tmp_path, dataset, monkeypatch):
    """7-row blocks: many jobs a split, finished out of order, and the baseline merged over blocks."""
    monkeypatch.setattr(preprocess, "COPY_ROWS", 7)
    monkeypatch.setattr(workers, "worker_count", lambda: 2)
    run_preprocess(dataset, tmp_path / "blocks", validation_fraction=0.2, seed=3)
    images, labels = load(dataset, "training")
    rng = np.random.default_rng(3)
    train_rows, validation_rows = stratified_split(labels, 0.2, rng)
    train_rows = rng.permutation(train_rows)
    expected = {
        "train": (images[train_rows], labels[train_rows]),
        "validation": (images[validation_rows], labels[validation_rows]),
        "test": load(dataset, "testing"),
    }
    for name, arrays in expected.items():
        for kind, array in zip(("images", "labels"), arrays, strict=True):
            np.save(tmp_path / "reference.npy", array)
            written = (tmp_path / "blocks" / name / f"{kind}.npy").read_bytes()
            assert written == (tmp_path / "reference.npy").read_bytes(), f"{name}/{kind}.npy"
    monkeypatch.setattr(preprocess, "COPY_ROWS", len(labels))  # one block a split
    run_preprocess(dataset, tmp_path / "whole", validation_fraction=0.2, seed=3)
    baseline = "baseline_statistics.json"
    assert (tmp_path / "blocks" / baseline).read_bytes() == (tmp_path / "whole" / baseline).read_bytes()
