"""Recognise and decode the two MNIST layouts ingest accepts.

- `mnist_png`: `<root>/training/<label>/*.png` and `<root>/testing/<label>/*.png`.
- IDX: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
  `t10k-labels-idx1-ubyte[.gz]` (the original distribution).

Files that cannot be used (not a PNG, truncated, wrong size, bad label folder) are collected as invalid
with a reason instead of stopping the read; the caller's `on_invalid` policy decides what they mean.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from mnist_mlops.archives import FileEntry, gunzip
from mnist_mlops.dataset import IMAGE_SHAPE
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import decode_pngs

SPLITS = ("training", "testing")
_IDX_FILES = {
    "training": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "testing": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08
_LABELS = {str(label): label for label in range(10)}
_IDX_STEMS = frozenset(stem for pair in _IDX_FILES.values() for stem in pair)


@dataclass
class LoadedSplit:
    images: np.ndarray
    labels: np.ndarray
    converted: int = 0


@dataclass
class LoadedDataset:
    format: str
    splits: dict[str, LoadedSplit]
    invalid: list[dict[str, str]] = field(default_factory=list)
    candidates: int = 0
    ignored_files: int = 0
    newest_mtime: float = 0.0


def load_layout(entries: list[FileEntry], source: str) -> LoadedDataset:
    """Decode the dataset among `entries`, whichever layout it is in."""
    png_entries = [(entry, parts) for entry in entries if (parts := _png_parts(entry.path))]
    idx_entries: dict[str, FileEntry] = {}
    for entry in entries:
        if stem := _idx_stem(entry.path):
            if stem in idx_entries:
                raise UserInputError(
                    f"source {source}: {idx_entries[stem].path} and {entry.path} are both {stem}"
                )
            idx_entries[stem] = entry
    if png_entries and idx_entries:
        raise UserInputError(f"source {source}: holds both mnist_png folders and IDX files; pick one")
    if png_entries:
        return _load_png(png_entries, len(entries), source)
    if idx_entries:
        return _load_idx(idx_entries, len(entries), source)
    raise UserInputError(
        f"source {source}: no MNIST data found (expected <root>/training/<label>/*.png and "
        "<root>/testing/<label>/*.png, or the four *-idx?-ubyte[.gz] files)"
    )


def _png_parts(path: str) -> tuple[str, str, str] | None:
    """(root, split, label) when `path` is `[<root>/]<split>/<label>/<file>`, else None."""
    parts = path.rsplit("/", 3)
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    return (parts[0] if len(parts) == 4 else "", parts[-3], parts[-2])


def _load_png(
    matches: list[tuple[FileEntry, tuple[str, str, str]]], total_files: int, source: str
) -> LoadedDataset:
    roots = {root for _, (root, _, _) in matches}
    if len(roots) > 1:
        raise UserInputError(
            f"source {source}: several dataset roots ({', '.join(sorted(roots))}); expected one"
        )
    dataset = LoadedDataset(
        "mnist_png", {}, candidates=len(matches), ignored_files=total_files - len(matches)
    )
    dataset.newest_mtime = max(entry.mtime for entry, _ in matches)
    usable: dict[str, list[FileEntry]] = {split: [] for split in SPLITS}
    split_labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    for entry, (_, split, folder) in sorted(matches, key=lambda match: match[0].path):
        label = _LABELS.get(folder)
        if label is None:
            reason = f"label folder {folder!r} is not 0-9"
            dataset.invalid.append({"path": entry.path, "split": split, "reason": reason})
        else:
            usable[split].append(entry)
            split_labels[split].append(label)
    for split in SPLITS:
        entries, labels = usable[split], split_labels[split]
        batch = decode_pngs([entry.data for entry in entries], IMAGE_SHAPE, fork=True)
        keep = np.ones(len(entries), dtype=bool)
        for index, reason in sorted(batch.errors.items()):
            keep[index] = False
            dataset.invalid.append({"path": entries[index].path, "split": split, "reason": reason})
        dataset.splits[split] = LoadedSplit(
            images=batch.images[keep],
            labels=np.asarray(labels, dtype=np.uint8)[keep],
            converted=int(batch.converted[keep].sum()),
        )
    return dataset


def _idx_stem(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    stem = name[: -len(".gz")] if name.endswith(".gz") else name
    return stem if stem in _IDX_STEMS else None


def _load_idx(files: dict[str, FileEntry], total_files: int, source: str) -> LoadedDataset:
    missing = [stem for pair in _IDX_FILES.values() for stem in pair if stem not in files]
    if missing:
        raise UserInputError(f"source {source}: IDX dataset is missing {', '.join(missing)}")
    dataset = LoadedDataset("idx", {}, ignored_files=total_files - len(files))
    dataset.newest_mtime = max(entry.mtime for entry in files.values())
    for split, (images_stem, labels_stem) in _IDX_FILES.items():
        images = _read_idx(files[images_stem], dims=3)
        labels = _read_idx(files[labels_stem], dims=1)
        if images.shape[1:] != IMAGE_SHAPE:
            raise UserInputError(
                f"{files[images_stem].path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28"
            )
        if len(images) != len(labels):
            raise UserInputError(
                f"{files[labels_stem].path}: {len(labels)} labels for {len(images)} images in {images_stem}"
            )
        keep = labels <= 9
        for index in np.flatnonzero(~keep):
            dataset.invalid.append(
                {
                    "path": f"{files[labels_stem].path}[{index}]",
                    "split": split,
                    "reason": f"label {labels[index]} is not 0-9",
                }
            )
        dataset.candidates += len(images)
        dataset.splits[split] = LoadedSplit(images=images[keep].copy(), labels=labels[keep].copy())
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
