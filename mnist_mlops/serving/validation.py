"""Infra validation of a live scoring server: canary requests and a catalogue of invalid requests.

Used by deploy before production moves (TFX's InfraValidator idea: the model must load and answer in
the real serving stack, not only in the training process) and by `benchmarks/bad_input.py`. Each
invalid request names the status it must get; anything else, a 5xx above all, fails validation.
Canaries end with one JSON batch of all of them, so `canary_capacity` bounds how many there may be.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from mnist_mlops.dataset import listed
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import PNG_SIGNATURE, encode_png
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.server import ScoringClient

JSON_INSTANCES_ENVELOPE = len('{"instances": []}')


@dataclass(frozen=True)
class InvalidRequest:
    kind: str
    body: bytes
    content_type: str
    expected_status: int
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def png_bomb(side: int = 10_000) -> bytes:
    """A valid grayscale PNG of side x side black pixels: ~100 KB that inflate to side^2 bytes."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def invalid_requests(sample: np.ndarray, limits: Limits, key: str | None) -> list[InvalidRequest]:
    """One request of every malformed kind, built around a valid `sample` image of the served model's
    shape (H x W grayscale or H x W x 3 colour)."""
    png = encode_png(sample)
    pixels = sample.astype(int).tolist()
    filled = lambda value: np.full(sample.shape, value, dtype=object).tolist()  # noqa: E731
    as_json = lambda document: json.dumps(document).encode()  # noqa: E731
    encoded = base64.b64encode(png).decode()
    height, width = sample.shape[:2]
    requests = [
        InvalidRequest("malformed_json", b'{"instances": [[1, 2', "application/json", 400),
        InvalidRequest("empty_body", b"", "application/json", 400),
        InvalidRequest("not_an_object", b"[1, 2, 3]", "application/json", 400),
        InvalidRequest(
            "both_fields", as_json({"instances": [pixels], "images": [encoded]}), "application/json", 400
        ),
        InvalidRequest("wrong_shape", as_json({"instances": [pixels[:-1]]}), "application/json", 400),
        InvalidRequest(
            "ragged_rows", as_json({"instances": [[*pixels[:-1], pixels[-1][:-1]]]}), "application/json", 400
        ),
        InvalidRequest("float_pixels", as_json({"instances": [filled(0.5)]}), "application/json", 400),
        InvalidRequest("nan_pixels", b'{"instances": [[[NaN, 0], [0, 0]]]}', "application/json", 400),
        InvalidRequest("out_of_range", as_json({"instances": [filled(300)]}), "application/json", 400),
        InvalidRequest("negative_pixels", as_json({"instances": [filled(-1)]}), "application/json", 400),
        InvalidRequest("string_pixels", as_json({"instances": [filled("0")]}), "application/json", 400),
        InvalidRequest("boolean_pixels", as_json({"instances": [filled(True)]}), "application/json", 400),
        InvalidRequest("huge_integer", as_json({"instances": [filled(10**40)]}), "application/json", 400),
        InvalidRequest("deep_nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        InvalidRequest("bad_base64", as_json({"images": ["iVBORw0KGgo%%%%"]}), "application/json", 400),
        InvalidRequest(
            "base64_not_png",
            as_json({"images": [base64.b64encode(b"GIF89a" * 10).decode()]}),
            "application/json",
            400,
        ),
        InvalidRequest("not_an_image", b"this is not a PNG file at all", "image/png", 400),
        InvalidRequest("truncated_png", png[: len(png) // 2], "image/png", 400),
        InvalidRequest(
            "oversized_image", encode_png(np.zeros((2 * height, 2 * width), np.uint8)), "image/png", 400
        ),
        InvalidRequest("png_bomb", png_bomb(), "image/png", 400),
        InvalidRequest("unsupported_type", png, "image/jpeg", 415),
        InvalidRequest("missing_type", png, "", 415),
        InvalidRequest(
            "batch_over_max", as_json({"images": [encoded] * (limits.max_batch + 1)}), "application/json", 413
        ),
        InvalidRequest("body_over_limit", b" " * (limits.max_body_bytes + 1), "application/json", 413),
        InvalidRequest("wrong_method", b"", "application/json", 405, method="GET"),
    ]
    if key:
        requests += [
            InvalidRequest("missing_key", png, "image/png", 401, headers={"Authorization": ""}),
            InvalidRequest(
                "wrong_key", png, "image/png", 401, headers={"Authorization": "Bearer " + "x" * 43}
            ),
        ]
    return requests


def json_image_bytes(image_shape: tuple[int, ...]) -> int:
    """The longest one image can be as nested JSON arrays the way `json.dumps` writes them: every value
    three digits ("255"), lists in brackets, ", " between items."""
    size = len("255")
    for side in reversed(image_shape):
        size = side * size + len(", ") * (side - 1) + len("[]")
    return size


def canary_capacity(image_shape: tuple[int, ...], limits: Limits) -> int:
    """The most images of `image_shape` one JSON `instances` request can carry within the server's
    `limits`: no more than max_batch, and a body under max_body_bytes even if every pixel value takes
    three digits (MNIST's 28x28 images: max_batch; 64x64x3 images: 60)."""
    per_image = json_image_bytes(image_shape) + len(", ")
    return min(limits.max_batch, (limits.max_body_bytes - JSON_INSTANCES_ENVELOPE) // per_image)


def check_canary_classes(
    expected_classes: Sequence[int], image_count: int, classes: Sequence[str], source: str
) -> None:
    """Refuse expectations no answer could meet: one class index per canary image, each one of the
    model's `classes`."""
    if len(expected_classes) != image_count or not all(
        isinstance(value, int | np.integer) and not isinstance(value, bool) for value in expected_classes
    ):
        raise UserInputError(
            f"{source}: one integer class index per canary image expected ({image_count} images),"
            f" got {len(expected_classes)} values"
        )
    unknown = sorted({int(value) for value in expected_classes} - set(range(len(classes))))
    if unknown:
        raise UserInputError(
            f"{source}: class indices {listed([str(value) for value in unknown])} expected; the model"
            f" answers {len(classes)} classes, indices 0 to {len(classes) - 1} ({listed(classes)})"
        )


def _answers(predictions: list[dict], expected: list[int], classes: Sequence[str]) -> bool:
    """Whether `predictions` name the `expected` classes, by index and by name, one probability per class."""
    return len(predictions) == len(expected) and all(
        (prediction.get("class"), prediction.get("label"), len(prediction.get("probabilities", ())))
        == (wanted, classes[wanted], len(classes))
        for prediction, wanted in zip(predictions, expected, strict=True)
    )


def send_invalid(client: ScoringClient, request: InvalidRequest) -> int:
    headers = {"Content-Type": request.content_type, **request.headers}
    if client.key and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {client.key}"
    if not headers["Content-Type"]:
        del headers["Content-Type"]
    if headers.get("Authorization") == "":
        del headers["Authorization"]
    status, _ = client.request(request.method, "/score", request.body, headers)
    return status


def infra_validate(
    client: ScoringClient,
    images: np.ndarray,
    expected_classes: np.ndarray,
    *,
    classes: Sequence[str],
    model_version: str,
    limits: Limits,
    max_p99_ms: float,
    log: Callable[[str], None] = print,
) -> dict:
    """Canary (one PNG per request, then one JSON batch) and invalid requests; the deployment_record block.

    A canary answer is as expected when it comes from `model_version` and names the expected class by
    index and by name (`classes`, the model's), with one probability per class. The batch request holds
    every canary image: at most `canary_capacity` of them fit the server's limits."""
    check_canary_classes(expected_classes, len(images), classes, "canary images")
    timings, correct, requests = [], 0, 0
    for image, expected in zip(images, expected_classes, strict=True):
        started = time.perf_counter()
        status, body = client.score(encode_png(image), "image/png")
        timings.append((time.perf_counter() - started) * 1000)
        requests += 1
        answered = status == 200 and body["model_version"] == model_version
        correct += answered and _answers(body["predictions"], [int(expected)], classes)
    status, body = client.score_json({"instances": images.astype(int).tolist()})
    requests += 1
    batch = f"canary batch of {len(images)} images"
    if status != 200:
        log(f"{batch}: HTTP {status}: {body.get('message') if isinstance(body, dict) else body}")
    elif body["model_version"] != model_version:
        log(f"{batch}: answered by version {body['model_version']}, not {model_version}")
    elif not _answers(body["predictions"], [int(value) for value in expected_classes], classes):
        log(f"{batch}: not every image got its expected class (index and name) and one probability per class")
    else:
        correct += 1
    p99 = float(np.percentile(timings, 99)) if timings else None
    rejected, catalogue = 0, invalid_requests(images[0], limits, client.key)
    for request in catalogue:
        status = send_invalid(client, request)
        if status == request.expected_status:
            rejected += 1
        else:
            log(f"invalid request {request.kind}: expected HTTP {request.expected_status}, got {status}")
    passed = correct == requests and rejected == len(catalogue) and p99 is not None and p99 <= max_p99_ms
    log(
        f"infra validation: canary {correct}/{requests} as expected, p99 {p99:.2f} ms (limit {max_p99_ms}),"
        f" invalid requests rejected {rejected}/{len(catalogue)}: {'passed' if passed else 'FAILED'}"
    )
    return {
        "canary_requests": requests,
        "canary_correct": correct,
        "p99_ms": p99,
        "invalid_requests": len(catalogue),
        "invalid_rejected": rejected,
        "passed": passed,
    }
