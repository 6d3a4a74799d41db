"""The on-disk form of image datasets that pass between components.

A split is a folder of `.npy` arrays (memory-mappable; uint8 images (N, 28, 28), uint8 labels (N,),
and for ingested data the per-image sha256 digests (N, 32)). The owning manifest records each file's
sha256, and readers verify it, so a corrupted or edited array is refused rather than trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file

IMAGE_SHAPE = (28, 28)


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


def check_split(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Refuse arrays whose shape or dtype breaks the image contract."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UserInputError(f"{source}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.dtype != np.uint8:
        raise UserInputError(
            f"{source}: labels must be uint8 ({len(images)},), got {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.max() > 9:
        raise UserInputError(f"{source}: label {int(labels.max())} is outside 0-9")


def load_split(root: Path, manifest: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a non-empty split named in a (preprocessed or dataset) manifest, verified."""
    files = manifest["splits"][split]["files"]
    images, labels = load_array(root, files["images"]), load_array(root, files["labels"])
    check_split(images, labels, str(root / split))
    if not len(images):
        raise UserInputError(f"{root / split}: the {split} split is empty")
    return images, labels
