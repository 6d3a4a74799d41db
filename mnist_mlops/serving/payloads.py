"""Scoring request bodies -> a uint8 (N, 28, 28) batch, or a `BadRequest` that says what is wrong.

Framework-free, so the AML entry script, the tests and the benchmarks all exercise the same code.
Three body kinds are accepted (the `scoring_request` schema documents the JSON ones):

- ``application/json`` with ``instances``: nested integer arrays, 28x28 or 28x28x1, values 0..255;
- ``application/json`` with ``images``: base64 PNG files;
- ``image/png``: one raw PNG file.

Every check is a cheap numpy or header check done before any expensive work: PNG sizes are read from
the header before anything is inflated (a 10,000 x 10,000 "bomb" costs a 33-byte read), batch and body
sizes are bounded, and JSON pixels are shape- and range-checked as one array. Messages describe the
problem and never echo the request's bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from mnist_mlops.imaging import decode_pngs

IMAGE_SHAPE = (28, 28)
MAX_BASE64_CHARS = 65_536  # the scoring_request schema's limit for one encoded PNG
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


def parse_request(body: bytes, content_type: str | None, limits: Limits) -> np.ndarray:
    """The images of a scoring request as uint8 (N, 28, 28); raises BadRequest (400/413/415)."""
    check_body_size(len(body), limits)
    kind = media_type(content_type)
    if kind in PNG_TYPES:
        return decode_png_batch([body], label="body")
    if kind not in JSON_TYPES:
        shown = kind if kind and len(kind) <= 60 and kind.isascii() and kind.isprintable() else "missing"
        raise BadRequest(
            415,
            f"unsupported Content-Type ({shown}): send application/json (instances or images) or image/png",
        )
    document = _parse_json(body)
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
        return _decode_base64_pngs(batch)
    if b"true" in body or b"false" in body:  # JSON booleans would silently become pixels 1 and 0
        raise BadRequest(400, "instances: pixel values must be integers 0..255, not booleans")
    return _pixels(batch)


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


def _pixels(instances: list) -> np.ndarray:
    try:
        array = np.asarray(instances)
    except (ValueError, OverflowError):
        array = None
    if array is None or array.dtype == object:
        raise BadRequest(400, "instances: every image must be a 28x28 (or 28x28x1) array of integers")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape[1:] != IMAGE_SHAPE:
        raise BadRequest(
            400, f"instances: expected images of 28x28 or 28x28x1, got shape {tuple(array.shape[1:])}"
        )
    if array.dtype.kind not in "iu":
        kind = {"f": "floating-point numbers", "U": "strings", "b": "booleans"}.get(
            array.dtype.kind, "values"
        )
        raise BadRequest(400, f"instances: pixel values must be integers 0..255, got {kind}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise BadRequest(400, "instances: pixel values must be integers in 0..255")
    return array.astype(np.uint8)


def _decode_base64_pngs(encoded: list) -> np.ndarray:
    blobs = []
    for index, item in enumerate(encoded):
        if not isinstance(item, str):
            raise BadRequest(400, f"images[{index}]: expected a base64 string")
        if len(item) > MAX_BASE64_CHARS:
            raise BadRequest(413, f"images[{index}]: {len(item)} base64 characters exceed {MAX_BASE64_CHARS}")
        try:
            blobs.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"images[{index}]: not valid base64") from None
    return decode_png_batch(blobs, label="images")


def decode_png_batch(blobs: list[bytes], *, label: str) -> np.ndarray:
    """Decode PNGs that must be 28x28; the first failure becomes a 400 naming the item and the reason."""
    decoded = decode_pngs(blobs, IMAGE_SHAPE)
    if decoded.errors:
        index, reason = next(iter(decoded.errors.items()))
        where = label if len(blobs) == 1 and label == "body" else f"{label}[{index}]"
        raise BadRequest(400, f"{where}: {reason}")
    return decoded.images
