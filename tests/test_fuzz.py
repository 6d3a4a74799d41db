"""The fuzz benchmark in small (benchmarks/fuzz.py): generated PNGs, tar archives and request bodies,
each in a bounded worker; plus the defects it found, pinned, and proof that its checks can fail."""

from __future__ import annotations

import io
import tarfile
import time

import numpy as np
import pytest

from benchmarks import fuzz
from mnist_mlops.archives import ArchiveError, FileEntry, read_tar
from tests import pngs

CI_INPUTS = 1_800
"""About ten seconds on two idle cores (a minute when the machine is busy); the benchmark runs 100,000."""


def test_generated_inputs_cause_no_crash_hang_mismatch_or_escape() -> None:
    tally = fuzz.fuzz(CI_INPUTS, seed_value=20261207)
    summary = tally.summary()
    failures = "\n".join(f"{target} {verdict}: {detail}" for target, verdict, detail, _ in tally.failures)
    assert summary["inputs"] == CI_INPUTS
    assert (summary["crashes"], summary["hangs"], summary["pixel_mismatches"], summary["escapes"]) == (
        0,
        0,
        0,
        0,
    ), failures
    for target, counts in summary["per_target"].items():  # both sides of every target were exercised
        assert counts.get("ok", 0) >= 20 and counts.get("refused", 0) >= 20, (target, counts)


def test_the_sandbox_bounds_time_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fuzz.CHECKS, "png", lambda case: time.sleep(case) or ("ok", ""))
    monkeypatch.setitem(fuzz.CHECKS, "tar", lambda case: bytearray(case) and ("ok", ""))
    sandbox = fuzz.Sandbox(time_limit=0.5, memory_bytes=256 << 20)
    try:
        assert sandbox.run("png", 5)[0] == "hang"
        assert sandbox.run("png", 0) == ("ok", "")  # a fresh worker replaced the one that hung
        verdict, detail = sandbox.run("tar", 1 << 30)
        assert verdict == "crash" and "MemoryError" in detail
        assert sandbox.run("tar", 1 << 20) == ("ok", "")
    finally:
        sandbox.close()


def test_the_checks_catch_a_wrong_decoder_and_an_escaping_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    case = fuzz.PngCase(pngs.encode_png(pixels, filters=4), (4, 5), pristine=True)
    assert fuzz.check_png(case) == ("ok", "")
    real = fuzz.decode_pngs

    def off_by_one(blobs, shape):
        batch = real(blobs, shape)
        batch.images[1:] += 1
        return batch

    monkeypatch.setattr(fuzz, "decode_pngs", off_by_one)
    assert fuzz.check_png(case)[0] == "pixel_mismatch"

    def naive_reader(path, max_bytes):
        with tarfile.open(path) as archive:  # follows names as written, and opens what a link names
            open("/etc/hostname", "rb").close()
            return [FileEntry(member.name, b"", 0.0) for member in archive.getmembers()]

    monkeypatch.setattr(fuzz, "iter_tar_gz", naive_reader)
    archive = _tar({"../outside.png": b"x"})
    verdict, detail = fuzz.check_tar(fuzz.TarCase(archive, None))
    assert verdict == "escape" and "/etc/hostname" in detail


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["", ".", "./", "././"])
def test_a_file_member_without_a_path_is_refused(name: str) -> None:
    """Found by the fuzzer: a regular file named "." was yielded with the empty path, the root itself."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ArchiveError, match="has no path; refused"):
        read_tar(raw.getvalue(), source="dot.tar")


@pytest.mark.parametrize("name", ["./C:", "./C:/x.png", ".//D:x"])
def test_a_drive_letter_behind_a_dot_is_refused(name: str) -> None:
    """Found by the fuzzer: "./C:" was checked for a drive letter before "./" was dropped, and came out
    as "C:", a drive-relative path on Windows."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ArchiveError, match="has an absolute path; refused"):
        read_tar(raw.getvalue(), source="drive.tar")


def test_the_root_folder_member_is_still_taken() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        folder = tarfile.TarInfo("./")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        info = tarfile.TarInfo("./mnist_png/a.png")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"a"))
    assert [entry.path for entry in read_tar(raw.getvalue())] == ["mnist_png/a.png"]
