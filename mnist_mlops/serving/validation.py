"""Infra validation of a live scoring server: canary requests and a catalogue of invalid requests.

Used by deploy before production moves (TFX's InfraValidator idea: the model must load and answer in
the real serving stack, not only in the training process) and by `benchmarks/bad_input.py`. Each
invalid request names the status it must get; anything else, a 5xx above all, fails validation.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from mnist_mlops.imaging import PNG_SIGNATURE, encode_png
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.server import ScoringClient


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
    """One request of every malformed kind, built around a valid 28x28 `sample` image."""
    png = encode_png(sample)
    pixels = sample.astype(int).tolist()
    as_json = lambda document: json.dumps(document).encode()  # noqa: E731
    encoded = base64.b64encode(png).decode()
    requests = [
        InvalidRequest("malformed_json", b'{"instances": [[1, 2', "application/json", 400),
        InvalidRequest("empty_body", b"", "application/json", 400),
        InvalidRequest("not_an_object", b"[1, 2, 3]", "application/json", 400),
        InvalidRequest(
            "both_fields", as_json({"instances": [pixels], "images": [encoded]}), "application/json", 400
        ),
        InvalidRequest("wrong_shape", as_json({"instances": [pixels[:27]]}), "application/json", 400),
        InvalidRequest(
            "ragged_rows", as_json({"instances": [[row[:27] for row in pixels]]}), "application/json", 400
        ),
        InvalidRequest("float_pixels", as_json({"instances": [[[0.5] * 28] * 28]}), "application/json", 400),
        InvalidRequest("nan_pixels", b'{"instances": [[[NaN, 0], [0, 0]]]}', "application/json", 400),
        InvalidRequest("out_of_range", as_json({"instances": [[[300] * 28] * 28]}), "application/json", 400),
        InvalidRequest(
            "negative_pixels", as_json({"instances": [[[-1] * 28] * 28]}), "application/json", 400
        ),
        InvalidRequest("string_pixels", as_json({"instances": [[["0"] * 28] * 28]}), "application/json", 400),
        InvalidRequest(
            "boolean_pixels", as_json({"instances": [[[True] * 28] * 28]}), "application/json", 400
        ),
        InvalidRequest(
            "huge_integer", as_json({"instances": [[[10**40] * 28] * 28]}), "application/json", 400
        ),
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
        InvalidRequest("oversized_image", encode_png(np.zeros((64, 64), np.uint8)), "image/png", 400),
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
    model_version: str,
    limits: Limits,
    max_p99_ms: float,
    log: Callable[[str], None] = print,
) -> dict:
    """Canary (one PNG per request, then one JSON batch) and invalid requests; the deployment_record block."""
    timings, correct, requests = [], 0, 0
    for image, expected in zip(images, expected_classes, strict=True):
        started = time.perf_counter()
        status, body = client.score(encode_png(image), "image/png")
        timings.append((time.perf_counter() - started) * 1000)
        requests += 1
        answered = status == 200 and body["model_version"] == model_version
        correct += bool(answered and body["predictions"][0]["class"] == int(expected))
    status, body = client.score_json({"instances": images.astype(int).tolist()})
    requests += 1
    batch_classes = [item["class"] for item in body.get("predictions", [])] if status == 200 else []
    correct += batch_classes == [int(value) for value in expected_classes]
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
