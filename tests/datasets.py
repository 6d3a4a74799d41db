"""Small datasets made by the tests themselves, in every layout ingest reads: MNIST-shaped digits, and
colour images of named classes."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_IDX_NAMES = {
    "training": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "testing": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def digit_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct 28x28 uint8 images of the digit glyphs in Pillow's default font, jittered and noisy.

    Learnable like MNIST (shape, not position, tells the classes apart), tiny, and never two alike.
    """
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=18)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    images = (rng.random((len(labels), 28, 28)) * 40).astype(np.uint8)
    for index, label in enumerate(labels):
        glyph = Image.new("L", (28, 28))
        offset = rng.integers(-2, 3, size=2)
        ImageDraw.Draw(glyph).text((9 + offset[0], 3 + offset[1]), str(label), fill=255, font=font)
        images[index] = np.maximum(images[index], np.asarray(glyph))
    return images, labels


def small_splits(train_per_class: int = 6, test_per_class: int = 3, seed: int = 0) -> dict:
    train = digit_images(train_per_class, seed)
    test = digit_images(test_per_class, seed + 1000)
    return {"training": train, "testing": test}


def colour_images(
    classes: int, per_class: int, seed: int, size: int = 32, tint_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct size x size RGB uint8 images, noise tinted by class, and their labels 0 to classes - 1;
    the tints depend on `tint_seed` only, so splits drawn with other seeds share them."""
    labels = np.repeat(np.arange(classes, dtype=np.uint8), per_class)
    tints = np.random.default_rng(tint_seed).integers(0, 128, size=(classes, 3))
    noise = np.random.default_rng(seed).integers(0, 128, size=(len(labels), size, size, 3))
    return (noise + tints[labels, None, None, :]).astype(np.uint8), labels


def colour_splits(
    classes: int = 3, train_per_class: int = 10, test_per_class: int = 3, seed: int = 0, size: int = 32
) -> dict:
    return {
        "training": colour_images(classes, train_per_class, seed, size, tint_seed=seed),
        "testing": colour_images(classes, test_per_class, seed + 1000, size, tint_seed=seed),
    }


def png_bytes(image: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png_tree(
    root: Path, splits: dict, prefix: str = "mnist_png", classes: list[str] | None = None
) -> Path:
    """`<root>/<prefix>/<split>/<class>/<n>.png`, the class folder named `classes[label]` (default: the
    label), grayscale or RGB as the images are; returns the folder that holds `prefix`."""
    for split, (images, labels) in splits.items():
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = classes[label] if classes else str(label)
            path = root / prefix / split / folder / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(image, "L" if image.ndim == 2 else "RGB"))
    return root


def make_tarball(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return target


def write_idx(folder: Path, splits: dict) -> Path:
    """The four original-format IDX files (gzip) for `splits`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        images_name, labels_name = SPLIT_IDX_NAMES[split]
        header = struct.pack(">HBBIII", 0, 0x08, 3, len(images), 28, 28)
        (folder / images_name).write_bytes(gzip.compress(header + np.ascontiguousarray(images).tobytes()))
        header = struct.pack(">HBBI", 0, 0x08, 1, len(labels))
        (folder / labels_name).write_bytes(gzip.compress(header + labels.astype(np.uint8).tobytes()))
    return folder


def tar_with_member(target: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A .tar.gz holding one crafted member (for hostile-archive tests)."""
    with tarfile.open(target, "w:gz") as archive:
        archive.addfile(info, io.BytesIO(data) if data else None)
    return target
