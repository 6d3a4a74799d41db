""".npy files written and re-ordered a block of rows at a time, byte-identical to `np.save`.

A dataset larger than memory is never held whole: rows are appended after a reserved header that is
written last, with the final row count (numpy keeps spare room in the header for the first axis to
grow, so its length does not depend on the count). Rows are re-ordered with `os.pread` rather than
through `np.memmap`, whose mapped pages would count in the process's resident memory like a copy.
Every `pread` and `pwrite` is repeated until all its bytes are moved: one call moves at most about
2 GiB on Linux, and fewer when a signal interrupts it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing

from mnist_mlops.atomic import REORDERING

GATHER_BYTES = 64 << 20
"""Bytes of rows gathered per block (64 MiB, about 85,000 MNIST rows): enough that the per-block overhead
is negligible, whatever the row size, and a bounded amount of memory."""


def _npy_header(shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> bytes:
    """The header `np.save` writes for a C-ordered array of `shape` and `dtype`."""
    header = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(header, fields)
    return header.getvalue()


class NpyWriter:
    """Appends rows of one shape and dtype to a .npy file; `close` writes the header for the rows given.

    Until then the file is not a valid array (the header slot is zeros), so callers write into a
    staging folder that is discarded on failure.
    """

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.typing.DTypeLike = np.uint8) -> None:
        self.path = Path(path)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._header_size = len(_npy_header((0, *self.row_shape), self.dtype))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close(), which writes the header
        try:
            self._file.write(bytes(self._header_size))
        except BaseException:
            self._file.close()
            raise

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(
                f"rows of {rows.shape[1:]} {rows.dtype}, the file holds {self.row_shape} {self.dtype}"
            )
        self._file.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def close(self) -> None:
        """Write the header for the rows appended; the file is closed even when that fails."""
        try:
            header = _npy_header((self.rows, *self.row_shape), self.dtype)
            if len(header) != self._header_size:  # only past 10**21 rows
                raise ValueError(f"{self.path}: {self.rows} rows do not fit the reserved .npy header")
            self._file.seek(0)
            self._file.write(header)
        finally:
            self._file.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def abandon(self) -> None:
        """Close the file without a header (the caller removes it)."""
        self._file.close()


def allocate_npy(path: Path, shape: tuple[int, ...], dtype: np.typing.DTypeLike = np.uint8) -> int:
    """Create the .npy file for an array of `shape`, header written and data zero, for rows to be
    written in place with `write_rows` (by several processes at once); returns the byte offset of the
    first row."""
    header = _npy_header(shape, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + math.prod(shape) * np.dtype(dtype).itemsize)
    return len(header)


def write_rows(path: Path, offset: int, rows: np.ndarray) -> None:
    """Write `rows` into the file at `path` from byte `offset`, every byte: a short write left alone
    would leave zeros from `allocate_npy` that the file's sha256 would then vouch for."""
    data = memoryview(np.ascontiguousarray(rows).reshape(-1).view(np.uint8))
    with open(path, "r+b") as handle:
        while data:
            written = os.pwrite(handle.fileno(), data, offset)
            if written == 0:
                raise OSError(f"{path}: no byte written at offset {offset}")
            data, offset = data[written:], offset + written


def read_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """The rows `rows` names of the .npy array at `path`, in that order, as one array (the caller
    bounds how many)."""
    with open(path, "rb") as handle:
        return _RowLayout.read(handle, path).gather(handle.fileno(), rows)


def gathered_rows(path: Path, order: np.ndarray, *, block_bytes: int = GATHER_BYTES) -> Iterator[np.ndarray]:
    """The rows `order` names of the .npy array at `path`, in that order, about `block_bytes` at a time
    (at least one row)."""
    with open(path, "rb") as handle:
        layout = _RowLayout.read(handle, path)
        block = max(1, block_bytes // max(layout.row_bytes, 1))
        for start in range(0, len(order), block):
            yield layout.gather(handle.fileno(), order[start : start + block])


def reorder_rows(path: Path, order: np.ndarray) -> None:
    """Rewrite the .npy array at `path` with its rows in `order` (a permutation), in bounded memory."""
    path = Path(path)
    staged = path.with_name(f".{path.name}{REORDERING}")
    with open(path, "rb") as handle:
        shape, _, dtype = _read_header(handle, path)
    try:
        with NpyWriter(staged, tuple(shape[1:]), dtype) as writer:
            for rows in gathered_rows(path, order):
                writer.append(rows)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _RowLayout:
    """Where the rows of an open C-ordered .npy file are."""

    path: Path
    count: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # of the first row

    @classmethod
    def read(cls, handle: BinaryIO, path: Path) -> _RowLayout:
        shape, fortran_order, dtype = _read_header(handle, path)
        if fortran_order:
            raise ValueError(f"{path}: a Fortran-ordered array cannot be gathered by rows")
        return cls(path, shape[0], tuple(shape[1:]), dtype, handle.tell())

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    def gather(self, descriptor: int, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` names, in that order; each run of consecutive rows is one read, so an order
        that is mostly ascending costs few system calls."""
        rows = np.asarray(rows, dtype=np.int64)
        gathered = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if not len(rows):
            return gathered
        if rows.min() < 0 or rows.max() >= self.count:
            raise IndexError(f"{self.path}: row index out of range for {self.count} rows")
        target = memoryview(gathered.reshape(-1).view(np.uint8))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        stops = np.concatenate([breaks, [len(rows)]]).tolist()
        for first, stop in zip(starts, stops, strict=True):
            self._read_into(
                descriptor,
                target[first * self.row_bytes : stop * self.row_bytes],
                self.offset + int(rows[first]) * self.row_bytes,
            )
        return gathered

    def _read_into(self, descriptor: int, target: memoryview, offset: int) -> None:
        """Fill `target` with the file's bytes from `offset`, however few each `pread` returns."""
        while target:
            data = os.pread(descriptor, len(target), offset)
            if not data:
                raise ValueError(f"{self.path}: the file ends before the rows its .npy header promises")
            target[: len(data)] = data
            target, offset = target[len(data) :], offset + len(data)


def _read_header(handle: BinaryIO, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open .npy file, left positioned at its first data byte."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"{path}: .npy format version {version} is not supported here")
