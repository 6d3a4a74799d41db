"""The streaming ingest path is a faster way to the same bytes: parity with the in-memory path, and
every refusal of the whole-archive reader kept when the archive is read a window at a time."""

from __future__ import annotations

import gzip
import io
import os
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import archives
from mnist_mlops.archives import ArchiveError, iter_tar_gz, read_tar
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.ingest.layouts import LoadedDataset, load_layout
from mnist_mlops.components.ingest.streaming import stream_png_folders
from mnist_mlops.npyfiles import NpyWriter, reorder_rows
from mnist_mlops.sources import iter_files, read_files
from tests.datasets import png_bytes, small_splits, write_png_tree

LONG_FOLDER = "a_class_folder_name_long_enough_that_the_member_path_needs_more_than_the_ustar_hundred_bytes"


def _tarball(target: Path, members: list[tuple[str, bytes]], tar_format: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(target, "w:gz", format=tar_format) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000 + len(name)
            archive.addfile(info, io.BytesIO(data))
    return target


def _members(*, odd_shape: bool = False) -> list[tuple[str, bytes]]:
    """mnist_png members with an invalid PNG, a duplicated image, a non-image file and (optionally) an
    image of another shape; paths sorted."""
    members = []
    for split, (images, labels) in small_splits().items():
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            members.append((f"mnist_png/{split}/{label}/{index:03d}.png", png_bytes(image)))
    images, _ = small_splits()["training"]
    members += [
        ("mnist_png/training/3/broken.png", png_bytes(images[0])[:60]),
        ("mnist_png/training/4/copy.png", png_bytes(images[1])),
        ("mnist_png/testing/5/notes.txt", b"not an image"),
        ("mnist_png/README", b"ignored"),
    ]
    if odd_shape:
        members.append(("mnist_png/training/6/big.png", png_bytes(np.zeros((30, 30), dtype=np.uint8))))
    return sorted(members)


def _staged_files(stage: Path) -> dict[str, bytes]:
    return {path.relative_to(stage).as_posix(): path.read_bytes() for path in sorted(stage.rglob("*.npy"))}


def _both_ways(
    tmp_path: Path, tarball: Path, *, workers: int | None = None, classes: list[str] | None = None
) -> tuple:
    streamed_stage, memory_stage = tmp_path / "streamed", tmp_path / "memory"
    streamed_stage.mkdir(parents=True)
    memory_stage.mkdir(parents=True)
    streamed = stream_png_folders(
        iter_tar_gz(tarball), streamed_stage, classes=classes, batch_images=5, workers=workers
    )
    memory = load_layout(read_files(tarball), str(tarball), memory_stage, classes=classes)
    return streamed, memory, _staged_files(streamed_stage), _staged_files(memory_stage)


def _assert_same(streamed: LoadedDataset | None, memory: LoadedDataset) -> None:
    """Everything `run_ingest` reads of a loaded dataset, but the staged files, is the same both ways."""
    assert streamed is not None
    for field in (
        "format",
        "image_shape",
        "classes",
        "invalid",
        "odd_shapes",
        "candidates",
        "ignored_files",
        "newest_mtime",
        "source_files",
    ):
        assert getattr(streamed, field) == getattr(memory, field), field
    for split in ("training", "testing"):
        ours, theirs = streamed.splits[split], memory.splits[split]
        assert ours.files == theirs.files
        assert (ours.labels == theirs.labels).all() and (ours.digests == theirs.digests).all()
        assert (ours.class_histograms == theirs.class_histograms).all()
        assert (ours.converted, ours.resized) == (theirs.converted, theirs.resized)


@pytest.mark.parametrize("order", ["sorted", "shuffled", "reversed"])
@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_outputs_are_byte_identical_to_the_in_memory_ones(tmp_path, order, workers):
    members = _members()
    if order == "shuffled":
        random.Random(7).shuffle(members)
    elif order == "reversed":
        members.reverse()
    tarball = _tarball(tmp_path / "source.tar.gz", members)
    streamed, memory, streamed_files, memory_files = _both_ways(tmp_path, tarball, workers=workers)
    _assert_same(streamed, memory)
    assert streamed_files == memory_files
    assert set(streamed_files) == {
        f"{split}/{name}.npy" for split in ("training", "testing") for name in ("images", "labels", "digests")
    }
    assert [item["path"] for item in streamed.invalid] == [
        "mnist_png/training/3/broken.png",
        "mnist_png/testing/5/notes.txt",
    ]


@pytest.mark.parametrize("variant", ["declared classes", "no testing folder", "duplicate member paths"])
def test_streamed_outputs_are_byte_identical_to_the_in_memory_ones_also_with(tmp_path, variant):
    members, classes = _members(), None
    if variant == "declared classes":
        classes = [str(label) for label in range(10, -1, -1)]  # another order, and a class with no images
    elif variant == "no testing folder":
        members = [member for member in members if "/testing/" not in member[0]]
    else:  # tar keeps both members of one path, and so does either way, in archive order
        path, _ = members[5]
        members.insert(6, (path, png_bytes(small_splits()["training"][0][-1])))
    tarball = _tarball(tmp_path / "source.tar.gz", members)
    streamed, memory, streamed_files, memory_files = _both_ways(tmp_path, tarball, workers=2, classes=classes)
    _assert_same(streamed, memory)
    assert streamed_files == memory_files
    if variant == "duplicate member paths":
        assert members[5][0].startswith("mnist_png/testing/")
        assert len(memory.splits["testing"].labels) == len(small_splits()["testing"][1]) + 1


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
def test_an_undecodable_file_name_goes_the_in_memory_way(tmp_path):
    source = write_png_tree(tmp_path / "source", small_splits())
    undecodable = os.fsdecode(os.fsencode(source / "mnist_png" / "training" / "3") + b"/\xff.png")
    Path(undecodable).write_bytes(png_bytes(small_splits()["training"][0][-1]))
    stage = tmp_path / "stage"
    stage.mkdir()
    assert stream_png_folders(iter_files(source), stage, workers=2) is None
    assert not any(stage.iterdir())
    manifest = run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    assert manifest["splits"]["training"]["count"] == len(small_splits()["training"][1]) + 1


def test_long_member_names_pax_and_gnu_stream_like_the_whole_archive(tmp_path):
    image = png_bytes(small_splits()["training"][0][0])
    members = [
        (f"mnist_png/{split}/{LONG_FOLDER}{digit}/{index}.png", image)
        for split in ("training", "testing")
        for digit in (0, 1)
        for index in range(2)
    ]
    for tar_format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        tarball = _tarball(tmp_path / f"long-{tar_format}.tar.gz", members, tar_format)
        streamed, memory, streamed_files, memory_files = _both_ways(tmp_path / str(tar_format), tarball)
        assert streamed is not None and streamed.classes == memory.classes
        assert streamed_files == memory_files


def test_a_source_of_mixed_shapes_goes_the_in_memory_way_leaving_nothing_staged(tmp_path):
    tarball = _tarball(tmp_path / "mixed.tar.gz", _members(odd_shape=True))
    stage = tmp_path / "stage"
    stage.mkdir()
    assert stream_png_folders(iter_tar_gz(tarball), stage, batch_images=5, workers=2) is None
    assert not any(stage.iterdir())


@pytest.fixture
def small_windows(monkeypatch):
    """Inflate 64 compressed bytes at a time and walk ~600-byte windows: window ends fall everywhere,
    inside headers, member data and padding."""
    monkeypatch.setattr(archives, "_READ_BYTES", 64)
    monkeypatch.setattr(archives, "WINDOW_BYTES", 600)


def test_a_refusal_mid_stream_stops_the_workers_and_leaves_nothing_staged(tmp_path):
    members = [*_members(), ("mnist_png/training/9/zz-link.png", b"")]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name.endswith("zz-link.png"):
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info, io.BytesIO(data))
    tarball = tmp_path / "late-link.tar.gz"
    tarball.write_bytes(gzip.compress(raw.getvalue()))
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(ArchiveError, match="symbolic link"):
        stream_png_folders(iter_tar_gz(tarball), stage, batch_images=5, workers=2)
    assert not any(stage.iterdir())


def test_reading_in_small_windows_gives_the_same_entries_as_the_whole_archive(tmp_path, small_windows):
    noise = random.Random(0)  # incompressible: a few compressed bytes are a few inflated bytes
    members = [
        (f"mnist_png/training/{LONG_FOLDER}/{index}.png", noise.randbytes(100 + 300 * index))
        for index in range(20)
    ]
    tarball = _tarball(tmp_path / "windows.tar.gz", members)
    whole = read_tar(gzip.decompress(tarball.read_bytes()))
    assert list(iter_tar_gz(tarball)) == whole
    assert [entry.path for entry in whole] == [name for name, _ in members]


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("mnist_png/../../escape.png", tarfile.REGTYPE, "escapes the archive root"),
        ("mnist_png/training/1/link.png", tarfile.SYMTYPE, "symbolic link"),
        ("mnist_png/fifo", tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_hostile_members_after_many_windows_are_still_refused(tmp_path, small_windows, name, kind, message):
    noise = random.Random(1)
    members = [(f"mnist_png/training/1/{index}.png", noise.randbytes(600)) for index in range(10)]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for member_name, data in members:
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        archive.addfile(info)
    tarball = tmp_path / "late.tar.gz"
    tarball.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(ArchiveError, match=message):
        list(iter_tar_gz(tarball))


def test_truncation_corruption_and_bombs_are_refused_mid_stream(tmp_path, small_windows):
    noise = random.Random(2)
    members = [(f"mnist_png/training/1/{index}.png", noise.randbytes(768)) for index in range(10)]
    raw = gzip.decompress(_tarball(tmp_path / "whole.tar.gz", members).read_bytes())
    corrupt = 5 * (512 + 1024) + 5  # in the name field of the sixth header, a few windows in
    cases = {
        "cut-tar": (raw[: len(raw) // 2 + 100], "runs past the end|truncated"),
        "bad-checksum": (raw[:corrupt] + b"X" + raw[corrupt + 1 :], "bad tar header checksum"),
    }
    for name, (tar_bytes, message) in cases.items():
        (tmp_path / f"{name}.tar.gz").write_bytes(gzip.compress(tar_bytes))
        with pytest.raises(ArchiveError, match=message):
            list(iter_tar_gz(tmp_path / f"{name}.tar.gz"))
    whole = gzip.compress(raw)
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) - 20])
    with pytest.raises(ArchiveError, match="truncated gzip"):
        list(iter_tar_gz(tmp_path / "cut.tar.gz"))
    bomb = tmp_path / "bomb.tar.gz"  # the cap is a running total, also past the end-of-archive marker
    bomb.write_bytes(gzip.compress(raw + bytes(1 << 20)))
    with pytest.raises(ArchiveError, match="decompression bomb"):
        list(iter_tar_gz(bomb, max_bytes=len(raw) + 4096))


def test_npy_writer_and_reorder_match_numpy_byte_for_byte(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, size=(1000, 7, 5), dtype=np.uint8)
    with NpyWriter(tmp_path / "written.npy", (7, 5)) as writer:
        for start in range(0, len(rows), 300):
            writer.append(rows[start : start + 300])
    np.save(tmp_path / "saved.npy", rows)
    assert (tmp_path / "written.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    order = np.random.default_rng(1).permutation(len(rows))
    order[100:400] = np.sort(order[100:400])  # runs of consecutive rows are read in one go
    reorder_rows(tmp_path / "written.npy", order)
    np.save(tmp_path / "saved.npy", rows[order])
    assert (tmp_path / "written.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    with NpyWriter(tmp_path / "empty.npy", (7, 5)):
        pass
    np.save(tmp_path / "saved.npy", rows[:0])
    assert (tmp_path / "empty.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
