"""Content hashes: the identity of files, images and datasets (never their paths)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> list[str]:
    """`sha256_file` of each path, hashed side by side on threads (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(len(paths), 1)) as pool:
        return list(pool.map(sha256_file, paths))


def content_sha256(path: Path) -> str:
    """A file's bytes, or a folder's files with their relative paths, as one SHA-256."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode() + b"\0" + sha256_file(child).encode())
    return digest.hexdigest()


def files_sha256(files: dict[str, Path]) -> str:
    """One SHA-256 over files by their relative paths (path, size and bytes each), in path order, so
    the same files give the same digest on any machine and in any folder."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        data = Path(files[relative]).read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def image_digests(images: np.ndarray) -> np.ndarray:
    """sha256 of each image's pixels, as a (N, 32) uint8 array."""
    flat = np.ascontiguousarray(images).reshape(len(images), int(np.prod(images.shape[1:])))
    if not flat.size:
        return np.zeros((len(images), 32), dtype=np.uint8)
    view, size, sha256 = memoryview(flat).cast("B"), flat.shape[1], hashlib.sha256
    joined = b"".join([sha256(view[start : start + size]).digest() for start in range(0, len(view), size)])
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(images), 32).copy()


def labelled_set_digest(digests: np.ndarray, labels: np.ndarray) -> hashlib._Hash:
    """Order-independent hash of (image, label) pairs: the same images in any order hash the same."""
    rows = np.concatenate([digests, labels.astype(np.uint8).reshape(-1, 1)], axis=1)
    keyed = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    return hashlib.sha256(np.sort(keyed).tobytes())
