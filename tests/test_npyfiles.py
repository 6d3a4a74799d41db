""".npy files written in pieces and read back by rows: the bytes of `np.save` however few bytes each
system call moves, blocks bounded in bytes, and no file left open when writing fails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops.npyfiles import NpyWriter, allocate_npy, gathered_rows, read_rows, reorder_rows, write_rows
from tests.processes import open_files

CALL_BYTES = 5
"""What each `pread`/`pwrite` moves under `short_calls`: as Linux does past 2 GiB, or a signal anywhere."""


@pytest.fixture
def short_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pread, os.pwrite
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: read(fd, min(size, CALL_BYTES), offset))
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: write(fd, data[:CALL_BYTES], offset))


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(100, 7, 5), dtype=np.uint8)


def saved(path: Path, array: np.ndarray) -> bytes:
    np.save(path, array)
    return path.read_bytes()


def test_rows_written_in_place_by_short_writes_are_all_there(tmp_path, rows, short_calls):
    target = tmp_path / "allocated.npy"
    offset = allocate_npy(target, rows.shape)
    row_bytes = rows[0].nbytes
    for start, stop in ((60, 100), (0, 30), (30, 60)):  # in any order, as the workers finish
        write_rows(target, offset + start * row_bytes, rows[start:stop])
    assert target.read_bytes() == saved(tmp_path / "saved.npy", rows)


def test_rows_gathered_by_short_reads_are_the_named_rows(tmp_path, rows, short_calls):
    np.save(tmp_path / "rows.npy", rows)
    order = np.random.default_rng(1).permutation(len(rows))
    order[10:40] = np.sort(order[10:40])  # a run of consecutive rows is one read
    assert np.array_equal(read_rows(tmp_path / "rows.npy", order[:17]), rows[order[:17]])
    assert read_rows(tmp_path / "rows.npy", order[:0]).shape == (0, 7, 5)
    reorder_rows(tmp_path / "rows.npy", order)
    assert (tmp_path / "rows.npy").read_bytes() == saved(tmp_path / "saved.npy", rows[order])


@pytest.mark.parametrize(("block_bytes", "block_rows"), [(1, 1), (100, 2), (35 * 100, 100), (1 << 30, 100)])
def test_blocks_are_sized_in_bytes_and_hold_at_least_one_row(tmp_path, rows, block_bytes, block_rows):
    np.save(tmp_path / "rows.npy", rows)  # 35 bytes a row
    blocks = list(gathered_rows(tmp_path / "rows.npy", np.arange(len(rows)), block_bytes=block_bytes))
    assert [len(block) for block in blocks[:-1]] == [block_rows] * (len(blocks) - 1)
    assert np.array_equal(np.concatenate(blocks), rows)


def test_a_file_shorter_than_its_header_says_is_refused(tmp_path, rows):
    np.save(tmp_path / "rows.npy", rows)
    with open(tmp_path / "rows.npy", "r+b") as handle:
        handle.truncate(handle.seek(0, os.SEEK_END) - 1)
    with pytest.raises(ValueError, match="ends before the rows"):
        read_rows(tmp_path / "rows.npy", [len(rows) - 1])


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through /proc")
def test_a_header_that_cannot_be_written_still_closes_the_file(tmp_path, rows):
    writer = NpyWriter(tmp_path / "rows.npy", (7, 5))
    writer.append(rows)
    writer.rows = 10**60  # a header longer than the one reserved
    with pytest.raises(ValueError, match=r"do not fit the reserved \.npy header"):
        writer.close()
    assert (tmp_path / "rows.npy").resolve() not in open_files()
