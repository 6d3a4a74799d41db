"""The tar reader's plain-run parser (numpy, a window at a time) against its member-by-member walk:
for any archive, the same files in the same order, or the same refusal word for word."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import fuzz
from mnist_mlops import archives
from mnist_mlops.archives import ArchiveError, iter_tar_gz, read_tar


def _outcome(read, *args, **kwargs) -> tuple[str, object]:
    try:
        return "files", read(*args, **kwargs)
    except ArchiveError as error:
        return "refused", str(error)


def _both_ways(monkeypatch: pytest.MonkeyPatch, read, *args, **kwargs) -> tuple[tuple, tuple]:
    """`read(...)` as shipped, then with the plain run finding nothing (the walk alone)."""
    with_run = _outcome(read, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(archives._TarWalker, "_plain_run", lambda self, buf: ([], 0))
        walk_only = _outcome(read, *args, **kwargs)
    return with_run, walk_only


def _tar(names: list[str], *, data: bytes = b"png", layout: int = tarfile.GNU_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=layout) as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size, info.mtime = len(data), 1_577_836_800
                archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fuzz.tar_cases())
def test_any_generated_archive_reads_the_same_either_way(case: fuzz.TarCase) -> None:
    """Hostile and ordinary members, damaged headers, sizes, types and truncations (the fuzzer's)."""
    if case.tar is None:
        return
    monkeypatch = pytest.MonkeyPatch()
    try:
        with_run, walk_only = _both_ways(monkeypatch, read_tar, case.tar, source="case.tar")
    finally:
        monkeypatch.undo()
    assert with_run == walk_only


@pytest.mark.parametrize(
    "names",
    [
        ["mnist_png/", "mnist_png/training/", "mnist_png/training/7/", "mnist_png/training/7/1.png"],
        ["./", "./mnist_png/", "./mnist_png/a.png", "./mnist_png/b.png/"],
        ["mnist_png/a.png", "./.hidden/a.png", "mnist_png/b.png"],
        ["mnist_png/a.png", "mnist_png/../../etc/passwd", "mnist_png/b.png"],
        ["mnist_png/a.png", "/etc/passwd"],
        ["mnist_png/a.png", "C:x.png"],
        ["mnist_png/a.png", "./D:/x.png"],
        ["mnist_png/a.png", "a\\b.png"],
        ["mnist_png/a.png", "a//b.png"],
        ["mnist_png/a.png", "."],
        ["", "mnist_png/a.png"],
        ["mnist_png/a.png", "", "mnist_png/b.png"],
        ["mnist_png/é.png", "mnist_png/c.png"],
    ],
)
@pytest.mark.parametrize("layout", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_names_read_the_same_either_way(
    names: list[str], layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = _tar(names, layout=layout)
    with_run, walk_only = _both_ways(monkeypatch, read_tar, tar)
    assert with_run == walk_only


@pytest.mark.parametrize("layout", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_read_the_same_either_way(layout: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GNU long-name member or a pax record in the middle of plain members."""
    names = ["mnist_png/a.png", "mnist_png/" + "n" * 120 + ".png", "mnist_png/c.png"]
    with_run, walk_only = _both_ways(monkeypatch, read_tar, _tar(names, layout=layout))
    assert with_run == walk_only == ("files", with_run[1])
    assert [entry.path for entry in with_run[1]] == names


@pytest.mark.parametrize("layout", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("long_name", ["mnist_png/" + "n" * 120 + ".png", "mnist_png/é.png"])
@pytest.mark.parametrize("empty_name", [False, True])
def test_every_cut_in_two_windows_reads_the_same_either_way(
    layout: int, long_name: str, empty_name: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a window ends with (a long-name or pax record whose member starts the next window, a
    member with an empty name starting it), the archive cut anywhere in two windows reads as whole."""
    names = ["mnist_png/a.png", long_name, *([""] if empty_name else []), "mnist_png/b.png"]
    tar = _tar(names, layout=layout)
    whole = _outcome(read_tar, tar, source="cut.tar")
    assert whole[0] == "refused" if empty_name else [entry.path for entry in whole[1]] == names
    monkeypatch.setattr(archives, "WINDOW_BYTES", 1)  # every inflated piece is walked as it comes
    for cut in range(0, len(tar), 64):
        monkeypatch.setattr(archives, "_inflate", lambda *_, cut=cut: iter([tar[:cut], tar[cut:]]))
        with_run, walk_only = _both_ways(monkeypatch, lambda path: list(iter_tar_gz(path)), Path("cut.tar"))
        assert with_run == walk_only == whole, cut


def test_a_name_that_is_not_utf8_reads_the_same_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    tar = bytearray(_tar(["mnist_png/a.png", "mnist_png/b.png", "mnist_png/c.png"]))
    tar[1024 + len("mnist_png/")] = 0xFF  # the second member's name
    fuzz._fix_header_checksum(tar, 2)
    with_run, walk_only = _both_ways(monkeypatch, read_tar, bytes(tar))
    assert (
        with_run
        == walk_only
        == ("refused", "archive: member name 'mnist_png/\ufffd.png' is not UTF-8; refused")
    )


def test_a_header_lookalike_inside_a_file_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member whose data holds a whole tar header: the plain run must not take it for the next member."""
    inner = _tar(["mnist_png/fake.png"])[:512]
    tar = _tar(["mnist_png/a.png", "mnist_png/holds-a-header.bin", "mnist_png/b.png"], data=inner * 3)
    with_run, walk_only = _both_ways(monkeypatch, read_tar, tar)
    assert with_run == walk_only
    assert [entry.path for entry in with_run[1]] == [
        "mnist_png/a.png",
        "mnist_png/holds-a-header.bin",
        "mnist_png/b.png",
    ]


@pytest.mark.parametrize("window", [512, 1536, 4096, 1 << 20])
@pytest.mark.parametrize("cut", [None, 700, 3000])
def test_windows_and_truncation_read_the_same_either_way(
    window: int, cut: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members cut by a window's end are walked whole with the next window, by either path."""
    names = [f"mnist_png/training/{digit}/{index}.png" for index in range(30) for digit in range(3)]
    tar = _tar(names, data=bytes(range(256)) * 3)
    source = tmp_path / "mnist.tar.gz"
    source.write_bytes(gzip.compress(tar[:cut] if cut else tar, mtime=0))
    monkeypatch.setattr(archives, "WINDOW_BYTES", window)
    with_run, walk_only = _both_ways(monkeypatch, lambda path: list(iter_tar_gz(path)), source)
    assert with_run == walk_only
    if cut is None:
        assert [entry.path for entry in with_run[1]] == names


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_mnist_like_archives_with_one_damage_read_the_same_either_way(data: st.DataObject) -> None:
    """Many plain members (the case the plain run is for) with one header field damaged anywhere."""
    count = data.draw(st.integers(1, 40))
    tar = bytearray(_tar([f"mnist_png/training/{index % 10}/{index}.png" for index in range(count)]))
    block = data.draw(st.integers(0, 2 * count - 1))
    position = block * 512 + data.draw(
        st.sampled_from([0, 50, 99, 100, 124, 130, 135, 136, 147, 148, 156, 257])
    )
    tar[position] = data.draw(
        st.sampled_from([0, ord(" "), ord("0"), ord("7"), ord("8"), ord("/"), ord("."), 0x80])
    )
    if data.draw(st.booleans()):
        fuzz._fix_header_checksum(tar, block)
    monkeypatch = pytest.MonkeyPatch()
    try:
        with_run, walk_only = _both_ways(monkeypatch, read_tar, bytes(tar))
    finally:
        monkeypatch.undo()
    assert with_run == walk_only


def test_the_plain_run_takes_a_whole_mnist_like_archive() -> None:
    """Without this, the tests above would pass with a plain run that never finds anything."""
    names = ["mnist_png/", "mnist_png/testing/"] + [
        f"mnist_png/testing/{index % 10}/{index}.png" for index in range(50)
    ]
    tar = _tar(names)
    entries, used = archives._TarWalker("mnist.tar")._plain_run(tar)
    assert [entry.path for entry in entries] == names[2:]
    assert {entry.data for entry in entries} == {b"png"} and {entry.mtime for entry in entries} == {
        1_577_836_800.0
    }
    assert used == 2 * 512 + 50 * 1024  # folders are a header each, files a header and a data block
    assert not any(tar[used : used + 1024])  # what follows is the end-of-archive marker
