""".npy files written and re-ordered a block of rows at a time, byte-identical to `np.save`.

A dataset larger than memory is never held whole: rows are appended after a reserved header that is
written last, with the final row count (numpy keeps spare room in the header for the first axis to
grow, so its length does not depend on the count). Rows are re-ordered with `os.pread` rather than
through `np.memmap`, whose mapped pages would count in the process's resident memory like a copy.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing

GATHER_ROWS = 65_536
"""Rows gathered per block: a few MB of images, enough that the per-block overhead is negligible."""


def npy_header(shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> bytes:
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
        self._header_size = len(npy_header((0, *self.row_shape), self.dtype))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close(), which writes the header
        self._file.write(bytes(self._header_size))

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(
                f"rows of {rows.shape[1:]} {rows.dtype}, the file holds {self.row_shape} {self.dtype}"
            )
        self._file.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def close(self) -> None:
        header = npy_header((self.rows, *self.row_shape), self.dtype)
        if len(header) != self._header_size:  # only past 10**21 rows
            raise ValueError(f"{self.path}: {self.rows} rows do not fit the reserved .npy header")
        self._file.seek(0)
        self._file.write(header)
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
    written in place (by several processes at once); returns the byte offset of the first row."""
    header = npy_header(shape, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + math.prod(shape) * np.dtype(dtype).itemsize)
    return len(header)


def gathered_rows(path: Path, order: np.ndarray, *, block: int = GATHER_ROWS) -> Iterator[np.ndarray]:
    """The rows `order` names of the .npy array at `path`, in that order, `block` rows at a time.

    Runs of consecutive rows are read with one `pread` each, so an order that is mostly ascending costs
    few system calls.
    """
    with open(path, "rb") as handle:
        shape, fortran_order, dtype = _read_header(handle, path)
        if fortran_order:
            raise ValueError(f"{path}: a Fortran-ordered array cannot be gathered by rows")
        offset = handle.tell()
        row_shape = tuple(shape[1:])
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        descriptor = handle.fileno()
        for start in range(0, len(order), block):
            rows = np.asarray(order[start : start + block], dtype=np.int64)
            if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
                raise IndexError(f"{path}: row index out of range for {shape[0]} rows")
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            run_starts = np.concatenate([[0], breaks]).tolist()
            run_stops = np.concatenate([breaks, [len(rows)]]).tolist()
            pieces = [
                os.pread(descriptor, (stop - first) * row_bytes, offset + int(rows[first]) * row_bytes)
                for first, stop in zip(run_starts, run_stops, strict=True)
            ]
            yield np.frombuffer(b"".join(pieces), dtype=dtype).reshape(len(rows), *row_shape)


def reorder_rows(path: Path, order: np.ndarray) -> None:
    """Rewrite the .npy array at `path` with its rows in `order` (a permutation), in bounded memory."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.reordered")
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


def _read_header(handle: BinaryIO, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open .npy file, left positioned at its first data byte."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"{path}: .npy format version {version} is not supported here")
