"""A tiny PNG encoder for tests: chunks, headers, row filters and Adam7 written by hand, so a test can
make any PNG, valid or damaged, that the decoders must read or refuse."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk with a correct CRC unless `crc` overrides it."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def ihdr(width: int, height: int, bit_depth: int = 8, color_type: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace))


def png_bytes(header: bytes, stream: bytes, extra: Sequence[bytes] = (), idat_parts: int = 1) -> bytes:
    """Assemble signature, IHDR, extra chunks, the zlib stream split over IDAT chunks, and IEND."""
    step = -(-len(stream) // idat_parts)
    idats = b"".join(chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    return SIGNATURE + header + b"".join(extra) + idats + chunk(b"IEND", b"")


def filter_rows(rows: np.ndarray, filters: Sequence[int], bpp: int) -> bytes:
    """Apply PNG filter type filters[r] to each row of `rows` (uint8, (n, row_bytes)); 5+ is written raw."""
    out = bytearray()
    previous = np.zeros(rows.shape[1], dtype=np.int32)
    for row, kind in zip(rows.astype(np.int32), filters, strict=True):
        a = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        b = previous
        c = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
        if kind == 1:
            predictor = a
        elif kind == 2:
            predictor = b
        elif kind == 3:
            predictor = (a + b) // 2
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        else:
            predictor = np.zeros_like(row)
        out.append(kind)
        out += ((row - predictor) % 256).astype(np.uint8).tobytes()
        previous = row
    return bytes(out)


def encode_png(
    pixels: np.ndarray,
    filters: int | Sequence[int] = 0,
    color_type: int = 0,
    interlace: bool = False,
    extra: Sequence[bytes] = (),
    idat_parts: int = 1,
    bit_depth: int = 8,
) -> bytes:
    """Encode pixels ((h, w) or (h, w, channels), samples below 2**bit_depth) with the given per-row
    filter types, or Adam7."""
    pixels = pixels if pixels.ndim == 3 else pixels[:, :, None]
    height, width, channels = pixels.shape

    def scanlines(image: np.ndarray) -> bytes:
        count = image.shape[0]
        kinds = (
            [filters] * count
            if isinstance(filters, int)
            else [filters[i % len(filters)] for i in range(count)]
        )
        rows = pack_samples(image.reshape(count, -1), bit_depth)
        return filter_rows(rows, kinds, max(1, channels * bit_depth // 8))

    if interlace:
        passes = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
        raw = b"".join(scanlines(p) for p in passes if p.size)
    else:
        raw = scanlines(pixels)
    header = ihdr(width, height, bit_depth, color_type, int(interlace))
    return png_bytes(header, zlib.compress(raw), extra, idat_parts)


def pack_samples(rows: np.ndarray, bit_depth: int) -> np.ndarray:
    """Rows of samples (n, samples) as PNG row bytes: 16-bit big-endian, 1/2/4-bit packed MSB first."""
    if bit_depth == 8:
        return rows.astype(np.uint8)
    if bit_depth == 16:
        return rows.astype(">u2").view(np.uint8).reshape(len(rows), -1)
    bits = (rows[:, :, None].astype(np.uint8) >> np.arange(bit_depth - 1, -1, -1, dtype=np.uint8)) & 1
    return np.packbits(bits.reshape(len(rows), -1), axis=1)
