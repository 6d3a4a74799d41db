"""Image folders of one shape (every MNIST-like source), decoded while the source is still being read.

The reader (this process) walks the source and hands batches of `BATCH_IMAGES` PNGs of one split to a
fork pool; each worker decodes its batch, hashes each image and counts pixel values per class folder.
The kept rows go straight into the staged `<split>/images.npy` in archive order, with only each row's
path, class folder and digest kept in memory; at the end the rows are put in path order (a pass over
the file, skipped when the archive already is in path order, as MNIST's is). So for a .tar.gz source
memory grows with the file count, not with the archive or the pixels; a folder source is read whole
first (`sources.iter_files`), so its files' bytes are in memory. The outputs are byte for byte what
`layouts.load_layout` writes from the whole source in memory.

What this path does not handle it hands back (`None`) before anything is final, and the caller reads
the source the in-memory way, which also words every refusal: IDX files, several roots, images of
another shape than the first readable one, class folders that are not a valid class list, sources
with no readable image, and names that are not valid UTF-8 (undecodable bytes in a folder source,
which this path cannot put in the in-memory way's order).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_mlops import features
from mnist_mlops.archives import FileEntry
from mnist_mlops.dataset import save_array
from mnist_mlops.hashing import image_digests, sha256_files
from mnist_mlops.imaging import ImageDecodeError, decode_pngs, png_shape, png_shapes
from mnist_mlops.npyfiles import NpyWriter, reorder_rows
from mnist_mlops.workers import ordered_results

from .layouts import IDX_NAMES, MAX_CLASSES, SPLITS, LoadedDataset, LoadedSplit, png_parts

BATCH_IMAGES = 4096
"""PNGs per job: large enough that a job's pickling and scheduling are noise next to its decoding."""


@dataclass
class DecodedRows:
    """What a worker returns for one batch: the rows it kept (batch order) and what the split needs."""

    images: np.ndarray  # kept rows
    kept: np.ndarray  # their positions in the batch
    digests: np.ndarray  # sha256 of each kept row, (k, 32) uint8
    histograms: np.ndarray  # (folders, 256) pixel-value counts of the kept rows per class folder id
    failures: dict[int, str]  # batch position -> why that file is invalid
    converted: int  # kept rows converted from another PNG mode
    odd_shape: bool  # a readable image of another shape: the whole source goes the in-memory way


def decode_rows(blobs: list[bytes], folders: np.ndarray, shape: tuple[int, ...]) -> DecodedRows:
    """Decode one batch (the worker's job): rows of `shape` kept, failures with their reasons."""
    shapes = png_shapes(blobs)
    failures = {index: found for index, found in enumerate(shapes) if isinstance(found, str)}
    uniform = [index for index, found in enumerate(shapes) if found == shape]
    odd_shape = len(failures) + len(uniform) < len(blobs)
    batch = decode_pngs([blobs[index] for index in uniform], shape)
    failures |= {uniform[position]: reason for position, reason in batch.errors.items()}
    good = np.setdiff1d(np.arange(len(uniform)), list(batch.errors))
    images = batch.images[good] if len(good) < len(uniform) else batch.images
    kept = np.asarray(uniform, dtype=np.int64)[good]
    folder_count = int(folders.max()) + 1 if len(folders) else 0
    return DecodedRows(
        images=images,
        kept=kept,
        digests=image_digests(images),
        histograms=features.class_pixel_histograms(images, folders[kept], folder_count),
        failures=dict(sorted(failures.items())),
        converted=int(batch.converted[good].sum()),
        odd_shape=odd_shape,
    )


@dataclass
class _SplitRows:
    """One split's kept rows in archive order: pixels in the staged file, the rest in memory."""

    writer: NpyWriter
    folder_ids: dict[str, int] = field(default_factory=dict)  # class folder -> id, in order of appearance
    paths: list[np.ndarray] = field(default_factory=list)  # UTF-8 paths per batch ("S" arrays)
    folders: list[np.ndarray] = field(default_factory=list)
    digests: list[np.ndarray] = field(default_factory=list)
    histograms: np.ndarray = field(default_factory=lambda: np.zeros((MAX_CLASSES + 1, 256), dtype=np.int64))
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    converted: int = 0

    def add(self, rows: DecodedRows, paths: list[str], folders: np.ndarray) -> None:
        self.writer.append(rows.images)
        kept = rows.kept.tolist()
        try:
            self.paths.append(np.array([paths[index].encode() for index in kept], dtype=np.bytes_))
        except UnicodeEncodeError:  # a surrogate-escaped name: the in-memory way sorts it as a str
            raise _Unsupported from None
        self.folders.append(folders[rows.kept])
        self.digests.append(rows.digests)
        self.histograms[: len(rows.histograms)] += rows.histograms
        self.invalid += [(paths[index], reason) for index, reason in rows.failures.items()]
        self.converted += rows.converted


@dataclass
class _Batch:
    split: str
    paths: list[str] = field(default_factory=list)
    folders: list[int] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)


class _Reader:
    """Walks the source once, sorting image-folder files into per-split batches and noting what decides
    whether this path can take the source at all."""

    def __init__(self, entries: Iterable[FileEntry], declared: list[str] | None) -> None:
        self.entries = entries
        self.declared = declared
        self.folder_ids: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        self.roots: set[str] = set()
        self.shape: tuple[int, ...] | None = None
        self.total_files = 0
        self.candidates = 0
        self.newest_mtime = 0.0
        self.unsupported = False  # IDX files or too many class folders: the in-memory way decides
        self.submitted: deque[_Batch] = deque()

    def batches(self, batch_images: int) -> Iterator[tuple[list[bytes], np.ndarray, tuple[int, ...]]]:
        """Jobs for `decode_rows`; each job's batch is queued in `submitted` as it is handed out."""
        pending = {split: _Batch(split) for split in SPLITS}
        places: dict[str, tuple[str, int] | None] = {}  # parent folder -> (split, class folder id)
        for entry in self.entries:
            self.total_files += 1
            folder, _, name = entry.path.rpartition("/")
            if name in IDX_NAMES:
                self.unsupported = True
                return
            if folder not in places:  # what png_parts says depends on the parent folder alone
                places[folder] = self._place(entry.path)
                if self.unsupported:
                    return
            place = places[folder]
            if place is None:
                continue
            split, folder_id = place
            self.candidates += 1
            if entry.mtime > self.newest_mtime:
                self.newest_mtime = entry.mtime
            if self.shape is None:
                self.shape = _readable_shape(entry.data)
            batch = pending[split]
            batch.paths.append(entry.path)
            batch.folders.append(folder_id)
            batch.blobs.append(entry.data)
            if len(batch.blobs) >= batch_images and self.shape is not None:
                yield self._submit(batch)
                pending[split] = _Batch(split)
        for batch in pending.values():
            if batch.blobs and self.shape is not None:
                yield self._submit(batch)

    def _place(self, path: str) -> tuple[str, int] | None:
        """The split and class folder id of an image at `path`, None for a file outside the layout;
        a class folder past MAX_CLASSES marks the source unsupported."""
        parts = png_parts(path)
        if parts is None:
            return None
        root, split, folder = parts
        self.roots.add(root)
        ids = self.folder_ids[split]
        if folder not in ids:
            if len(ids) == MAX_CLASSES:
                self.unsupported = True
                return None
            ids[folder] = len(ids)
        return split, ids[folder]

    def close(self) -> None:
        """Release the source now (a tarball's open file), not when its generator is collected."""
        if isinstance(self.entries, Generator):
            self.entries.close()

    def _submit(self, batch: _Batch) -> tuple[list[bytes], np.ndarray, tuple[int, ...]]:
        self.submitted.append(batch)
        assert self.shape is not None
        return batch.blobs, np.asarray(batch.folders, dtype=np.uint8), self.shape


def stream_png_folders(
    entries: Iterable[FileEntry],
    stage: Path,
    *,
    classes: list[str] | None = None,
    batch_images: int = BATCH_IMAGES,
    workers: int | None = None,
) -> LoadedDataset | None:
    """Decode the image folders among `entries` into `stage`, as `layouts.load_layout` would; None
    (and nothing left in `stage`) when the source is not image folders of one shape with valid classes."""
    reader = _Reader(entries, classes)
    splits: dict[str, _SplitRows] = {}
    try:
        _decode_batches(reader, splits, stage, batch_images, workers)
        label_classes = None if reader.unsupported else _classes(reader, classes)
        if label_classes is None or reader.shape is None or len(reader.roots) != 1:
            raise _Unsupported
        dataset = LoadedDataset(
            "mnist_png",
            reader.shape,
            label_classes,
            candidates=reader.candidates,
            ignored_files=reader.total_files - reader.candidates,
            newest_mtime=reader.newest_mtime,
            source_files=reader.total_files,
        )
        for split in SPLITS:
            rows_of = splits.get(split) or _SplitRows(NpyWriter(stage / split / "images.npy", reader.shape))
            splits[split] = rows_of
            dataset.splits[split] = _finish_split(stage, split, rows_of, reader, label_classes)
            dataset.invalid += [
                {"path": path, "split": split, "reason": reason}
                for path, reason in sorted(rows_of.invalid, key=lambda item: item[0])
            ]
        image_files = [f"{split}/images.npy" for split in SPLITS]
        hashes = sha256_files([stage / path for path in image_files])
        for split, path, image_hash in zip(SPLITS, image_files, hashes, strict=True):
            dataset.splits[split].files["images"] = {"path": path, "sha256": image_hash}
        return dataset
    except _Unsupported:
        _discard(stage, splits)
        return None
    except BaseException:
        _discard(stage, splits)
        raise


def _decode_batches(
    reader: _Reader, splits: dict[str, _SplitRows], stage: Path, batch_images: int, workers: int | None
) -> None:
    """Decode the source's batches into `splits`, up to the first image of another shape. The workers
    and the source are released here however this ends: an error would otherwise leave them to the
    garbage collector, as its traceback holds the suspended generators."""
    with ExitStack() as cleanup:
        cleanup.callback(reader.close)
        batches = cleanup.enter_context(closing(reader.batches(batch_images)))
        results = cleanup.enter_context(closing(ordered_results(decode_rows, batches, workers=workers)))
        for rows in results:
            batch = reader.submitted.popleft()
            if rows.odd_shape:
                reader.unsupported = True
                return
            if batch.split not in splits:
                assert reader.shape is not None
                splits[batch.split] = _SplitRows(NpyWriter(stage / batch.split / "images.npy", reader.shape))
            splits[batch.split].add(rows, batch.paths, np.asarray(batch.folders, dtype=np.uint8))


class _Unsupported(Exception):
    """The source is for the in-memory way."""


def _readable_shape(blob: bytes) -> tuple[int, ...] | None:
    try:
        return png_shape(blob)
    except ImageDecodeError:
        return None


def _classes(reader: _Reader, declared: list[str] | None) -> list[str] | None:
    """The class names, or None when the class folders would be refused (the in-memory way words it)."""
    training, testing = reader.folder_ids["training"], reader.folder_ids["testing"]
    if declared is not None:
        return declared if set(training) | set(testing) <= set(declared) else None
    if not set(testing) <= set(training) or not 2 <= len(training) <= MAX_CLASSES:
        return None
    return sorted(training)


def _finish_split(
    stage: Path, split: str, rows: _SplitRows, reader: _Reader, classes: list[str]
) -> LoadedSplit:
    """Close the split's image file, put its rows in path order, write its labels and digests (the
    caller hashes the image files of both splits at once)."""
    rows.writer.close()
    paths = np.concatenate(rows.paths) if rows.paths else np.array([], dtype=np.bytes_)
    order = np.argsort(paths, kind="stable")
    if (order != np.arange(len(order))).any():
        reorder_rows(rows.writer.path, order)
    label_of = np.zeros(MAX_CLASSES + 1, dtype=np.uint8)
    folder_ids = reader.folder_ids[split]
    for folder, folder_id in folder_ids.items():
        label_of[folder_id] = classes.index(folder)
    folders = np.concatenate(rows.folders) if rows.folders else np.array([], dtype=np.uint8)
    labels = label_of[folders][order]
    digests = np.concatenate(rows.digests)[order] if rows.digests else np.zeros((0, 32), dtype=np.uint8)
    histograms = np.zeros((len(classes), 256), dtype=np.int64)
    for folder, folder_id in folder_ids.items():
        histograms[classes.index(folder)] += rows.histograms[folder_id]
    files = {
        "labels": save_array(stage, f"{split}/labels.npy", labels),
        "digests": save_array(stage, f"{split}/digests.npy", digests),
    }
    return LoadedSplit(labels, digests, histograms, files, converted=rows.converted)


def _discard(stage: Path, splits: dict[str, _SplitRows]) -> None:
    """Remove what this path staged, so the in-memory way (or the caller's cleanup) starts clean."""
    for split, rows in splits.items():
        rows.writer.abandon()
        for name in ("images", "labels", "digests"):
            (stage / split / f"{name}.npy").unlink(missing_ok=True)
        if (stage / split).is_dir() and not any((stage / split).iterdir()):
            os.rmdir(stage / split)
