"""The on-disk form of image datasets that pass between components.

A split is a folder of `.npy` arrays (memory-mappable; uint8 images (N, H, W) or (N, H, W, 3), uint8
labels (N,), and for ingested data the per-image sha256 digests (N, 32)). The owning manifest records
each file's sha256, and readers verify it, so a corrupted or edited array is refused rather than trained
on; it also records the image shape and the class names (index = label) that the arrays must match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file

MNIST_IMAGE_SHAPE = (28, 28)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
"""MNIST's description: what the model still takes, and what a document written before datasets
described themselves (or a reference bundle, which does not say) holds."""


def image_shape_of(document: dict[str, Any]) -> tuple[int, ...]:
    """The image shape a manifest or split report records: (H, W) for grayscale, (H, W, 3) for colour."""
    return tuple(document.get("image_shape", MNIST_IMAGE_SHAPE))


def classes_of(document: dict[str, Any]) -> list[str]:
    """The class names a manifest or split report records, in label order."""
    return list(document.get("classes", MNIST_CLASSES))


def listed(names: list[str] | tuple[str, ...], limit: int = 6) -> str:
    """How messages list class names: "a, b, c", or the first `limit` then "... (26 in all)"."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def describe_shape(shape: tuple[int, ...] | list[int]) -> str:
    """How messages name an image shape: "28x28 grayscale" or "32x32x3"."""
    return "x".join(str(side) for side in shape) + (" grayscale" if len(shape) == 2 else "")


def save_array(root: Path, relative_path: str, array: np.ndarray) -> dict[str, str]:
    """Write `array` at `root/relative_path` (.npy); returns its manifest entry (path and sha256)."""
    path = root / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return {"path": relative_path, "sha256": sha256_file(path)}


def load_array(root: Path, entry: dict[str, str], *, mmap: bool = False) -> np.ndarray:
    """Load the array a manifest entry names, after checking it stays inside `root` and its sha256."""
    path = root / entry["path"]
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise UserInputError(f"{root}: the manifest names {entry['path']!r}, outside the folder; refused")
    if not path.is_file():
        raise UserInputError(f"{path}: missing (named in the manifest of {root})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise UserInputError(
            f"{path}: sha256 {actual} does not match the manifest ({entry['sha256']}); corrupted?"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:
        raise UserInputError(f"{path}: not a valid .npy array ({error})") from None


def check_split(
    images: np.ndarray, labels: np.ndarray, source: str, shape: tuple[int, ...], class_count: int
) -> None:
    """Refuse arrays whose shape, dtype or labels break what their manifest says of them."""
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        expected = ", ".join(str(side) for side in ("N", *shape))
        raise UserInputError(
            f"{source}: images must be uint8 ({expected}) as the manifest says, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.shape != (len(images),) or labels.dtype != np.uint8:
        raise UserInputError(
            f"{source}: labels must be uint8 ({len(images)},), got {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.max() >= class_count:
        raise UserInputError(
            f"{source}: label {int(labels.max())} is outside 0-{class_count - 1} ({class_count} classes)"
        )


def load_split(
    root: Path, manifest: dict[str, Any], split: str, *, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a non-empty split named in a (preprocessed or dataset) manifest, verified;
    with `mmap` the images are a memory map whose pages are read only when used."""
    files = manifest["splits"][split]["files"]
    images, labels = load_array(root, files["images"], mmap=mmap), load_array(root, files["labels"])
    check_split(images, labels, str(root / split), image_shape_of(manifest), len(classes_of(manifest)))
    if not len(images):
        raise UserInputError(f"{root / split}: the {split} split is empty")
    return images, labels
