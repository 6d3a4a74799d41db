"""Benchmark: the PNG decoder, the tar reader and the request parser under generated hostile input.

    python benchmarks/fuzz.py [--inputs 100000] [--seed 0] [--time-limit 10] [--memory-mb 1024]

Hypothesis generates structure-aware inputs, split evenly over the three targets: valid PNGs from
`tests/pngs.py` (every colour type, bit depth, filter and interlace) then damaged (chunk lengths, CRCs,
IHDR fields, filter bytes, truncation, huge dimensions, zlib bombs, stray chunks); tar.gz archives with
`..`, absolute and backslash names, links out of the root, devices, huge sizes, pax and GNU long names,
damaged headers, truncation and gzip bombs; scoring request bodies of every kind with wrong types,
shapes, encodings and nesting. Each input runs in a worker process with a time limit and an address
space limit; a worker that overruns is killed (a hang) and replaced.

An input counts as a crash when the target raises anything but its refusal type (`ImageDecodeError`
and per-image reasons for the decoder, `ArchiveError` for the tar reader, `BadRequest` for the request
parser), when a refusal is unclear (empty, a traceback, the decoder's catch-all "cannot decode
(SomeError)"), or when the worker dies. A pixel mismatch: an accepted PNG whose pixels differ from
Pillow's (the decoder's documented conversion: 8-bit L or RGB, the high byte of 16-bit gray), a PNG
Pillow cannot read that the decoder accepts, or an undamaged PNG refused. An escape: a tar member whose
path leaves the archive's root, or a file opened during the read other than the archive itself.

The last line printed is the JSON summary: inputs, crashes, hangs, pixel_mismatches, escapes.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import multiprocessing
import os
import resource
import struct
import sys
import tarfile
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/pngs.py: the hand-written encoder

from mnist_mlops.archives import ArchiveError, iter_tar_gz, read_tar
from mnist_mlops.imaging import (
    ImageDecodeError,
    decode_pngs,
    png_shapes,
    resize_png,
)
from mnist_mlops.serving.payloads import BadRequest, Limits, parse_request
from tests import pngs

TARGETS = ("png", "tar", "request")
UNCLEAR_REASON = "cannot decode ("  # the decoder's catch-all for an exception it did not expect
TAR_MAX_BYTES = 1 << 20  # the inflate cap the tar target runs with: bombs are a few MB
REQUEST_LIMITS = Limits(max_batch=8, max_body_bytes=64 * 1024)
COLOUR_SHAPE_CHANNELS = 3

# --- PNGs -------------------------------------------------------------------------------------------

_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_IHDR_FIELDS = {"width": (16, ">I"), "height": (20, ">I"), "depth": (24, "B"), "color": (25, "B")}
_IHDR_FIELDS |= {"compression": (26, "B"), "filter": (27, "B"), "interlace": (28, "B")}
_ANCILLARY = [
    pngs.chunk(b"gAMA", struct.pack(">I", 45455)),
    pngs.chunk(b"tEXt", b"Comment\0fuzz"),
    pngs.chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * 1000)),
    pngs.chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
    pngs.chunk(b"abCd", b"private ancillary"),
    pngs.chunk(b"ABCD", b"unknown critical"),
    pngs.chunk(b"sRGB", b"\0"),
    pngs.chunk(b"tIME", struct.pack(">HBBBBB", 2026, 12, 7, 10, 0, 0)),
]


_SIDES = st.integers(1, 12) | st.just(28)
_VALID_FILTERS = st.lists(st.integers(0, 4), min_size=1, max_size=4)
_ANY_FILTERS = st.lists(st.integers(0, 255), min_size=1, max_size=4)
_EXTRA_CHUNKS = st.lists(st.sampled_from(_ANCILLARY), max_size=2)


@cache
def zlib_bomb(inflated_bytes: int) -> bytes:
    """A zlib stream of zeros that inflates to `inflated_bytes` (a few KB for tens of MB)."""
    return zlib.compress(bytes(inflated_bytes), 9)


@dataclass(frozen=True)
class PngCase:
    """A PNG to decode and what it was before damage: `pristine` when no mutation touched it."""

    blob: bytes
    shape: tuple[int, ...]
    pristine: bool


def _chunks(blob: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each whole chunk, up to the first one that runs past the end."""
    found, pos = [], 8
    while pos + 12 <= len(blob):
        length, kind = struct.unpack_from(">I4s", blob, pos)
        if pos + 12 + length > len(blob):
            break
        found.append((pos, kind))
        pos += 12 + length
    return found


def _recrc(blob: bytearray, offset: int) -> None:
    length = struct.unpack_from(">I", blob, offset)[0]
    end = offset + 8 + length
    if offset + 8 <= end and end + 4 <= len(blob):
        struct.pack_into(">I", blob, end, zlib.crc32(blob[offset + 4 : end]))


def _mutate_png(blob: bytes, mutation: tuple) -> bytes:
    data = bytearray(blob)
    chunks = _chunks(blob)
    kind, *args = mutation
    if kind == "truncate":
        return bytes(data[: args[0] % (len(data) + 1)])
    if not chunks:  # cut before its first chunk: nothing left to aim at
        return blob
    if kind == "flip":
        position, mask, fix_crc = args
        position %= len(data)
        data[position] ^= mask
        hit = [offset for offset, _ in chunks if offset <= position]
        if fix_crc and hit:  # damage inside a chunk that its CRC does not give away
            _recrc(data, hit[-1])
    elif kind == "crc":
        offset, _ = chunks[args[0] % len(chunks)]
        length = struct.unpack_from(">I", data, offset)[0]
        data[offset + 8 + length] ^= 0x55
    elif kind == "length":
        index, length, fix_crc = args
        offset, _ = chunks[index % len(chunks)]
        struct.pack_into(">I", data, offset, length)
        if fix_crc:
            _recrc(data, offset)
    elif kind == "ihdr" and len(data) >= 33:
        name, value = args
        position, layout = _IHDR_FIELDS[name]
        struct.pack_into(layout, data, position, value % (1 << (8 * struct.calcsize(layout))))
        _recrc(data, 8)
    elif kind == "bomb":
        inflated, before_iend = args
        bomb = pngs.chunk(b"IDAT", zlib_bomb(inflated))
        at = chunks[-1][0] if before_iend else 33
        data[at:at] = bomb
    elif kind == "insert":
        index, extra = args
        at = chunks[index % len(chunks)][0]
        data[at:at] = extra
    elif kind == "drop":
        offset, _ = chunks[args[0] % len(chunks)]
        length = struct.unpack_from(">I", data, offset)[0]
        del data[offset : offset + 12 + length]
    elif kind == "trailing":
        data += args[0]
    return bytes(data)


@st.composite
def png_cases(draw: st.DrawFn) -> PngCase:
    """A valid PNG of any kind, then zero to three mutations."""
    color = draw(st.sampled_from(sorted(_BIT_DEPTHS)))
    depth = draw(st.sampled_from(_BIT_DEPTHS[color]))
    height = draw(_SIDES)
    width = draw(_SIDES)
    channels = _CHANNELS[color]
    top = (1 << depth) - 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))  # pixel values matter less than structure
    pixels = rng.integers(0, top, (height, width, channels), endpoint=True)
    filters = _mostly(draw, draw(_VALID_FILTERS), _ANY_FILTERS)
    extra = draw(_EXTRA_CHUNKS)
    if color == 3:
        palette = rng.integers(0, 255, 3 * (top + 1), endpoint=True).astype(np.uint8)
        if draw(st.booleans()):  # a palette of grays
            palette = np.repeat(palette[: top + 1], 3)
        palette = palette.tobytes()
        extra = [pngs.chunk(b"PLTE", palette), *extra]
    blob = pngs.encode_png(
        pixels,
        filters=filters,
        color_type=color,
        interlace=draw(st.booleans()),
        extra=extra,
        idat_parts=draw(st.integers(1, 3)),
        bit_depth=depth,
    )
    mutations = draw(st.just([]) | _PNG_MUTATION_LISTS)
    for mutation in mutations:
        blob = _mutate_png(blob, mutation)
    colour = color in (2, 6) or (color == 3 and _palette_has_colour(extra[0]))
    other_channels = draw(st.integers(0, 3)) == 0  # a colour model sent gray, or the other way round
    shape = (height, width, COLOUR_SHAPE_CHANNELS) if colour != other_channels else (height, width)
    clean = not mutations and max(filters) <= 4 and pngs.chunk(b"ABCD", b"unknown critical") not in extra
    return PngCase(blob, shape, clean)


def _palette_has_colour(plte_chunk: bytes) -> bool:
    entries = np.frombuffer(plte_chunk[8:-4], np.uint8).reshape(-1, 3)
    return bool((entries != entries[:, :1]).any())


_png_mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 4096)),
    st.tuples(st.just("flip"), st.integers(0, 4096), st.integers(1, 255), st.booleans()),
    st.tuples(st.just("crc"), st.integers(0, 8)),
    st.tuples(
        st.just("length"),
        st.integers(0, 8),
        st.integers(0, 64) | st.integers(0, 2**32 - 1),
        st.booleans(),
    ),
    st.tuples(
        st.just("ihdr"),
        st.sampled_from(sorted(_IHDR_FIELDS)),
        st.integers(0, 64) | st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 4096, 4097, 100_000]),
    ),
    st.tuples(st.just("bomb"), st.sampled_from([1 << 20, 16 << 20, 64 << 20]), st.booleans()),
    st.tuples(st.just("insert"), st.integers(0, 8), st.sampled_from(_ANCILLARY) | st.binary(max_size=40)),
    st.tuples(st.just("drop"), st.integers(0, 8)),
    st.tuples(st.just("trailing"), st.binary(min_size=1, max_size=64)),
)

_PNG_MUTATION_LISTS = st.lists(_png_mutations, min_size=1, max_size=3)


def pillow_pixels(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """What `decode_pngs` promises for an image it accepts: Pillow's 8-bit L or RGB, the high byte of
    16-bit grayscale."""
    with Image.open(io.BytesIO(blob), formats=["PNG"]) as image:
        image.load()
        if image.mode.startswith("I"):
            gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
            return gray if len(shape) == 2 else np.repeat(gray[..., None], 3, axis=2)
        return np.asarray(image.convert("L" if len(shape) == 2 else "RGB"), dtype=np.uint8)


def _unclear(reason: object) -> bool:
    return (
        not isinstance(reason, str)
        or not reason.strip()
        or reason.startswith(UNCLEAR_REASON)
        or ("Traceback" in reason)
    )


def _compare(decoded: np.ndarray, blob: bytes, shape: tuple[int, ...], what: str) -> tuple[str, str]:
    try:
        expected = pillow_pixels(blob, shape)
    except Exception as error:  # Pillow cannot read it: the decoder should not have either
        return "pixel_mismatch", f"{what} accepted a PNG Pillow refuses ({type(error).__name__}: {error})"
    if expected.shape != decoded.shape or not np.array_equal(expected, decoded):
        return "pixel_mismatch", f"{what} pixels differ from Pillow's"
    return "ok", ""


def check_png(case: PngCase) -> tuple[str, str]:
    """Every decoder entry point on one PNG; the first failed check's verdict."""
    blob, shape = case.blob, case.shape
    anchor = pngs.encode_png(np.full(shape, 7, dtype=np.uint8), color_type=2 if len(shape) == 3 else 0)
    batch = decode_pngs([anchor, blob], shape)
    if 0 in batch.errors or not (batch.images[0] == 7).all():
        return "crash", f"a damaged neighbour spoiled a valid image in the batch ({batch.errors.get(0)})"
    if 1 in batch.errors:
        reason = batch.errors[1]
        if _unclear(reason):
            return "crash", f"decode_pngs: unclear refusal {reason!r}"
        if case.pristine:
            return "pixel_mismatch", f"decode_pngs refused an undamaged PNG: {reason}"
    else:
        verdict = _compare(batch.images[1], blob, shape, "decode_pngs")
        if verdict[0] != "ok":
            return verdict
    alone = decode_pngs([blob], shape)  # as a one-PNG scoring request decodes it
    if bool(alone.errors) != (1 in batch.errors) or (
        not alone.errors and not np.array_equal(alone.images[0], batch.images[1])
    ):
        return "pixel_mismatch", "decode_pngs decodes the PNG differently alone and in a batch"
    (answer,) = png_shapes([blob])
    if isinstance(answer, str) and _unclear(answer):
        return "crash", f"png_shapes: unclear refusal {answer!r}"
    try:
        resized = resize_png(blob, shape)
    except ImageDecodeError as error:
        if _unclear(str(error)):
            return "crash", f"resize_png: unclear refusal {error!r}"
    else:
        if resized.shape != shape:
            return "crash", f"resize_png returned shape {resized.shape}, not {shape}"
        if answer == shape or (isinstance(answer, tuple) and answer[:2] == shape[:2]):
            verdict = _compare(resized, blob, shape, "resize_png")
            if verdict[0] != "ok":
                return verdict
    return ("refused", "") if 1 in batch.errors else ("ok", "")


# --- tar archives -----------------------------------------------------------------------------------

_NAME_PARTS = ["mnist_png", "training", "7", "a.png", "..", ".", "", "C:", "x\\..\\y", "é", "n" * 120]
_TYPES = [
    tarfile.REGTYPE,
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CONTTYPE,
    b"Z",
]
_FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


@dataclass(frozen=True)
class TarCase:
    """A .tar.gz and the uncompressed tar inside it (None when the gzip layer itself was damaged)."""

    gz: bytes
    tar: bytes | None


def _member_name(parts: list[str], absolute: bool) -> str:
    return ("/" if absolute else "") + "/".join(parts)


def _build_tar(members: list[tuple], layout: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=_FORMATS[layout]) as archive:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = kind, link, 1_700_000_000
            info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else 0
            try:
                archive.addfile(info, io.BytesIO(data) if info.size else None)
            except ValueError:  # a name this format cannot hold: the member is left out
                continue
    return buffer.getvalue()


def _fix_header_checksum(tar: bytearray, block: int) -> None:
    header = tar[block * 512 : block * 512 + 512]
    if len(header) < 512:
        return
    header[148:156] = b" " * 8
    tar[block * 512 + 148 : block * 512 + 156] = b"%06o\0 " % sum(header)


def _mutate_tar(tar: bytes, mutation: tuple) -> bytes:
    data = bytearray(tar)
    kind, *args = mutation
    blocks = len(data) // 512  # whole header blocks
    if kind == "truncate":
        return bytes(data[: args[0] % (len(data) + 1)])
    if not data or (kind in ("size", "typeflag") and not blocks):
        return tar
    if kind == "flip":
        position, mask, fix = args
        position %= len(data)
        data[position] ^= mask
        if fix:
            _fix_header_checksum(data, position // 512)
    elif kind == "size":
        block, value, binary = args
        block %= blocks
        field_bytes = b"\x80" + value.to_bytes(11, "big") if binary else b"%011o\0" % (value % 8**11)
        data[block * 512 + 124 : block * 512 + 136] = field_bytes
        _fix_header_checksum(data, block)
    elif kind == "typeflag":
        block, flag = args
        block %= blocks
        data[block * 512 + 156] = flag
        _fix_header_checksum(data, block)
    elif kind == "trailing":
        data += args[0]
    return bytes(data)


@st.composite
def tar_cases(draw: st.DrawFn) -> TarCase:
    """A tar of hostile and ordinary members, damaged zero to three times, gzipped (maybe damaged too)."""
    members = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 9)) < 7:  # an ordinary member
            name = "/".join(draw(_SAFE_NAME_PART_LISTS))
            kind, link = draw(st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE])), ""
        else:
            name = _member_name(draw(_NAME_PART_LISTS), draw(st.booleans()))
            kind = draw(st.sampled_from(_TYPES))
            link = draw(st.sampled_from(["", "/etc/passwd", "../../outside", "mnist_png/a.png"]))
        members.append((name, kind, draw(st.binary(max_size=700)), link))
    tar = _build_tar(members, draw(st.sampled_from(sorted(_FORMATS))))
    for mutation in draw(st.just([]) | _TAR_MUTATION_LISTS):
        tar = _mutate_tar(tar, mutation)
    if draw(st.integers(0, 9)) == 0:  # a bomb: beyond the cap the reader runs with
        tar = tar + bytes(TAR_MAX_BYTES + 1024)
    gz = gzip.compress(tar, compresslevel=1, mtime=0)
    damage = _mostly(draw, "none", st.sampled_from(["truncate", "flip", "concatenate"]))
    if damage == "truncate":
        return TarCase(gz[: draw(st.integers(0, len(gz) - 1))], None)
    if damage == "flip":
        position = draw(st.integers(0, len(gz) - 1))
        return TarCase(gz[:position] + bytes([gz[position] ^ 0x10]) + gz[position + 1 :], None)
    if damage == "concatenate":  # a second gzip member: one tar, split in two
        half = len(tar) // 2
        return TarCase(gzip.compress(tar[:half], mtime=0) + gzip.compress(tar[half:], mtime=0), tar)
    return TarCase(gz, tar)


_tar_mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 8192)),
    st.tuples(st.just("flip"), st.integers(0, 8192), st.integers(1, 255), st.booleans()),
    st.tuples(
        st.just("size"), st.integers(0, 16), st.integers(0, 2**40) | st.integers(0, 2048), st.booleans()
    ),
    st.tuples(st.just("typeflag"), st.integers(0, 16), st.sampled_from(b"0123456789LKxgZ\0")),
    st.tuples(st.just("trailing"), st.binary(min_size=1, max_size=1024)),
)

_TAR_MUTATION_LISTS = st.lists(_tar_mutations, min_size=1, max_size=3)
_NAME_PART_LISTS = st.lists(st.sampled_from(_NAME_PARTS), min_size=1, max_size=4)
_SAFE_NAME_PART_LISTS = st.lists(st.sampled_from(_NAME_PARTS[:4] + _NAME_PARTS[-2:]), min_size=1, max_size=4)


def _unsafe_path(path: str) -> bool:
    """A yielded member path that could land outside the folder it is extracted to."""
    parts = PurePosixPath(path).parts
    return (
        not path
        or path.startswith(("/", "\\"))
        or path[1:2] == ":"
        or "\\" in path
        or any(part in ("..", ".") for part in path.split("/"))
        or not parts
    )


class _OpenedFiles:
    """Paths opened while a target runs (Python's `open` audit event): the tar reader may open its
    archive and nothing else; module files loaded on first use are not data."""

    def __init__(self) -> None:
        self.paths: list[str] | None = None
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "open" and self.paths is not None and isinstance(args[0], str | bytes | os.PathLike):
            path = os.fsdecode(args[0])
            if not path.endswith((".py", ".pyc", ".so")) and not path.startswith(("/proc/", "/sys/")):
                self.paths.append(path)


_opened: _OpenedFiles | None = None


def check_tar(case: TarCase) -> tuple[str, str]:
    """The streaming .tar.gz reader and the in-memory tar reader on one archive."""
    global _opened
    _opened = _opened or _OpenedFiles()
    verdicts = []
    with tempfile.NamedTemporaryFile(suffix=".tar.gz", dir=_scratch()) as archive:
        archive.write(case.gz)
        archive.flush()
        _opened.paths = []
        try:
            entries = list(iter_tar_gz(Path(archive.name), max_bytes=TAR_MAX_BYTES))
        except ArchiveError as error:
            entries, verdicts = [], [_archive_refusal(error, "iter_tar_gz")]
        finally:
            opened, _opened.paths = _opened.paths, None
    strays = [path for path in opened if path != archive.name]
    if strays:
        return "escape", f"iter_tar_gz opened {strays[:3]}"
    if case.tar is not None and len(case.tar) <= TAR_MAX_BYTES:
        try:
            entries += read_tar(case.tar, source="fuzz.tar")
        except ArchiveError as error:
            verdicts.append(_archive_refusal(error, "read_tar"))
    for entry in entries:
        if _unsafe_path(entry.path):
            return "escape", f"member path {entry.path!r} leaves the archive root"
    for verdict in verdicts:
        if verdict[0] != "refused":
            return verdict
    return verdicts[0] if verdicts else ("ok", "")


def _archive_refusal(error: ArchiveError, what: str) -> tuple[str, str]:
    message = str(error)
    if not message.strip() or "Traceback" in message:
        return "crash", f"{what}: unclear refusal {message!r}"
    return "refused", ""


@cache
def _scratch() -> str:
    """Archives are written to memory-backed /dev/shm when it exists."""
    return (
        "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    )


# --- scoring requests -------------------------------------------------------------------------------

_SHAPES = [(4, 5), (4, 5, 3)]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=40,
)


@dataclass(frozen=True)
class RequestCase:
    body: bytes
    content_type: str
    shape: tuple[int, ...]


def _mostly(draw: st.DrawFn, usual: object, others: st.SearchStrategy) -> object:
    """`usual` seven times in ten, else one of `others`: most requests should be nearly right."""
    return usual if draw(st.integers(0, 9)) < 7 else draw(others)


@st.composite
def _pixel_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> list:
    """A batch of about the model's shape, sometimes with one wrong value (range, type, null)."""
    count = _mostly(draw, draw(st.integers(1, REQUEST_LIMITS.max_batch)), st.sampled_from([0, 9, 10]))
    dims = [_mostly(draw, side, st.sampled_from([side - 1, side + 1, 1])) for side in shape]
    if draw(st.integers(0, 4)) == 0:
        dims.append(draw(st.sampled_from([1, 3])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    array = rng.integers(0, 255, (count, *dims), endpoint=True).astype(object)
    if array.size and draw(st.booleans()):
        wrong = draw(st.sampled_from([-1, 256, 2**63, 2**70, 0.5, 1.0, "1", True, None, [1], {}]))
        array.flat[draw(st.integers(0, array.size - 1))] = wrong
    return array.tolist()


_CONTENT_TYPES = {"json": "application/json", "png": "image/png"}
_OTHER_CONTENT_TYPES = st.sampled_from(
    ["application/json; charset=utf-8", "IMAGE/PNG", "image/png; q=1", "text/plain", "image/jpeg", ""]
) | st.text(max_size=20)
_NOT_BASE64_PNGS = st.lists(st.text(max_size=12) | st.integers(), max_size=1)
_EXTRA_FIELDS = st.dictionaries(
    st.sampled_from(["schema_version", "images", "instances", "x"]), _json_values | st.just(1), max_size=2
)


@st.composite
def request_cases(draw: st.DrawFn) -> RequestCase:
    """A request body of one kind, with the content type that kind needs seven times in ten."""
    shape = draw(st.sampled_from(_SHAPES))
    kind = draw(st.sampled_from(["instances", "images", "png", "document", "nesting", "bytes"]))
    content_type = _mostly(draw, _CONTENT_TYPES["png" if kind == "png" else "json"], _OTHER_CONTENT_TYPES)
    if kind == "png":
        case = draw(png_cases())
        return RequestCase(case.blob, content_type, case.shape)
    if kind == "nesting":
        depth = draw(st.integers(1, 200_000))
        return RequestCase(b"[" * depth + b"]" * draw(st.integers(0, depth)), content_type, shape)
    if kind == "bytes":
        return RequestCase(draw(st.binary(max_size=200)), content_type, shape)
    if kind == "instances":
        document: object = {"instances": draw(_pixel_arrays(shape))}
    elif kind == "images":
        cases = draw(st.lists(png_cases(), min_size=1, max_size=3))
        shape = cases[0].shape  # the model's: the first image's, the others may differ
        encoded = [base64.b64encode(case.blob).decode() for case in cases]
        encoded += draw(_NOT_BASE64_PNGS)
        document = {"images": encoded}
    else:
        document = draw(_json_values)
    if isinstance(document, dict) and draw(st.integers(0, 4)) == 0:
        document |= draw(_EXTRA_FIELDS)
    text = json.dumps(document)
    encoding = _mostly(draw, "utf-8", st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"]))
    body = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 9)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    return RequestCase(body, content_type, shape)


def check_request(case: RequestCase) -> tuple[str, str]:
    """The request parser on one body; accepted images are checked against the body's own content."""
    try:
        images = parse_request(case.body, case.content_type, REQUEST_LIMITS, case.shape)
    except BadRequest as refusal:
        if (
            refusal.status not in (400, 413, 415)
            or _unclear(refusal.message)
            or UNCLEAR_REASON in refusal.message
        ):
            return "crash", f"unclear refusal {refusal.status} {refusal.message!r}"
        return "refused", ""
    if (
        images.dtype != np.uint8
        or images.shape[1:] != case.shape
        or not 1 <= len(images) <= REQUEST_LIMITS.max_batch
    ):
        return "crash", f"accepted as {images.dtype} {images.shape} for a model of {case.shape}"
    if case.content_type.split(";")[0].strip().lower() == "image/png":
        return _compare(images[0], case.body, case.shape, "parse_request")
    document = json.loads(case.body)
    if "instances" in document:
        expected = np.asarray(document["instances"]).reshape(images.shape)
        if not np.array_equal(expected, images):
            return "pixel_mismatch", "instances accepted with other values than sent"
    else:
        for image, encoded in zip(images, document["images"], strict=True):
            verdict = _compare(image, base64.b64decode(encoded), case.shape, "parse_request")
            if verdict[0] != "ok":
                return verdict
    return "ok", ""


STRATEGIES: dict[str, st.SearchStrategy] = {
    "png": png_cases(),
    "tar": tar_cases(),
    "request": request_cases(),
}
CHECKS: dict[str, Callable[[object], tuple[str, str]]] = {
    "png": check_png,
    "tar": check_tar,
    "request": check_request,
}

# --- the sandbox ------------------------------------------------------------------------------------


def _worker(connection: Connection, memory_bytes: int) -> None:
    """Run checks sent over `connection` until it closes, within an address space of `memory_bytes` more
    than the worker started with."""
    with open("/proc/self/statm") as statm:
        start = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (start + memory_bytes, start + memory_bytes))
    while True:
        try:
            target, case = connection.recv()
        except EOFError:
            return
        try:
            verdict = CHECKS[target](case)
        except Exception:
            lines = traceback.format_exc().strip().splitlines()
            verdict = ("crash", " | ".join(lines[-3:]))
        connection.send(verdict)


class Sandbox:
    """One worker process at a time: each input bounded by `time_limit` seconds and `memory_bytes` of
    address space; a worker that overruns or dies is replaced."""

    def __init__(self, time_limit: float, memory_bytes: int) -> None:
        self.time_limit = time_limit
        self.memory_bytes = memory_bytes
        self.context = multiprocessing.get_context("fork")  # the parent's imports, not a fresh interpreter
        self.process: multiprocessing.process.BaseProcess | None = None
        self.connection: Connection | None = None

    def _start(self) -> None:
        parent, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child, self.memory_bytes), daemon=True)
        self.process.start()
        child.close()
        self.connection = parent

    def _stop(self) -> None:
        if self.process is not None:
            self.connection.close()
            self.process.kill()
            self.process.join()
            self.process = None

    def run(self, target: str, case: object) -> tuple[str, str]:
        if self.process is None:
            self._start()
        try:
            self.connection.send((target, case))
            if self.connection.poll(self.time_limit):
                return self.connection.recv()
        except (EOFError, OSError):
            code = self.process.exitcode if self.process.join(1) is None else None
            self._stop()
            return "crash", f"the worker died (exit code {code})"
        self._stop()
        return "hang", f"no answer within {self.time_limit} s"

    def close(self) -> None:
        self._stop()


@dataclass
class Tally:
    """Verdicts per target, and the first few failing inputs of each kind (kept for reproduction)."""

    counts: dict[str, Counter] = field(default_factory=lambda: {target: Counter() for target in TARGETS})
    failures: list[tuple[str, str, str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, target: str, verdict: tuple[str, str], case: object) -> None:
        self.counts[target][verdict[0]] += 1
        if verdict[0] not in ("ok", "refused") and len(self.failures) < 50:
            self.failures.append((target, verdict[0], verdict[1], case))

    def total(self, verdict: str | None = None) -> int:
        return sum(c[verdict] if verdict else sum(c.values()) for c in self.counts.values())

    def summary(self) -> dict:
        return {
            "inputs": self.total(),
            "crashes": self.total("crash"),
            "hangs": self.total("hang"),
            "pixel_mismatches": self.total("pixel_mismatch"),
            "escapes": self.total("escape"),
            "per_target": {target: dict(counts) for target, counts in self.counts.items()},
            "seconds": round(self.seconds, 1),
            "inputs_per_s": round(self.total() / self.seconds, 1) if self.seconds else None,
        }


def fuzz(count: int, *, seed_value: int = 0, time_limit: float = 10, memory_mb: int = 1024) -> Tally:
    """`count` generated inputs split evenly over the targets, each checked in the sandbox."""
    tally = Tally()
    sandbox = Sandbox(time_limit, memory_mb << 20)
    started = time.perf_counter()
    try:
        for index, target in enumerate(TARGETS):
            examples = count // len(TARGETS) + (index < count % len(TARGETS))

            _runner(target, examples, seed_value + index, sandbox, tally)()
    finally:
        sandbox.close()
        tally.seconds = time.perf_counter() - started
    return tally


def _runner(
    target: str, examples: int, seed_value: int, sandbox: Sandbox, tally: Tally
) -> Callable[[], None]:
    """A Hypothesis test that only generates (no shrinking, no database): every input is counted."""

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(STRATEGIES[target])
    def one(case: object) -> None:
        tally.add(target, sandbox.run(target, case), case)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="generated inputs over all targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=10, help="seconds one input may take")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address space one input may add")
    args = parser.parse_args()
    tally = fuzz(args.inputs, seed_value=args.seed, time_limit=args.time_limit, memory_mb=args.memory_mb)
    for target, verdict, detail, _ in tally.failures:
        print(f"{target} {verdict}: {detail}")
    limits = {"seed": args.seed, "time_limit_s": args.time_limit, "memory_limit_mb": args.memory_mb}
    print(json.dumps(tally.summary() | limits))


if __name__ == "__main__":
    main()
