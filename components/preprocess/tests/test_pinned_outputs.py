"""Ingest and preprocess write what they wrote before ingest streamed its source through a fork pool and
preprocess copied rows in blocks (commit 596035b): dataset versions do not change.

The pins below were computed by the code at commit a782b10 (ingest, then preprocess with its defaults)
on these same sources, read as a folder. The sources are numpy noise, so the pins do not depend on
Pillow's fonts or PNG encoder. Here the new code reads them in 5-image batches (a shuffled tarball
makes it re-order rows), copies 7-row blocks, and runs two workers, so every merge and re-ordering
path runs.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import workers
from mnist_mlops.components.ingest import executor as ingest
from mnist_mlops.components.ingest import streaming
from mnist_mlops.components.preprocess import executor as preprocess
from mnist_mlops.hashing import sha256_file
from tests.datasets import colour_splits, write_png_tree

PINNED = {  # printed by the code at a782b10 run on SOURCES: dataset versions and sha256 of the files
    "digits": {
        "dataset_version": "036d0aee349c1f55d9350e33017e0f37648fb17a2bb7c0fe889e5b21c4dead6e",
        "dataset": {
            "training/images.npy": "03634672ccb56e8aa872b4ee0ad37f899da7cd53a9512366f77804cdc2e797a9",
            "training/labels.npy": "c00671a586d97b9bde23869f9fd7497ce3376d806cbff057032291cc0828271f",
            "training/digests.npy": "eddc0926b3aca0b2b72c74b72e85cb5a90ba053e81445ad99ee22602b6436b30",
            "testing/images.npy": "a908f1ba85929c6f0ff21c2e321738aa03dfcd8a4cf01201abaff9837948defd",
            "testing/labels.npy": "978072c8e4dc4d2b45ac23dbb75115742c03ead1e26565b8ae9c8bf22d0a9f4a",
            "testing/digests.npy": "1f5d9d589c56e975bd5bee1e82da5110deb9de5a7e7ee4df94b459a3e61f36ad",
        },
        "preprocessed": {
            "train/images.npy": "07f29674f756a7d450ad646ea9c6b6f1d2091369675e1005b6e9ea317d9fc114",
            "train/labels.npy": "64762d88c2adfb32aca88218ff7c081d3fc53183b62cf41e0c070540e16f5f2f",
            "validation/images.npy": "29739daf66883e9006a471d52127efca4d4706c57324d2af5b63450d428dd899",
            "validation/labels.npy": "7bd08bb0d3db88d5420c6318b0fadfd325093dea3582668798940ffb4fbba1fd",
            "test/images.npy": "a908f1ba85929c6f0ff21c2e321738aa03dfcd8a4cf01201abaff9837948defd",
            "test/labels.npy": "978072c8e4dc4d2b45ac23dbb75115742c03ead1e26565b8ae9c8bf22d0a9f4a",
            "baseline_statistics.json": "51180def9990554e4d42f2d37b86bf427170ee418ce92ca71a308b18f7407c4f",
        },
    },
    "colours": {
        "dataset_version": "cdc47751e06ac37a0d1f1a1bd7cdbd0989a225417525a654b7ae3c7576ceafb8",
        "dataset": {
            "training/images.npy": "da1cecf5d64eca383b0314336e5dbca770d1e8c0cf254bc71259ef3b8c9454a3",
            "training/labels.npy": "b221ed42c8f36f642a983dc6e6b02c3ffbb616390ddf249ecb3853349ae2e8ac",
            "training/digests.npy": "8f4dde404c8e13b16bc73669c748c64c86d6d1f98e747ccc6f3d020047903bd4",
            "testing/images.npy": "fc47f024470b94192ef24bce6ce51d450e6f0e7957333724cf64bf67db8b29bd",
            "testing/labels.npy": "fe2d046450aaa390f4ef463196fbc85f1de69477bec0a25a94cb6f521ee42d0f",
            "testing/digests.npy": "6807342fe2a45459c6e0f2c48f503a05ccc21b9a022278c3dc603eca64d9b276",
        },
        "preprocessed": {
            "train/images.npy": "631c5cc5f4f4d78dd56f1bf67542dde7df87266b710035fec082c641a06fa9e4",
            "train/labels.npy": "ce21e604f4120f6e5f5241f6b3e3bc5d9438f511c67f32c53d710a75b3124c0d",
            "validation/images.npy": "06e1b0ab35179f4c2a5adee757d7919c75e9295520fb66a80e800c471096b351",
            "validation/labels.npy": "2454b1053574cde96367a6fa0ec62dad817831c10a6a71eb89c1f9fdb0a8e14f",
            "test/images.npy": "fc47f024470b94192ef24bce6ce51d450e6f0e7957333724cf64bf67db8b29bd",
            "test/labels.npy": "fe2d046450aaa390f4ef463196fbc85f1de69477bec0a25a94cb6f521ee42d0f",
            "baseline_statistics.json": "a0be9c1cb89778f2ada2b371fe63b832449abd43f8b7cb19a7f2546f9dcb9d8b",
        },
    },
}


def digit_splits() -> dict:
    """MNIST's shape and class names (the version is hashed the MNIST way): 13 and 4 noise images a class."""
    rng = np.random.default_rng(13)
    return {
        split: (
            rng.integers(0, 256, size=(10 * per_class, 28, 28), dtype=np.uint8),
            np.repeat(np.arange(10, dtype=np.uint8), per_class),
        )
        for split, per_class in (("training", 13), ("testing", 4))
    }


SOURCES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "digits": (lambda root: write_png_tree(root, digit_splits()), None),
    "colours": (  # RGB, named classes declared in another order than their names' (the labels follow it)
        lambda root: write_png_tree(root, colour_splits(), classes=["circle", "square", "triangle"]),
        "triangle,circle,square",
    ),
}


def shuffled_tarball(folder: Path, target: Path) -> Path:
    """`folder` as a .tar.gz whose members are out of path order."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    random.Random(0).shuffle(files)
    with tarfile.open(target, "w:gz") as archive:
        for path in files:
            archive.add(path, arcname=path.relative_to(folder).as_posix())
    return target


def went_in_memory(*args: object, **kwargs: object) -> None:
    raise AssertionError("the source went the in-memory way: the streaming path was not tested")


@pytest.mark.parametrize("form", ["tarball", "folder"])
@pytest.mark.parametrize("name", sorted(PINNED))
def test_versions_and_files_are_what_the_code_before_streaming_wrote(tmp_path, monkeypatch, name, form):
    monkeypatch.setattr(ingest, "stream_png_folders", partial(streaming.stream_png_folders, batch_images=5))
    monkeypatch.setattr(ingest, "load_layout", went_in_memory)
    monkeypatch.setattr(preprocess, "COPY_ROWS", 7)
    monkeypatch.setattr(workers, "worker_count", lambda: 2)
    make, classes = SOURCES[name]
    folder = make(tmp_path / "source")
    source = shuffled_tarball(folder, tmp_path / "source.tar.gz") if form == "tarball" else folder
    report = tmp_path / "data_report.json"
    manifest = ingest.run_ingest(str(source), tmp_path / "dataset", report, classes=classes)
    preprocess.run_preprocess(tmp_path / "dataset", tmp_path / "preprocessed")
    assert manifest["dataset_version"] == PINNED[name]["dataset_version"]
    for folder in ("dataset", "preprocessed"):
        pinned = PINNED[name][folder]
        assert {path: sha256_file(tmp_path / folder / path) for path in pinned} == pinned, folder
