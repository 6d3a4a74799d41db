"""Scoring request bodies -> a uint8 batch of the served model's image shape, or a `BadRequest` that
says what is wrong.

Framework-free, so the AML entry script, the tests and the benchmarks all exercise the same code.
Three body kinds are accepted (the `scoring_request` schema documents the JSON ones):

- ``application/json`` with ``instances``: nested integer arrays, values 0..255, each image H x W or
  H x W x 1 for a grayscale model, H x W x 3 for a colour one;
- ``application/json`` with ``images``: base64 PNG files;
- ``image/png``: one raw PNG file.

The shape is the model's (`ModelInterface.image_shape`), passed in by the scorer with the model that
answers the request. A PNG of the model's height and width is decoded to its channels (a colour PNG to
grayscale, a grayscale one to RGB); a JSON array must have the model's layout exactly.

Every check is a cheap numpy or header check done before any expensive work: PNG sizes are read from
the header before anything is inflated (a 10,000 x 10,000 "bomb" costs a 33-byte read), batch and body
sizes are bounded, and JSON pixels are shape- and range-checked as one array. Messages describe the
problem and never echo the request's bytes.

Two faster paths give the same answers as the ones they stand in for (tests/test_request_path.py):
a plain pixel array is read from the JSON text with numpy (`_plain_pixels`); other JSON is parsed by
orjson, with the standard library's verdict on anything refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import orjson

from mnist_mlops.dataset import describe_shape
from mnist_mlops.imaging import (
    ImageDecodeError,
    decode_pngs,
    png_shape,
    read_png_header,
)

MIN_BASE64_CHARS = 65_536
"""The base64 characters one PNG may always take (the `scoring_request` schema's floor)."""
BASE64_CHARS_PER_PIXEL_VALUE = 3
"""Beyond the floor, per value of the model's image: 2.25 bytes, room for stored rows and metadata."""
JSON_TYPES = ("application/json",)
PNG_TYPES = ("image/png",)


@dataclass(frozen=True)
class Limits:
    """Request bounds; both configurable on the server (MNIST_MLOPS_MAX_BATCH, ..._MAX_BODY_BYTES)."""

    max_batch: int = 256
    max_body_bytes: int = 4 * 1024 * 1024


class BadRequest(Exception):
    """A request the server refuses: HTTP status (4xx) and a message safe to return to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_body_size(length: int | None, limits: Limits) -> None:
    """413 for a body over the limit (call with Content-Length before reading, then with the real size)."""
    if length is not None and length > limits.max_body_bytes:
        raise BadRequest(413, f"request body of {length} bytes exceeds the limit of {limits.max_body_bytes}")


def max_base64_chars(image_shape: tuple[int, ...]) -> int:
    """The longest base64 PNG accepted for a model of this image shape."""
    return max(MIN_BASE64_CHARS, BASE64_CHARS_PER_PIXEL_VALUE * math.prod(image_shape))


def parse_request(
    body: bytes, content_type: str | None, limits: Limits, image_shape: tuple[int, ...]
) -> np.ndarray:
    """The images of a scoring request as uint8 (N, *image_shape); raises BadRequest (400/413/415)."""
    check_body_size(len(body), limits)
    kind = media_type(content_type)
    if kind in PNG_TYPES:
        return decode_png_batch([body], label="body", image_shape=image_shape)
    if kind not in JSON_TYPES:
        shown = kind if kind and len(kind) <= 60 and kind.isascii() and kind.isprintable() else "missing"
        raise BadRequest(
            415,
            f"unsupported Content-Type ({shown}): send application/json (instances or images) or image/png",
        )
    plain = _plain_pixels(body, limits, image_shape)
    if plain is not None:
        return plain
    try:
        return _json_images(orjson.loads(body), body, limits, image_shape)
    except (orjson.JSONDecodeError, BadRequest):
        # orjson (~4x the standard library on pixel arrays) answers what it accepts; anything refused is
        # parsed again by the standard library, whose verdict is the server's: the same messages and
        # edge cases (UTF-16 text, lone surrogates, integers beyond 64 bits, which orjson makes floats)
        return _json_images(_parse_json(body), body, limits, image_shape)


def _json_images(document: object, body: bytes, limits: Limits, image_shape: tuple[int, ...]) -> np.ndarray:
    """The images of a parsed JSON request (`body` is its text, for checks the document cannot tell)."""
    if not isinstance(document, dict):
        raise BadRequest(400, "the JSON body must be an object with 'instances' or 'images'")
    unknown = sorted(set(document) - {"schema_version", "instances", "images"})
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise BadRequest(400, f"unknown field(s) {names}: expected 'instances' or 'images'")
    if "schema_version" in document and (
        type(document["schema_version"]) is not int or document["schema_version"] != 1
    ):
        raise BadRequest(400, "schema_version must be 1")
    if ("instances" in document) == ("images" in document):
        raise BadRequest(400, "send exactly one of 'instances' (pixel arrays) or 'images' (base64 PNGs)")
    field = "instances" if "instances" in document else "images"
    batch = document[field]
    if not isinstance(batch, list) or not batch:
        raise BadRequest(400, f"'{field}' must be a non-empty array")
    if len(batch) > limits.max_batch:
        raise BadRequest(413, f"batch of {len(batch)} images exceeds the maximum of {limits.max_batch}")
    if field == "images":
        return _decode_base64_pngs(batch, image_shape)
    if b"true" in body or b"false" in body:  # JSON booleans would silently become pixels 1 and 0
        raise BadRequest(400, "instances: pixel values must be integers 0..255, not booleans")
    return _pixels(batch, image_shape)


JSON_SPACE = b" \t\r\n"
PLAIN_PREFIX = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"instances"[ \t\r\n]*:[ \t\r\n]*\Z')
PLAIN_SUFFIX = re.compile(rb"[ \t\r\n]*\}[ \t\r\n]*\Z")
ZERO, OPEN, CLOSE = ord("0"), ord("["), ord("]")
_JSON_SPACE_CODES = np.isin(np.arange(256), list(JSON_SPACE))


def _plain_pixels(body: bytes, limits: Limits, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """The images of the commonest JSON body, ``{"instances": [[[0, 12, ...], ...], ...]}`` holding
    integers 0..255 in the model's layout, read from its text with numpy (a fraction of the time of
    parsing it and converting the lists); None for any other body, which the JSON parser then answers.

    The body is taken only when it is provably that JSON: nothing but the one key around the array;
    the array made only of digits, commas, brackets and JSON whitespace, with no whitespace after a
    digit; as many numbers (runs of digits) as an (N, *image_shape) array has values (N x H x W x 1
    too, for a grayscale model), none right after a "]" or right before a "[", and exactly its
    brackets and commas, so every innermost element is one number; no number with a leading zero or
    over three digits; none over 255. Whitespace is dropped once; the digits are then read with whole-
    array numpy operations and gathers at the numbers' first and last digits."""
    start, end = body.find(b"["), body.rfind(b"]") + 1
    if start < 0 or not PLAIN_PREFIX.match(body, 0, start) or not PLAIN_SUFFIX.match(body, end):
        return None
    text = body[start:end]
    if text.translate(None, b"0123456789,[]" + JSON_SPACE):
        return None
    compact = text.translate(None, JSON_SPACE)
    if len(compact) != len(text):
        spaced = np.frombuffer(text, np.uint8)
        if np.any(((spaced[:-1] - np.uint8(ZERO)) < 10) & _is_space(spaced[1:])):  # "1 2" would read as 12
            return None
    codes = np.frombuffer(compact, np.uint8)  # starts with "[" and ends with "]"
    digits = codes - np.uint8(ZERO)  # wraps: any other character is >= 10
    digit = digits < 10
    ends = np.flatnonzero(digit[:-1] > digit[1:])  # each number's last digit
    count, remainder = divmod(len(ends), math.prod(image_shape))
    if not 0 < count <= limits.max_batch or remainder:
        return None
    starts = np.flatnonzero(digit[1:] > digit[:-1]) + 1  # and its first
    if np.any(codes[starts - 1] == CLOSE) or np.any(codes[ends + 1] == OPEN):
        return None  # a number outside an innermost array
    skeleton = compact.translate(None, b"0123456789")
    layouts = [image_shape, (*image_shape, 1)] if len(image_shape) == 2 else [image_shape]
    if not any(skeleton == _array_skeleton((count, *layout)) for layout in layouts):
        return None
    lengths = ends - starts + 1
    first = digits[starts]
    if lengths.max() > 3 or np.any((first == 0) & (lengths > 1)):
        return None
    values = digits[ends].astype(np.uint16)
    values += (lengths > 1) * (10 * digits[ends - 1].astype(np.uint16))
    values += (lengths > 2) * (100 * first.astype(np.uint16))
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(count, *image_shape)


def _is_space(codes: np.ndarray) -> np.ndarray:
    """Which of the character codes are JSON whitespace."""
    return _JSON_SPACE_CODES[codes]


def _array_skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of a JSON array of `shape`, without its numbers."""
    skeleton = b""
    for size in reversed(shape):
        skeleton = b"[" + b",".join([skeleton] * size) + b"]"
    return skeleton


def _parse_json(body: bytes) -> object:
    def refuse_constant(name: str) -> None:
        raise BadRequest(400, f"malformed JSON: {name} is not a valid JSON number")

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except BadRequest:
        raise
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed JSON: the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise BadRequest(
            400, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise BadRequest(400, "malformed JSON: nested too deeply") from None


def _pixels(instances: list, image_shape: tuple[int, ...]) -> np.ndarray:
    """The whole batch checked as one array; when it is not one (ragged, or images of another shape),
    image by image, so the message names the first wrong image."""
    batch = _array(instances)
    if batch is not None and _in_model_layout(batch, image_shape) is not None:
        return _checked(batch, "instances", image_shape)
    return np.concatenate(
        [
            _checked(_array([image]), f"instances[{index}]", image_shape)
            for index, image in enumerate(instances)
        ]
    )


def _array(nested: list) -> np.ndarray | None:
    """`nested` as one numpy array, or None when it is ragged or holds values numpy keeps as objects."""
    try:
        array = np.asarray(nested)
    except (ValueError, OverflowError):
        return None
    return None if array.dtype == object else array


def _in_model_layout(batch: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """The batch as (N, *image_shape), a grayscale model also taking H x W x 1; None for another shape."""
    if len(image_shape) == 2 and batch.ndim == 4 and batch.shape[-1] == 1:
        batch = batch[..., 0]
    return batch if batch.shape[1:] == image_shape else None


def _checked(batch: np.ndarray | None, where: str, image_shape: tuple[int, ...]) -> np.ndarray:
    if batch is None:
        raise BadRequest(
            400,
            f"{where}: not a {describe_shape(image_shape)} array of integers 0..255"
            " (rows of different lengths, nulls, objects or huge numbers)",
        )
    shaped = _in_model_layout(batch, image_shape)
    if shaped is None:
        raise BadRequest(
            400, f"{where}: {_describe_array(batch.shape[1:])}, the model takes {describe_shape(image_shape)}"
        )
    if shaped.dtype.kind not in "iu":
        kind = {"f": "floating-point numbers", "U": "strings", "b": "booleans"}.get(
            shaped.dtype.kind, "values"
        )
        raise BadRequest(400, f"{where}: pixel values must be integers 0..255, got {kind}")
    if shaped.size and (shaped.min() < 0 or shaped.max() > 255):
        raise BadRequest(400, f"{where}: pixel values must be integers in 0..255")
    return shaped.astype(np.uint8)


def _describe_array(shape: tuple[int, ...]) -> str:
    if len(shape) in (2, 3):
        return describe_shape(shape)
    return f"an array of shape {shape}" if shape else "a single number"


def _decode_base64_pngs(encoded: list, image_shape: tuple[int, ...]) -> np.ndarray:
    limit = max_base64_chars(image_shape)
    blobs = []
    for index, item in enumerate(encoded):
        if not isinstance(item, str):
            raise BadRequest(400, f"images[{index}]: expected a base64 string")
        if len(item) > limit:
            raise BadRequest(413, f"images[{index}]: {len(item)} base64 characters exceed {limit}")
        try:
            blobs.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"images[{index}]: not valid base64") from None
    return decode_png_batch(blobs, label="images", image_shape=image_shape)


def decode_png_batch(blobs: list[bytes], *, label: str, image_shape: tuple[int, ...]) -> np.ndarray:
    """Decode PNGs of the model's height and width to its image shape; the first failure becomes a 400
    naming the item and the reason."""
    decoded = decode_pngs(blobs, image_shape)
    if decoded.errors:
        index, reason = next(iter(decoded.errors.items()))
        where = label if len(blobs) == 1 and label == "body" else f"{label}[{index}]"
        raise BadRequest(400, f"{where}: {_png_refusal(blobs[index], reason, image_shape)}")
    return decoded.images


def _png_refusal(blob: bytes, reason: str, image_shape: tuple[int, ...]) -> str:
    """`decode_pngs`' reason, or for an image of another size, its shape and the model's."""
    try:
        header = read_png_header(blob)
    except ImageDecodeError:
        return reason
    if (header.height, header.width) == image_shape[:2]:
        return reason
    try:
        got = describe_shape(png_shape(blob))
    except ImageDecodeError:  # declares more pixels than any image may have: read no further
        got = f"{header.height}x{header.width}"
    return f"{got} PNG, the model takes {describe_shape(image_shape)}"
