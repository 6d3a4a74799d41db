"""Tests for mnist_mlops.imaging: exact pixels on the fast path, Pillow parity on the fallback, and safety."""

from __future__ import annotations

import io
import tarfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_mlops import imaging
from mnist_mlops.dataset import MNIST_IMAGE_SHAPE
from mnist_mlops.imaging import DecodedBatch, ImageDecodeError, PngHeader, decode_pngs, read_png_header
from tests.pngs import SIGNATURE, chunk, encode_png, ihdr, png_bytes


def pillow_png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def pillow_gray(blob: bytes) -> np.ndarray:
    """What decode_pngs should return for a fallback image: Pillow's L, or the high byte of 16-bit gray."""
    with Image.open(io.BytesIO(blob)) as image:
        if image.mode.startswith("I"):
            return (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.asarray(image.convert("L"))


def digit_like(rng: np.random.Generator, count: int, size: int = 28) -> np.ndarray:
    """Mostly-black images with bright blurry strokes, so all filter types and byte values occur."""
    images = np.zeros((count, size, size), dtype=np.float64)
    for _ in range(6):
        ys = rng.integers(4, size - 4, count)[:, None, None]
        xs = rng.integers(4, size - 4, count)[:, None, None]
        yy, xx = np.mgrid[0:size, 0:size]
        images += 255 * np.exp(-((yy - ys) ** 2 + (xx - xs) ** 2) / rng.uniform(2, 8, (count, 1, 1)))
    return np.clip(images, 0, 255).astype(np.uint8)


def assert_decoded(batch: DecodedBatch, expected: np.ndarray) -> None:
    assert batch.errors == {}
    assert batch.images.dtype == np.uint8
    np.testing.assert_array_equal(batch.images, expected)


# --- the fast path: exact pixels ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_every_filter_type_decodes_exactly(kind: int) -> None:
    rng = np.random.default_rng(kind)
    pixels = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    batch = decode_pngs([encode_png(p, filters=kind) for p in pixels], MNIST_IMAGE_SHAPE)
    assert_decoded(batch, pixels)
    assert not batch.converted.any()


def test_mixed_per_row_filters_decode_exactly() -> None:
    rng = np.random.default_rng(7)
    pixels = np.concatenate([rng.integers(0, 256, (150, 28, 28), dtype=np.uint8), digit_like(rng, 150)])
    blobs = [encode_png(p, filters=rng.integers(0, 5, 28).tolist()) for p in pixels]
    assert_decoded(decode_pngs(blobs, MNIST_IMAGE_SHAPE), pixels)


def test_extreme_values_and_non_square_shape() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.choice(np.array([0, 1, 127, 128, 254, 255], dtype=np.uint8), (60, 5, 9))
    blobs = [encode_png(p, filters=rng.integers(0, 5, 5).tolist()) for p in pixels]
    assert_decoded(decode_pngs(blobs, shape=(5, 9)), pixels)


def test_ancillary_chunks_and_split_idat_are_fine() -> None:
    pixels = digit_like(np.random.default_rng(1), 1)[0]
    blob = encode_png(pixels, filters=[4, 3], extra=[chunk(b"tEXt", b"Comment\x00hi")], idat_parts=5)
    assert_decoded(decode_pngs([blob], MNIST_IMAGE_SHAPE), pixels[None])


def test_batches_larger_than_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "_CHUNK_BYTES", 64 * 29 * 29)  # 64 MNIST images a chunk
    rng = np.random.default_rng(5)
    pixels = digit_like(rng, 200)
    blobs: list[object] = [encode_png(p, filters=rng.integers(0, 5, 28).tolist()) for p in pixels]
    broken = {3: b"", 64: b"junk", 130: blobs[130][:100], 199: None}
    for index, blob in broken.items():
        blobs[index] = blob
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)  # type: ignore[arg-type]
    assert sorted(batch.errors) == sorted(broken)
    pixels[list(broken)] = 0
    np.testing.assert_array_equal(batch.images, pixels)


def test_bytes_like_inputs_are_accepted() -> None:
    pixels = digit_like(np.random.default_rng(2), 2)
    blobs = [encode_png(p, filters=4) for p in pixels]
    assert_decoded(decode_pngs([bytearray(blobs[0]), memoryview(blobs[1])], MNIST_IMAGE_SHAPE), pixels)


def test_empty_input() -> None:
    batch = decode_pngs([], MNIST_IMAGE_SHAPE)
    assert batch.images.shape == (0, 28, 28) and batch.images.dtype == np.uint8
    assert batch.converted.shape == (0,) and batch.converted.dtype == bool
    assert batch.errors == {}


# --- the Pillow fallback ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA", "1"])
def test_pillow_saved_modes_match_pillow(mode: str) -> None:
    rng = np.random.default_rng(11)
    blobs = []
    for gray in digit_like(rng, 30):
        base = Image.fromarray(gray)
        if mode == "I;16":
            image = Image.fromarray(
                gray.astype(np.uint16) * 257 + rng.integers(0, 257, gray.shape, np.uint16)
            )
        elif mode == "P":
            image = Image.fromarray(np.dstack([gray, 255 - gray, gray // 2])).quantize(64)
        elif mode in ("RGB", "RGBA"):
            image = Image.fromarray(np.dstack([gray, rng.integers(0, 256, (28, 28, 3), np.uint8)])[:, :, :3])
            image = image.convert(mode)
        else:
            image = base.convert(mode)
        blobs.append(pillow_png(image))
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert_decoded(batch, np.stack([pillow_gray(b) for b in blobs]))
    assert batch.converted.tolist() == [mode != "L"] * len(blobs)


def test_sixteen_bit_gray_keeps_the_high_byte() -> None:
    values = np.arange(784, dtype=np.uint16).reshape(28, 28) * 83
    batch = decode_pngs([pillow_png(Image.fromarray(values))], MNIST_IMAGE_SHAPE)
    assert_decoded(batch, (values >> 8).astype(np.uint8)[None])
    assert batch.converted.tolist() == [True]


def test_palette_with_transparency_and_gray_with_alpha() -> None:
    gray = digit_like(np.random.default_rng(4), 1)[0]
    palette_image = Image.fromarray(gray).convert("P")
    blobs = [pillow_png(palette_image, transparency=0), pillow_png(Image.fromarray(gray).convert("LA"))]
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert_decoded(batch, np.stack([pillow_gray(b) for b in blobs]))
    assert batch.converted.all()


def test_interlaced_images_decode_through_pillow() -> None:
    rng = np.random.default_rng(9)
    gray = digit_like(rng, 4)
    rgb = rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    blobs = [encode_png(g, filters=[0, 1, 2, 3, 4], interlace=True) for g in gray]
    blobs += [encode_png(c, filters=4, color_type=2, interlace=True) for c in rgb]
    assert read_png_header(blobs[0]).interlace == 1
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    expected_rgb = np.stack([np.asarray(Image.fromarray(c).convert("L")) for c in rgb])
    assert_decoded(batch, np.concatenate([gray, expected_rgb]))
    assert batch.converted.tolist() == [False] * 4 + [True] * 4


# --- shapes, colour and resizing ---------------------------------------------------------------------------


def test_png_shapes_count_channels_by_mode_and_palette_colour() -> None:
    gray = digit_like(np.random.default_rng(5), 1)[0]
    colour = np.dstack([gray, 255 - gray, gray // 2])
    blobs = {
        "L": pillow_png(Image.fromarray(gray)),
        "LA": pillow_png(Image.fromarray(gray).convert("LA")),
        "I;16": pillow_png(Image.fromarray(gray.astype(np.uint16) * 257)),
        "P of grays": pillow_png(Image.fromarray(gray).convert("P")),
        "RGB": pillow_png(Image.fromarray(colour)),
        "RGBA": pillow_png(Image.fromarray(colour).convert("RGBA")),
        "P of colours": pillow_png(Image.fromarray(colour).quantize(16)),
        "other size": pillow_png(Image.fromarray(gray[:20, :24])),
    }
    shapes = dict(zip(blobs, imaging.png_shapes(list(blobs.values())), strict=True))
    assert shapes == {
        "L": (28, 28),
        "LA": (28, 28),
        "I;16": (28, 28),
        "P of grays": (28, 28),
        "RGB": (28, 28, 3),
        "RGBA": (28, 28, 3),
        "P of colours": (28, 28, 3),
        "other size": (20, 24),
    }
    assert imaging.png_shapes([b"GIF89a", blobs["L"]]) == ["not a PNG file", (28, 28)]


def test_an_image_larger_than_the_limit_has_no_shape_and_is_not_resized() -> None:
    header = ihdr(5000, 4000)
    bomb = png_bytes(header, zlib.compress(b"\0" * 10))
    assert imaging.png_shapes([bomb]) == [
        "declares 5000x4000 pixels, more than the 16777216 an image may have (not decoded)"
    ]
    with pytest.raises(ImageDecodeError, match="more than the 16777216"):
        imaging.resize_png(bomb, (28, 28))


def test_colour_batches_decode_to_rgb_like_pillow() -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (3, 12, 10, 3), dtype=np.uint8)
    gray = digit_like(rng, 1, size=12)[0][:, :10]
    blobs = [pillow_png(Image.fromarray(image)) for image in rgb]
    blobs += [pillow_png(Image.fromarray(rgb[0]).convert("RGBA")), pillow_png(Image.fromarray(gray))]
    blobs.append(pillow_png(Image.fromarray(rgb[0][:8])))
    batch = decode_pngs(blobs, (12, 10, 3))
    assert batch.images.shape == (6, 12, 10, 3)
    np.testing.assert_array_equal(batch.images[:4], np.concatenate([rgb, rgb[:1]]))
    np.testing.assert_array_equal(batch.images[4], np.repeat(gray[..., None], 3, axis=2))
    assert batch.converted.tolist() == [False, False, False, True, True, False]
    assert batch.errors == {5: "wrong size 10x8, expected 10x12"}


def test_resize_png_converts_and_resizes_bilinearly() -> None:
    colour = Image.fromarray(np.random.default_rng(7).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    blob = pillow_png(colour)

    def resized(image: Image.Image) -> np.ndarray:
        return np.asarray(image.resize((10, 15), Image.Resampling.BILINEAR))

    np.testing.assert_array_equal(imaging.resize_png(blob, (15, 10, 3)), resized(colour))
    np.testing.assert_array_equal(imaging.resize_png(blob, (15, 10)), resized(colour.convert("L")))


# --- failures: reported per item, never decoded -----------------------------------------------------------


def good_png() -> bytes:
    return encode_png(digit_like(np.random.default_rng(0), 1)[0], filters=[0, 1, 2, 3, 4])


def test_truncated_files_are_errors() -> None:
    blob = good_png()
    cuts = [0, 1, 8, 20, 32, 33, 40, len(blob) // 2, len(blob) - 12, len(blob) - 1]
    batch = decode_pngs([blob[:cut] for cut in cuts] + [blob], MNIST_IMAGE_SHAPE)
    assert sorted(batch.errors) == list(range(len(cuts)))
    assert batch.errors[0].startswith("empty input")
    assert batch.errors[1] == batch.errors[2] == batch.errors[3] == "truncated PNG header"
    assert "truncated" in batch.errors[len(cuts) - 2] and "truncated" in batch.errors[len(cuts) - 1]
    assert not batch.images[: len(cuts)].any() and batch.images[len(cuts)].any()


def test_truncated_fallback_image_is_an_error() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    blob = pillow_png(Image.fromarray(rgb))
    batch = decode_pngs([blob[: len(blob) // 2], blob[:-12]], MNIST_IMAGE_SHAPE)
    assert batch.errors == {
        0: "truncated PNG (IDAT chunk runs past the end)",
        1: "truncated PNG (no IEND chunk)",
    }
    cut_inside_the_stream = png_bytes(blob[8:33], zlib.compress(bytes(28 * 85))[:-6])
    assert "corrupt or truncated PNG" in decode_pngs([cut_inside_the_stream], MNIST_IMAGE_SHAPE).errors[0]


def test_bad_crc_is_an_error() -> None:
    blob = bytearray(good_png())
    idat_crc = len(blob) - 12 - 1  # last byte of the IDAT chunk's CRC
    bad_idat = bytes(blob[:idat_crc]) + bytes([blob[idat_crc] ^ 1]) + bytes(blob[idat_crc + 1 :])
    bad_ihdr = bytes(blob[:29]) + bytes([blob[29] ^ 1]) + bytes(blob[30:])
    batch = decode_pngs([bad_idat, bad_ihdr], MNIST_IMAGE_SHAPE)
    assert batch.errors == {0: "bad CRC in IDAT chunk", 1: "bad CRC in IHDR chunk"}


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty input"),
        (b"GIF89a" + bytes(100), "not a PNG file"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "not a PNG file"),
        (SIGNATURE[:5], "truncated PNG header"),
        (SIGNATURE + chunk(b"IDAT", bytes(13)), "first chunk is not IHDR"),
        (SIGNATURE + chunk(b"IHDR", bytes(14)), "IHDR chunk has length 14"),
        (SIGNATURE + ihdr(28, 28, bit_depth=3), "invalid bit depth 3 for color type 0"),
        (SIGNATURE + ihdr(0, 28), "invalid image size 0x28"),
        (SIGNATURE + ihdr(28, 28, interlace=2), "unknown interlace method 2"),
    ],
)
def test_read_png_header_rejects_garbage(blob: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        read_png_header(blob)
    assert decode_pngs([blob], MNIST_IMAGE_SHAPE).errors[0].startswith(reason)


def test_read_png_header_on_random_bytes_and_non_bytes() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 7, 8, 33, 100, 1000):
        with pytest.raises(ImageDecodeError):
            read_png_header(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.raises(TypeError):
        read_png_header(12345)  # type: ignore[arg-type]
    assert "TypeError" in decode_pngs([12345], MNIST_IMAGE_SHAPE).errors[0]  # type: ignore[list-item]


def test_read_png_header_fields() -> None:
    blob = pillow_png(Image.new("RGBA", (30, 20)))
    assert read_png_header(blob) == PngHeader(width=30, height=20, bit_depth=8, color_type=6, interlace=0)


def test_wrong_size_is_refused_before_decoding() -> None:
    rgb32 = pillow_png(Image.new("RGB", (32, 32)))
    gray = encode_png(np.zeros((28, 32), np.uint8))
    batch = decode_pngs([gray, rgb32, good_png()], MNIST_IMAGE_SHAPE)
    assert batch.errors == {0: "wrong size 32x28, expected 28x28", 1: "wrong size 32x32, expected 28x28"}


def test_image_data_of_the_wrong_length_is_an_error() -> None:
    header = ihdr(28, 28)
    too_short = png_bytes(header, zlib.compress(bytes(28 * 29 - 1)))
    too_long = png_bytes(header, zlib.compress(bytes(28 * 29 + 1)))
    cut_stream = png_bytes(header, zlib.compress(bytes(28 * 29))[:-3])
    not_zlib = png_bytes(header, b"this is not deflate data")
    batch = decode_pngs([too_short, too_long, cut_stream, not_zlib], MNIST_IMAGE_SHAPE)
    assert "less than the 812 bytes" in batch.errors[0]
    assert "more than the 812 bytes" in batch.errors[1]
    assert "truncated image data" in batch.errors[2]
    assert "corrupt image data" in batch.errors[3]


def test_bad_filter_type_and_unknown_critical_chunk_are_errors() -> None:
    pixels = np.zeros((28, 28), np.uint8)
    bad_filter = encode_png(pixels, filters=[0, 5])
    unknown_critical = encode_png(pixels, extra=[chunk(b"ABCD", b"x")])
    batch = decode_pngs([bad_filter, good_png(), unknown_critical], MNIST_IMAGE_SHAPE)
    assert batch.errors == {
        0: "invalid PNG row filter type (must be 0-4)",
        2: "unknown critical chunk ABCD",
    }
    assert not batch.images[0].any()


def test_error_messages_never_echo_the_input() -> None:
    marker = b"SECRETSECRETSECRET"
    rgb = pillow_png(Image.new("RGB", (28, 28)))
    corrupt_rgb = png_bytes(rgb[8:33], marker * 4)  # valid header, IDAT that is not zlib
    blobs = [marker, SIGNATURE + marker * 3, corrupt_rgb, png_bytes(ihdr(28, 28), marker)]
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert sorted(batch.errors) == [0, 1, 2, 3]
    assert not any("SECRET" in reason for reason in batch.errors.values())


def stream_of_zeros(total: int) -> bytes:
    """A zlib stream of `total` zero bytes, built without holding them all in memory."""
    compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    parts = [
        compressor.compress(block[: min(len(block), total - done)]) for done in range(0, total, len(block))
    ]
    return b"".join(parts) + compressor.flush()


def test_png_bomb_is_refused_by_its_declared_size() -> None:
    stream = stream_of_zeros(10_000 * 10_001)  # 100 MB of image data in ~100 KB
    bomb = png_bytes(ihdr(10_000, 10_000), stream)
    assert len(bomb) < 1_000_000
    assert read_png_header(bomb) == PngHeader(10_000, 10_000, 8, 0, 0)
    tracemalloc.start()
    started = time.perf_counter()
    batch = decode_pngs([bomb, good_png()], MNIST_IMAGE_SHAPE)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert batch.errors == {0: "wrong size 10000x10000, expected 28x28"}
    assert elapsed < 0.5 and peak < 2_000_000


def test_right_sized_bomb_is_cut_off_at_one_image() -> None:
    bomb = png_bytes(ihdr(28, 28), stream_of_zeros(50_000_000))
    tracemalloc.start()
    batch = decode_pngs([bomb], MNIST_IMAGE_SHAPE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "more than the 812 bytes" in batch.errors[0]
    assert peak < 2_000_000


# --- real-data-like batches ---------------------------------------------------------------------------------


def test_thousands_of_digit_like_images_match_pillow() -> None:
    rng = np.random.default_rng(2024)
    pixels = digit_like(rng, 3000)
    blobs = [pillow_png(Image.fromarray(p), optimize=bool(i % 2)) for i, p in enumerate(pixels[:1500])]
    blobs += [encode_png(p, filters=rng.integers(0, 5, 28).tolist()) for p in pixels[1500:]]
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert_decoded(batch, pixels)
    np.testing.assert_array_equal(
        batch.images, np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs])
    )


def test_real_mnist_pngs_match_pillow(shared_tarball: Path) -> None:
    blobs = []
    with tarfile.open(shared_tarball) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".png"):
                blobs.append(archive.extractfile(member).read())  # type: ignore[union-attr]
                if len(blobs) == 5000:
                    break
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert_decoded(batch, np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs]))
    assert not batch.converted.any()
