"""Hostile and broken input: refused or listed, never decoded blindly, never written outside the output."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.archives import ArchiveError, gunzip
from mnist_mlops.components.ingest.executor import DataValidationError, run_ingest
from mnist_mlops.errors import UserInputError
from mnist_mlops.sources import SourceError
from tests.datasets import make_tarball, png_bytes, tar_with_member


def run(tmp_path: Path, source: Path, **options) -> dict:
    out = tmp_path / "out"
    run_ingest(str(source), out / "dataset", out / "data_report.json", **options)
    return contracts.read_json(out / "data_report.json", "data_report")


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize(
    ("info", "data", "message"),
    [
        (_member("/etc/passwd", size=4), b"evil", "absolute path"),
        (_member("mnist_png/../../escape.png", size=4), b"evil", r"escapes the archive root"),
        (_member("mnist_png/training/1/link.png", tarfile.SYMTYPE, link="/etc/passwd"), b"", "symbolic link"),
        (_member("mnist_png/training/1/hard.png", tarfile.LNKTYPE, link="x"), b"", "hard link"),
        (_member("mnist_png/dev", tarfile.CHRTYPE), b"", "character device"),
        (_member("mnist_png/blk", tarfile.BLKTYPE), b"", "block device"),
        (_member("mnist_png/fifo", tarfile.FIFOTYPE), b"", "FIFO"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "chardev", "blockdev", "fifo"],
)
def test_hostile_tar_members_are_refused(tmp_path, info, data, message):
    archive = tar_with_member(tmp_path / "evil.tar.gz", info, data)
    with pytest.raises(ArchiveError, match=message):
        run(tmp_path, archive)
    assert_nothing_written(tmp_path)
    assert not (tmp_path.parent / "escape.png").exists()


def test_truncated_and_corrupt_archives_are_refused(tmp_path, png_dataset):
    whole = make_tarball(png_dataset, tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="truncated gzip"):
        run(tmp_path, tmp_path / "cut.tar.gz")
    raw = zlib.decompressobj(31).decompress(whole)
    for name, tar_bytes, message in [
        ("cut-tar", raw[: len(raw) // 2 + 100], "truncated|runs past the end"),
        ("garbage", b"\x01" * 2048, "bad tar header checksum"),
    ]:
        (tmp_path / f"{name}.tar.gz").write_bytes(gzip.compress(tar_bytes))
        with pytest.raises(ArchiveError, match=message):
            run(tmp_path, tmp_path / f"{name}.tar.gz")
    assert_nothing_written(tmp_path)


def test_gzip_bomb_is_stopped_at_the_limit():
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(ArchiveError, match="decompression bomb"):
        gunzip(bomb, max_bytes=1 << 20, source="bomb.tar.gz")


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A grayscale PNG declaring width x height pixels of zeros: ~100 KB that inflates to 100 MB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.fixture
def broken_dataset(png_dataset: Path) -> Path:
    """The small dataset plus one file of each broken kind in training/3 (an image of another size is
    not broken: test_image_folders.py shows what becomes of it)."""
    folder = png_dataset / "mnist_png" / "training" / "3"
    good = next(folder.iterdir()).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "not-a-png.png").write_bytes(b"GIF89a this is not a png")
    (folder / "bomb.png").write_bytes(png_bomb())
    return png_dataset


BROKEN_REASONS = {
    "truncated.png": "truncat",
    "not-a-png.png": "not a PNG",
    "bomb.png": "declares 10000x10000 pixels, more than the 16777216 an image may have (not decoded)",
}


def test_invalid_images_fail_by_default_naming_the_files(tmp_path, broken_dataset):
    with pytest.raises(DataValidationError, match="invalid_files") as error:
        run(tmp_path, broken_dataset)
    assert "bomb.png" in str(error.value) or "truncated.png" in str(error.value)
    assert_nothing_written(tmp_path)


def test_invalid_images_are_listed_and_skipped_within_the_allowed_fraction(tmp_path, broken_dataset):
    report = run(tmp_path, broken_dataset, on_invalid="skip", max_invalid_fraction=0.1)
    listed = {Path(item["path"]).name: item["reason"] for item in report["invalid_files"]}
    for name, reason in BROKEN_REASONS.items():
        assert reason in listed[name], (name, listed[name])
    assert report["invalid_count"] == 3
    assert report["splits"]["training"]["count"] == 60
    check = next(item for item in report["checks"] if item["name"] == "invalid_files")
    assert check["outcome"] == "warn"


def test_too_many_invalid_images_fail_even_when_skipping(tmp_path, broken_dataset):
    with pytest.raises(DataValidationError, match="more than"):
        run(tmp_path, broken_dataset, on_invalid="skip", max_invalid_fraction=0.01)
    assert_nothing_written(tmp_path)


def test_colour_images_among_grayscale_fail_by_default_and_are_converted_and_counted_on_request(
    tmp_path, png_dataset
):
    folder = png_dataset / "mnist_png" / "testing" / "5"
    image = np.zeros((28, 28), np.uint8)
    image[10:20, 10:20] = 255
    (folder / "rgb.png").write_bytes(png_bytes(image, "RGB"))
    (folder / "rgba.png").write_bytes(png_bytes(image, "RGBA"))
    with pytest.raises(
        DataValidationError, match=r"2 images of another shape than most, 28x28 grayscale"
    ) as error:
        run(tmp_path, png_dataset)
    assert "testing/5/rgb.png (28x28x3)" in str(error.value)
    assert_nothing_written(tmp_path)
    report = run(tmp_path, png_dataset, on_mixed_shape="resize")
    assert report["splits"]["testing"]["converted"] == 2 and report["splits"]["testing"]["resized"] == 0
    images = np.load(tmp_path / "out" / "dataset" / "testing" / "images.npy")
    assert images.shape[1:] == (28, 28) and any((candidate == image).all() for candidate in images)


def test_a_class_folder_only_training_has_fails_naming_the_class(tmp_path, png_dataset):
    folder = png_dataset / "mnist_png" / "training" / "eleven"
    folder.mkdir()
    (folder / "0.png").write_bytes(png_bytes(np.zeros((28, 28), np.uint8)))
    with pytest.raises(DataValidationError, match="testing has no images of class 'eleven'"):
        run(tmp_path, png_dataset)
    assert_nothing_written(tmp_path)


def test_symbolic_links_in_folders_are_refused(tmp_path, png_dataset):
    os.symlink("/etc/passwd", png_dataset / "mnist_png" / "training" / "1" / "passwd.png")
    with pytest.raises(SourceError, match="symbolic link"):
        run(tmp_path, png_dataset)
    assert_nothing_written(tmp_path)


def test_output_that_exists_is_not_overwritten(tmp_path, png_dataset):
    (tmp_path / "out" / "dataset").mkdir(parents=True)
    (tmp_path / "out" / "dataset" / "keep.txt").write_text("precious")
    with pytest.raises(UserInputError, match="already exists"):
        run(tmp_path, png_dataset)
    assert (tmp_path / "out" / "dataset" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("pax", "message"),
    [
        ({"size": "-1536"}, "not a non-negative integer"),
        ({"mtime": "abc"}, "mtime='abc' is not a number"),
        ({"mtime": "inf"}, "impossible modification time"),
    ],
)
def test_malformed_pax_headers_are_refused(tmp_path, pax, message):
    info = _member("mnist_png/training/1/0.png", size=3)
    info.pax_headers = pax
    target = tmp_path / "pax.tar"
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "pax.tar.gz").write_bytes(gzip.compress(target.read_bytes()))
    with pytest.raises(ArchiveError, match=message):
        run(tmp_path, tmp_path / "pax.tar.gz")


def test_duplicate_idx_files_are_refused(tmp_path):
    from tests.datasets import small_splits, write_idx

    write_idx(tmp_path / "a", small_splits())
    write_idx(tmp_path / "a" / "copy", small_splits())
    with pytest.raises(UserInputError, match=r"copy/t10k-images-idx3-ubyte.gz are both"):
        run(tmp_path, tmp_path / "a")
