"""Recognise and decode the two layouts ingest accepts.

- Image folders (`mnist_png` is one): `<root>/training/<class name>/<file>` and
  `<root>/testing/<class name>/<file>`, PNGs of any one size, grayscale or colour.
- IDX: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
  `t10k-labels-idx1-ubyte[.gz]` (the original MNIST distribution; grayscale, any size).

The classes are the training split's class folders sorted by name, as torchvision's ImageFolder and
Keras' image_dataset_from_directory order them (MNIST's "0" to "9" are labels 0-9), or the order the
caller declares; IDX labels name MNIST's digits unless classes are declared. The dataset's image shape
is its most common one, read from the PNG headers before anything is decoded; images of another size or
channel count are listed (`LoadedDataset.odd_shapes`) and, with on_mixed_shape=resize, resized and
converted to it, else left out (the caller's check then fails).

Files that cannot be used (not a PNG, truncated, too large) are collected as invalid with a reason
instead of stopping the read; the caller's `on_invalid` policy decides what they mean.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import features
from mnist_mlops.archives import FileEntry, gunzip
from mnist_mlops.dataset import MNIST_CLASSES, describe_shape, save_array
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import image_digests
from mnist_mlops.imaging import ImageDecodeError, decode_pngs, png_shapes, resize_png

SPLITS = ("training", "testing")
MAX_CLASSES = 255
"""Labels are stored as uint8."""
_IDX_FILES = {
    "training": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "testing": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08
_IDX_STEMS = frozenset(stem for pair in _IDX_FILES.values() for stem in pair)
IDX_NAMES = _IDX_STEMS | {f"{stem}.gz" for stem in _IDX_STEMS}
"""The file names of an IDX dataset, plain or gzipped."""
_LISTED_EXAMPLES = 3


@dataclass
class LoadedSplit:
    """One split, its files already staged: what the checks, the manifest and the version need of it
    without holding its images."""

    labels: np.ndarray
    digests: np.ndarray  # sha256 of each image's pixels, (N, 32) uint8
    class_histograms: np.ndarray  # features.class_pixel_histograms of the split
    files: dict[str, dict[str, str]]  # "images", "labels", "digests" -> manifest entry (path, sha256)
    converted: int = 0
    resized: int = 0


@dataclass
class LoadedDataset:
    format: str
    image_shape: tuple[int, ...]
    classes: list[str]
    splits: dict[str, LoadedSplit] = field(default_factory=dict)
    invalid: list[dict[str, str]] = field(default_factory=list)
    odd_shapes: list[dict[str, Any]] = field(default_factory=list)
    candidates: int = 0
    ignored_files: int = 0
    newest_mtime: float = 0.0
    source_files: int = 0


def parse_classes(text: str | None) -> list[str] | None:
    """The declared class names (comma-separated, in label order), or None when none are declared."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UserInputError(f"ingest: classes={text!r} holds an empty name; give names separated by commas")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserInputError(f"ingest: classes={text!r} names {', '.join(repeated)} more than once")
    return _checked_class_count(names, "ingest: the declared classes")


def staged_split(
    stage: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_count: int,
    *,
    converted: int = 0,
    resized: int = 0,
) -> LoadedSplit:
    """Write a split held in memory to `stage/<split>/` and describe it."""
    digests = image_digests(images)
    files = {
        "images": save_array(stage, f"{split}/images.npy", images),
        "labels": save_array(stage, f"{split}/labels.npy", labels),
        "digests": save_array(stage, f"{split}/digests.npy", digests),
    }
    histograms = features.class_pixel_histograms(images, labels, class_count)
    return LoadedSplit(labels, digests, histograms, files, converted, resized)


def load_layout(
    entries: list[FileEntry],
    source: str,
    stage: Path,
    *,
    classes: list[str] | None = None,
    on_mixed_shape: str = "fail",
) -> LoadedDataset:
    """Decode the dataset among `entries` into `stage`, whichever layout it is in, labelled by `classes`
    when given. Holds the whole source and its images in memory: `streaming.stream_png_folders` is the
    way for one-shape image folders; this is the way for the rest."""
    png_entries = [(entry, parts) for entry in entries if (parts := png_parts(entry.path))]
    idx_entries: dict[str, FileEntry] = {}
    for entry in entries:
        if stem := idx_stem(entry.path):
            if stem in idx_entries:
                raise UserInputError(
                    f"source {source}: {idx_entries[stem].path} and {entry.path} are both {stem}"
                )
            idx_entries[stem] = entry
    if png_entries and idx_entries:
        raise UserInputError(f"source {source}: holds both mnist_png folders and IDX files; pick one")
    if png_entries:
        return _load_png(png_entries, len(entries), source, stage, classes, on_mixed_shape)
    if idx_entries:
        return _load_idx(idx_entries, len(entries), source, stage, classes)
    raise UserInputError(
        f"source {source}: no image data found (expected <root>/training/<class>/*.png and "
        "<root>/testing/<class>/*.png, or the four *-idx?-ubyte[.gz] files)"
    )


def png_parts(path: str) -> tuple[str, str, str] | None:
    """(root, split, class folder) when `path` is `[<root>/]<split>/<class>/<file>`, else None."""
    parts = path.rsplit("/", 3)
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    return (parts[0] if len(parts) == 4 else "", parts[-3], parts[-2])


def _load_png(
    matches: list[tuple[FileEntry, tuple[str, str, str]]],
    total_files: int,
    source: str,
    stage: Path,
    declared: list[str] | None,
    on_mixed_shape: str,
) -> LoadedDataset:
    roots = {root for _, (root, _, _) in matches}
    if len(roots) > 1:
        raise UserInputError(
            f"source {source}: several dataset roots ({', '.join(sorted(roots))}); expected one"
        )
    ordered = sorted(matches, key=lambda match: match[0].path)
    classes = _folder_classes(ordered, declared, source)
    label_of = {name: label for label, name in enumerate(classes)}
    items = {
        split: [(entry, label_of[folder]) for entry, (_, in_split, folder) in ordered if in_split == split]
        for split in SPLITS
    }
    shapes = {split: png_shapes([entry.data for entry, _ in items[split]]) for split in SPLITS}
    common = _common_shape(items, shapes, source)
    if on_mixed_shape != "resize":
        _check_each_split_has(common, items, shapes, source)
    dataset = LoadedDataset(
        "mnist_png",
        common,
        classes,
        candidates=len(matches),
        ignored_files=total_files - len(matches),
        newest_mtime=max(entry.mtime for entry, _ in matches),
        source_files=total_files,
    )
    for split in SPLITS:
        dataset.splits[split] = _decode_split(
            dataset, stage, split, items[split], shapes[split], on_mixed_shape
        )
    return dataset


def _folder_classes(
    matches: list[tuple[FileEntry, tuple[str, str, str]]], declared: list[str] | None, source: str
) -> list[str]:
    """The declared classes, after checking every class folder is one of them; else the training
    split's class folders, sorted, after checking testing has no class that training lacks."""
    first_file: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for entry, (_, split, folder) in matches:
        first_file[split].setdefault(folder, entry.path)
    if declared is not None:
        for split in SPLITS:
            for folder, path in first_file[split].items():
                if folder not in declared:
                    raise UserInputError(
                        f"source {source}: class folder {split}/{folder} (e.g. {path}) is not one of the "
                        f"declared classes ({', '.join(declared)})"
                    )
        return declared
    for folder, path in first_file["testing"].items():
        if folder not in first_file["training"]:
            raise UserInputError(
                f"source {source}: class folder testing/{folder} (e.g. {path}) has no counterpart in "
                "training; every class needs training images"
            )
    return _checked_class_count(sorted(first_file["training"]), f"source {source}: training's class folders")


def _checked_class_count(classes: list[str], where: str) -> list[str]:
    if len(classes) > MAX_CLASSES:
        raise UserInputError(
            f"{where}: {len(classes)} classes ({', '.join(classes[:_LISTED_EXAMPLES])}, ...), more than "
            f"the {MAX_CLASSES} ingest supports (labels are uint8)"
        )
    if len(classes) < 2:
        raise UserInputError(
            f"{where}: only {len(classes)} class ({', '.join(classes)}); a classifier needs two"
        )
    return classes


def _common_shape(
    items: dict[str, list[tuple[FileEntry, int]]], shapes: dict[str, list[tuple[int, ...] | str]], source: str
) -> tuple[int, ...]:
    """The most common shape (size and channel count) among the images that have one."""
    readable = [shape for split in SPLITS for shape in shapes[split] if isinstance(shape, tuple)]
    if not readable:
        failures = (
            f"{entry.path}: {reason}"
            for split in SPLITS
            for (entry, _), reason in zip(items[split], shapes[split], strict=True)
        )
        examples = "; ".join(itertools.islice(failures, _LISTED_EXAMPLES))
        raise UserInputError(f"source {source}: no image could be read (e.g. {examples})")
    return Counter(readable).most_common(1)[0][0]


def _check_each_split_has(
    shape: tuple[int, ...],
    items: dict[str, list[tuple[FileEntry, int]]],
    shapes: dict[str, list[tuple[int, ...] | str]],
    source: str,
) -> None:
    """Refuse a split with no image of the dataset's shape, naming what it has: nothing of it would be
    kept, and the data check would only count the odd images."""
    for split in SPLITS:
        found = [found for found in shapes[split] if isinstance(found, tuple)]
        if found and shape not in found:
            kinds = Counter(describe_shape(item) for item in found).most_common()
            path = items[split][shapes[split].index(found[0])][0].path
            has = ", ".join(f"{kind} ({count})" for kind, count in kinds)
            raise UserInputError(
                f"source {source}: no {split} image is {describe_shape(shape)}, the dataset's shape (most "
                f"images): {split} has {has}, e.g. {path}; on_mixed_shape=resize would resize and convert"
                " them"
            )


def _decode_split(
    dataset: LoadedDataset,
    stage: Path,
    split: str,
    items: list[tuple[FileEntry, int]],
    shapes: list[tuple[int, ...] | str],
    on_mixed_shape: str,
) -> LoadedSplit:
    """Decode the images of the dataset's shape at once, resize the others (on_mixed_shape=resize) one
    by one, and record every failure as an invalid file, in path order."""
    shape = dataset.image_shape
    images = np.zeros((len(items), *shape), dtype=np.uint8)
    kept = np.zeros(len(items), dtype=bool)
    converted = np.zeros(len(items), dtype=bool)
    resized = np.zeros(len(items), dtype=bool)
    failures: dict[int, str] = {}
    uniform = [index for index, found in enumerate(shapes) if found == shape]
    batch = decode_pngs([items[index][0].data for index in uniform], shape)
    images[uniform], kept[uniform], converted[uniform] = batch.images, True, batch.converted
    failures |= {uniform[position]: reason for position, reason in batch.errors.items()}
    for index, found in enumerate(shapes):
        if isinstance(found, str):
            failures[index] = found
        elif found != shape:
            entry = items[index][0]
            dataset.odd_shapes.append({"path": entry.path, "split": split, "shape": list(found)})
            if on_mixed_shape == "resize":
                try:
                    images[index] = resize_png(entry.data, shape)
                except ImageDecodeError as error:
                    failures[index] = str(error)
                    continue
                kept[index], converted[index] = True, len(found) != len(shape)
                resized[index] = found[:2] != shape[:2]
    for index, reason in sorted(failures.items()):
        kept[index] = False
        dataset.invalid.append({"path": items[index][0].path, "split": split, "reason": reason})
    labels = np.asarray([label for _, label in items], dtype=np.uint8)
    return staged_split(
        stage,
        split,
        images[kept],
        labels[kept],
        len(dataset.classes),
        converted=int(converted[kept].sum()),
        resized=int(resized[kept].sum()),
    )


def idx_stem(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    return name.removesuffix(".gz") if name in IDX_NAMES else None


def _load_idx(
    files: dict[str, FileEntry], total_files: int, source: str, stage: Path, declared: list[str] | None
) -> LoadedDataset:
    missing = [stem for pair in _IDX_FILES.values() for stem in pair if stem not in files]
    if missing:
        raise UserInputError(f"source {source}: IDX dataset is missing {', '.join(missing)}")
    arrays = {
        split: (_read_idx(files[images_stem], dims=3), _read_idx(files[labels_stem], dims=1))
        for split, (images_stem, labels_stem) in _IDX_FILES.items()
    }
    shape, test_shape = (arrays[split][0].shape[1:] for split in SPLITS)
    if not all(shape):
        raise UserInputError(f"{files[_IDX_FILES['training'][0]].path}: images are {describe_shape(shape)}")
    if test_shape != shape:
        raise UserInputError(
            f"{files[_IDX_FILES['testing'][0]].path}: images are {describe_shape(test_shape)}, the training "
            f"images {describe_shape(shape)}; both splits must have one shape"
        )
    classes = declared or list(MNIST_CLASSES)
    hint = "" if declared else " (MNIST's digits; name the classes of other IDX data with classes=)"
    dataset = LoadedDataset(
        "idx", shape, classes, ignored_files=total_files - len(files), source_files=total_files
    )
    dataset.newest_mtime = max(entry.mtime for entry in files.values())
    for split, (images_stem, labels_stem) in _IDX_FILES.items():
        images, labels = arrays[split]
        if len(images) != len(labels):
            raise UserInputError(
                f"{files[labels_stem].path}: {len(labels)} labels for {len(images)} images in {images_stem}"
            )
        keep = labels < len(classes)
        for index in np.flatnonzero(~keep):
            dataset.invalid.append(
                {
                    "path": f"{files[labels_stem].path}[{index}]",
                    "split": split,
                    "reason": f"label {labels[index]} is not 0-{len(classes) - 1}{hint}",
                }
            )
        dataset.candidates += len(images)
        dataset.splits[split] = staged_split(stage, split, images[keep], labels[keep], len(classes))
    return dataset


def _read_idx(entry: FileEntry, dims: int) -> np.ndarray:
    data = gunzip(entry.data, source=entry.path) if entry.path.endswith(".gz") else entry.data
    header_size = 4 + 4 * dims
    if len(data) < header_size or data[0:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != dims:
        raise UserInputError(f"{entry.path}: not an unsigned-byte IDX file with {dims} dimension(s)")
    shape = struct.unpack(f">{dims}I", data[4:header_size])
    expected = math.prod(shape)
    if len(data) - header_size != expected:
        raise UserInputError(
            f"{entry.path}: header declares {expected} bytes of data for shape {shape}, "
            f"file has {len(data) - header_size} (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)
