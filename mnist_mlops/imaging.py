"""Fast, safe decoding of many small PNGs (MNIST digits, or any one size of grayscale or colour
images) into one uint8 array.

Safety first: every blob's header is read (`read_png_header`) before anything is decompressed, and an
image whose declared size is not the expected one is rejected without being decompressed. That is the
defence against decompression bombs: a 10,000x10,000 PNG costs a 33-byte read, not 100 MB of memory.
`png_shapes` tells a dataset's shapes from the headers alone, so its most common shape can be chosen
before anything is decoded; `resize_png` brings an image of another shape to it, refusing images
larger than `MAX_IMAGE_PIXELS`.

Fast path (8-bit grayscale, non-interlaced: every MNIST PNG): a lean per-image Python loop walks the
chunks with `struct`, verifies every chunk's CRC, joins the IDAT payloads, stops at IEND and inflates
with a hard output cap of exactly ``height * (width + 1)`` bytes; ancillary chunks are never inflated.
The PNG row filters are then undone for a whole chunk of the batch in one call to Pillow's PNG row
decoder, the images stacked as one tall image (`_unfilter`): per image, a small request costs about
what a batch's image does.

Fallback (right size but RGB, RGBA, palette, gray+alpha, 16-bit, low bit depth or interlaced): Pillow
decodes the image, which is converted to 8-bit grayscale and flagged in `DecodedBatch.converted`.
16-bit grayscale keeps its high byte (Pillow's own "I;16" to "L" conversion clips at 255, which would
turn a 16-bit digit into a white blob). Colour images (shape (H, W, 3)) all go through Pillow, to 8-bit
RGB; those that are not 8-bit RGB already are flagged as converted.

Per-image failures never abort a batch: they are recorded in `DecodedBatch.errors` with a reason that
describes the problem without echoing the input bytes.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from isal import isal_zlib
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC: the same in every PNG
_HEADER_END = 33  # signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 CRC)
_IHDR = struct.Struct(">I4sIIBBBBBI")
_CHUNK = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_VALID_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_MAX_DIMENSION = 2**31 - 1
_CHUNK_BYTES = 512 << 10  # filtered rows inflated and unfiltered per pass: its buffers stay in cache
_HEADER_CACHE_LIMIT = 256
_BYTES_LITERAL = re.compile(r"""\bb(['"]).*?\1""")  # Pillow messages may quote chunk bytes: never echo them
_COLOUR_TYPES = (2, 6)  # RGB and RGBA; palette images (3) are colour when a palette entry is not gray
_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I")

MAX_IMAGE_PIXELS = 1 << 24
"""The most pixels (4096x4096) an image may declare for `png_shape` and `resize_png` to take it: beyond
that, a small file is far more likely a decompression bomb than a training image."""


class ImageDecodeError(ValueError):
    """An image cannot be decoded; the message says what is wrong (never echoes the input bytes)."""


@dataclass(frozen=True)
class PngHeader:
    """The IHDR fields that decide whether (and how) an image may be decoded."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


@dataclass
class DecodedBatch:
    """Decoded images plus per-item failures, so one bad file never costs the whole batch."""

    images: np.ndarray  # uint8 (N, height, width) or (N, height, width, 3); failed items are zero
    errors: dict[int, str]  # index -> reason for items that could not be decoded
    converted: np.ndarray  # bool (N,): True where a source of another PNG mode was converted


def _chunk_name(chunk_type: bytes) -> str:
    """A printable chunk name, or a placeholder, so error messages never carry arbitrary bytes."""
    return chunk_type.decode("ascii") if chunk_type.isalpha() else "unnamed"


def read_png_header(data: bytes) -> PngHeader:
    """Validate the signature and IHDR chunk (CRC included) without decompressing anything.

    Callers use the declared size to refuse decompression bombs before any decoding happens.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise ImageDecodeError("empty input, not a PNG file")
    if data[:8] != PNG_SIGNATURE[:size]:
        raise ImageDecodeError("not a PNG file")
    if size < _HEADER_END:
        raise ImageDecodeError("truncated PNG header")
    length, chunk_type, width, height, depth, color, compression, filtering, interlace, crc = (
        _IHDR.unpack_from(data, 8)
    )
    if chunk_type != b"IHDR":
        raise ImageDecodeError("first chunk is not IHDR")
    if length != 13:
        raise ImageDecodeError(f"IHDR chunk has length {length}, expected 13")
    if zlib.crc32(memoryview(data)[12:29]) != crc:
        raise ImageDecodeError("bad CRC in IHDR chunk")
    if not (0 < width <= _MAX_DIMENSION and 0 < height <= _MAX_DIMENSION):
        raise ImageDecodeError(f"invalid image size {width}x{height}")
    if depth not in _VALID_BIT_DEPTHS.get(color, ()):
        raise ImageDecodeError(f"invalid bit depth {depth} for color type {color}")
    if compression != 0:
        raise ImageDecodeError(f"unknown compression method {compression}")
    if filtering != 0:
        raise ImageDecodeError(f"unknown filter method {filtering}")
    if interlace not in (0, 1):
        raise ImageDecodeError(f"unknown interlace method {interlace}")
    return PngHeader(width, height, depth, color, interlace)


def _idat_parts(blob: bytes) -> list[memoryview]:
    """Walk the chunks after IHDR up to IEND, checking every CRC; return the IDAT payloads.

    Structural damage (truncation, bad CRC, unknown critical chunk) is caught here for every image,
    whichever decoder then handles the pixels.
    """
    view = memoryview(blob)
    size = len(blob)
    pos = _HEADER_END
    parts = []
    while True:
        if pos + 12 > size:
            raise ImageDecodeError("truncated PNG (no IEND chunk)")
        length, chunk_type = _CHUNK.unpack_from(blob, pos)
        end = pos + 12 + length
        if end > size:
            raise ImageDecodeError(f"truncated PNG ({_chunk_name(chunk_type)} chunk runs past the end)")
        if zlib.crc32(view[pos + 4 : end - 4]) != _U32.unpack_from(blob, end - 4)[0]:
            raise ImageDecodeError(f"bad CRC in {_chunk_name(chunk_type)} chunk")
        if chunk_type == b"IDAT":
            parts.append(view[pos + 8 : end - 4])
            if blob.startswith(_IEND_CHUNK, end):  # the usual layout: skip a CRC check of a constant
                break
        elif chunk_type == b"IEND":
            break
        elif not chunk_type[0] & 0x20 and chunk_type != b"PLTE":
            raise ImageDecodeError(f"unknown critical chunk {_chunk_name(chunk_type)}")
        pos = end
    if not parts:
        raise ImageDecodeError("no IDAT chunk")
    return parts


def _inflate_gray8(blob: bytes, expected: int) -> bytes:
    """Inflate the IDAT data of a checked PNG, insisting on exactly `expected` bytes.

    The output cap means a malicious stream can never make us allocate more than one image's worth.
    """
    parts = _idat_parts(blob)
    stream = isal_zlib.decompressobj()
    try:
        raw = stream.decompress(parts[0] if len(parts) == 1 else b"".join(parts), expected + 1)
    except isal_zlib.error as error:
        raise ImageDecodeError(f"corrupt image data ({error})") from None
    if len(raw) != expected:
        qualifier = "more" if len(raw) > expected else "less"
        raise ImageDecodeError(f"image data has {qualifier} than the {expected} bytes the header implies")
    if not stream.eof:
        raise ImageDecodeError("truncated image data (zlib stream does not end)")
    return raw


def _unfilter(raw: np.ndarray, out: np.ndarray) -> None:
    """Undo the PNG row filters of 8-bit grayscale images: raw (m, h + 1, w + 1) -> out (m, h, w).

    Each image's rows (filter byte first) come after one row of zeros with filter None, so that stacked
    as one tall image every image's first row sees the all-zero row above it that PNG defines: Pillow's
    PNG row decoder (C) then undoes every filter of the batch in one call, fed a stored (uncompressed)
    zlib stream of the rows. Filter bytes must be <= 4.
    """
    count, rows, stride = raw.shape
    tall = Image.frombytes("L", (stride - 1, count * rows), zlib.compress(raw, 0), "zip", "L")
    out[...] = np.asarray(tall).reshape(count, rows, stride - 1)[:, 1:]


def _decode_with_pillow(blob: bytes, header: PngHeader, channels: int = 1) -> np.ndarray:
    """Decode a checked PNG with Pillow into 8-bit pixels of `channels` (1: (H, W), 3: (H, W, 3))."""
    _idat_parts(blob)
    try:
        with Image.open(BytesIO(blob), formats=["PNG"]) as image:
            image.load()
            if image.size != (header.width, header.height):
                raise ImageDecodeError(f"Pillow decoded size {image.size}, header says otherwise")
            if image.mode in _SIXTEEN_BIT_GRAY:  # keep the high byte
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        message = _BYTES_LITERAL.sub("<bytes>", str(error).split("\n", 1)[0])[:120]
        raise ImageDecodeError(f"corrupt or truncated PNG ({type(error).__name__}: {message})") from None


def decode_pngs(blobs: Sequence[bytes], shape: tuple[int, ...]) -> DecodedBatch:
    """Decode PNG blobs of the given (height, width) to uint8 grayscale, or of (height, width, 3) to
    uint8 RGB; per-item failures go to errors.

    Sizes are checked from the header before any decompression, so oversized images are refused cheaply.
    One process, one batch: ingest spreads batches over processes itself (`mnist_mlops.workers`).
    """
    return _decode_serial(blobs, shape)


def _decode_serial(blobs: Sequence[bytes], shape: tuple[int, ...]) -> DecodedBatch:
    if len(shape) not in (2, 3) or min(shape) <= 0 or shape[2:] not in ((), (3,)):
        raise ValueError(f"shape must be (height, width) or (height, width, 3), positive, got {shape}")
    if len(shape) == 3:
        return _decode_colour_serial(blobs, shape)
    height, width = (int(v) for v in shape)
    count = len(blobs)
    expected = height * (width + 1)
    images = np.empty((count, height, width), dtype=np.uint8)
    converted = np.zeros(count, dtype=bool)
    errors: dict[int, str] = {}
    fallback: list[tuple[int, PngHeader]] = []
    # Header bytes -> verdict (None: fast path, PngHeader: Pillow, str: error); MNIST batches share one.
    verdicts: dict[bytes, PngHeader | str | None] = {}
    per_image = (height + 1) * (width + 1)
    chunk_images = max(1, _CHUNK_BYTES // per_image)
    # Reused per chunk: each image's filtered rows after a row of zeros (see `_unfilter`).
    raw = np.zeros((min(count, chunk_images), height + 1, width + 1), dtype=np.uint8)
    raw_bytes = memoryview(raw.reshape(-1))
    for start in range(0, count, chunk_images):
        stop = min(start + chunk_images, count)
        not_inflated = []
        for i in range(start, stop):
            blob = blobs[i]
            try:
                if type(blob) is not bytes:
                    blob = _as_bytes(blob)
                key = blob[:_HEADER_END]
                if key in verdicts:
                    verdict = verdicts[key]
                else:
                    verdict = _verdict(key, height, width)
                    if len(verdicts) < _HEADER_CACHE_LIMIT:
                        verdicts[key] = verdict
                if verdict is None:
                    offset = (i - start) * per_image + width + 1
                    raw_bytes[offset : offset + expected] = _inflate_gray8(blob, expected)
                    continue
                if type(verdict) is str:
                    errors[i] = verdict
                else:
                    fallback.append((i, verdict))
            except ImageDecodeError as error:
                errors[i] = str(error)
            except Exception as error:  # anything unexpected is still one item's failure, not the batch's
                errors[i] = f"cannot decode ({type(error).__name__})"
            not_inflated.append(i - start)
        chunk = raw[: stop - start]
        chunk[not_inflated] = 0
        bad_filter = np.flatnonzero((chunk[:, 1:, 0] > 4).any(axis=1))
        for i in bad_filter.tolist():
            errors[start + i] = "invalid PNG row filter type (must be 0-4)"
        chunk[bad_filter] = 0
        _unfilter(chunk, images[start:stop])
    del raw_bytes, raw

    for i, header in fallback:
        try:
            images[i] = _decode_with_pillow(blobs[i], header)
            converted[i] = not (header.color_type == 0 and header.bit_depth == 8)
        except ImageDecodeError as error:
            errors[i] = str(error)
        except Exception as error:
            errors[i] = f"cannot decode ({type(error).__name__})"
    if errors:
        images[list(errors)] = 0
    return DecodedBatch(images=images, errors=dict(sorted(errors.items())), converted=converted)


def _decode_colour_serial(blobs: Sequence[bytes], shape: tuple[int, ...]) -> DecodedBatch:
    """Every image through Pillow to 8-bit RGB; the same size checks from the header first."""
    height, width, _ = shape
    images = np.zeros((len(blobs), *shape), dtype=np.uint8)
    converted = np.zeros(len(blobs), dtype=bool)
    errors: dict[int, str] = {}
    for i, blob in enumerate(blobs):
        try:
            blob = _as_bytes(blob)
            header = _sized_header(blob[:_HEADER_END], height, width)
            if type(header) is str:
                errors[i] = header
                continue
            images[i] = _decode_with_pillow(blob, header, channels=3)
            converted[i] = not (header.color_type == 2 and header.bit_depth == 8)
        except ImageDecodeError as error:
            errors[i] = str(error)
        except Exception as error:  # anything unexpected is still one item's failure, not the batch's
            errors[i] = f"cannot decode ({type(error).__name__})"
    return DecodedBatch(images=images, errors=errors, converted=converted)


def _as_bytes(blob: bytes | bytearray | memoryview) -> bytes:
    if isinstance(blob, bytes):
        return blob
    if not isinstance(blob, bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(blob).__name__}")
    return bytes(blob)


def _sized_header(header_bytes: bytes, height: int, width: int) -> PngHeader | str:
    """The header of an image of the expected size, or the reason it is not one."""
    try:
        header = read_png_header(header_bytes)
    except ImageDecodeError as error:
        return str(error)
    if (header.width, header.height) != (width, height):
        return f"wrong size {header.width}x{header.height}, expected {width}x{height}"
    return header


def _verdict(header_bytes: bytes, height: int, width: int) -> PngHeader | str | None:
    """Classify an image by its header alone: None (fast path), a PngHeader (Pillow) or an error reason."""
    header = _sized_header(header_bytes, height, width)
    if type(header) is str:
        return header
    if header.bit_depth == 8 and header.color_type == 0 and header.interlace == 0:
        return None
    return header


def png_shape(data: bytes) -> tuple[int, ...]:
    """(height, width) of a one-channel PNG (gray, gray with alpha, palette of grays), (height, width, 3)
    of a colour one (RGB, RGBA, palette with a colour), from the header and palette: nothing decoded.
    Raises ImageDecodeError for an unreadable header or one declaring more than MAX_IMAGE_PIXELS."""
    header = read_png_header(data)
    _check_pixel_count(header)
    if header.color_type in _COLOUR_TYPES or (header.color_type == 3 and _palette_has_colour(data)):
        return (header.height, header.width, 3)
    return (header.height, header.width)


def png_shapes(blobs: Sequence[bytes]) -> list[tuple[int, ...] | str]:
    """`png_shape` of each blob, or the reason it has none; blobs that share a header (and are not
    palette images, whose answer depends on the palette) share the answer, so a dataset of one shape
    costs one header check."""
    known: dict[bytes, tuple[int, ...] | str] = {}
    shapes: list[tuple[int, ...] | str] = []
    for blob in blobs:
        key = bytes(blob[:_HEADER_END])
        answer = known.get(key)
        if answer is None:
            try:
                answer = png_shape(blob)
            except ImageDecodeError as error:
                answer = str(error)
            if key[25:26] != b"\x03" and len(known) < _HEADER_CACHE_LIMIT:
                known[key] = answer
        shapes.append(answer)
    return shapes


def resize_png(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Decode a PNG of another size or channel count than `shape` and bring it to `shape` (converted to
    grayscale or RGB, resized bilinearly with Pillow): how a dataset of mixed shapes is made uniform
    when its owner asks for it."""
    header = read_png_header(data)
    _check_pixel_count(header)
    pixels = _decode_with_pillow(data, header, channels=3 if len(shape) == 3 else 1)
    if pixels.shape[:2] == tuple(shape[:2]):
        return pixels
    resized = Image.fromarray(pixels).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _check_pixel_count(header: PngHeader) -> None:
    if header.width * header.height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"declares {header.width}x{header.height} pixels, more than the {MAX_IMAGE_PIXELS} an image "
            "may have (not decoded)"
        )


def _palette_has_colour(blob: bytes) -> bool:
    """Whether any palette entry is not a gray (red, green and blue equal); PLTE precedes the data."""
    pos = _HEADER_END
    while pos + 8 <= len(blob):
        length, chunk_type = _CHUNK.unpack_from(blob, pos)
        if chunk_type == b"IDAT":
            break
        if chunk_type == b"PLTE":
            if length % 3 or pos + 8 + length > len(blob):
                raise ImageDecodeError("malformed or truncated PLTE chunk")
            entries = np.frombuffer(blob, dtype=np.uint8, count=length, offset=pos + 8).reshape(-1, 3)
            return bool((entries != entries[:, :1]).any())
        pos += 12 + length
    raise ImageDecodeError("palette image without a PLTE chunk before its data")


def encode_png(image: np.ndarray) -> bytes:
    """One uint8 image, grayscale (H, W) or RGB (H, W, 3), as PNG bytes (what clients send to the
    scoring server)."""
    buffer = BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
