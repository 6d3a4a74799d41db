"""Scoring requests: every accepted body kind, every malformed kind with its status, and no echoes.

The live-server path (the Azure ML inference server with the real model) is tested by deploy's tests;
here `Scorer` gets a small numpy "model" so each request rule is checked fast and in isolation.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import encode_png
from mnist_mlops.serving.payloads import BadRequest, Limits, parse_request
from mnist_mlops.serving.scorer import LoadedModel, Scorer, encode, parse_model_uri
from mnist_mlops.serving.validation import invalid_requests

pytestmark = pytest.mark.slow  # trains models or starts servers

KEY = "k" * 43
MARKER = "SECRET-PAYLOAD-MARKER"


def brightness_model(images: np.ndarray) -> np.ndarray:
    """Class = mean brightness bucket: enough to check that each image reaches its own row."""
    classes = (images.reshape(len(images), -1).mean(axis=1) / 25.6).astype(int).clip(0, 9)
    return np.eye(10, dtype=np.float32)[classes]


@pytest.fixture
def scorer() -> Scorer:
    return Scorer(LoadedModel("mnist-mlops", "7", brightness_model), key=KEY, limits=Limits(max_batch=8))


def call(
    scorer: Scorer, body: bytes, content_type: str | None, *, key: str | None = KEY, method: str = "POST"
):
    response = scorer.respond(
        method=method,
        authorization=f"Bearer {key}" if key else None,
        content_type=content_type,
        content_length=len(body),
        read_body=lambda size: body[:size],
    )
    return response.status, json.loads(encode(response))


def images_of(*levels: int) -> np.ndarray:
    return np.stack([np.full((28, 28), level, np.uint8) for level in levels])


def test_json_instances_base64_pngs_and_raw_png_give_the_same_answers(scorer):
    batch = images_of(0, 100, 250)
    as_instances = json.dumps({"instances": batch.tolist()}).encode()
    as_hwc = json.dumps({"instances": batch[..., None].tolist(), "schema_version": 1}).encode()
    as_pngs = json.dumps(
        {"images": [base64.b64encode(encode_png(image)).decode() for image in batch]}
    ).encode()
    answers = [call(scorer, body, "application/json") for body in (as_instances, as_hwc, as_pngs)]
    for status, body in answers:
        assert status == 200
        contracts.validate(body, "scoring_response", source="response")
        assert [item["class"] for item in body["predictions"]] == [0, 3, 9]
        assert body["model_version"] == "7"
    status, body = call(scorer, encode_png(batch[1]), "image/png")
    assert status == 200 and body["predictions"][0]["class"] == 3


def test_every_invalid_kind_gets_its_status_and_a_message_without_the_payload(scorer):
    catalogue = invalid_requests(images_of(100)[0], scorer.limits, KEY)
    assert len({request.kind for request in catalogue}) == len(catalogue) >= 25
    for request in catalogue:
        authorization = request.headers.get("Authorization", f"Bearer {KEY}") or None
        response = scorer.respond(
            method=request.method,
            authorization=authorization,
            content_type=request.content_type,
            content_length=len(request.body),
            read_body=lambda size, body=request.body: body[:size],
        )
        assert response.status == request.expected_status, request.kind
        assert 400 <= response.status < 500 and response.body["message"], request.kind


@pytest.mark.parametrize(
    "body, content_type, status, words",
    [
        (b'{"instances": [[1, 2', "application/json", 400, "malformed JSON"),
        (json.dumps({"instances": [[[0.5] * 28] * 28]}).encode(), "application/json", 400, "integers"),
        (json.dumps({"instances": [[[256] * 28] * 28]}).encode(), "application/json", 400, "0..255"),
        (json.dumps({"instances": [[[0] * 28] * 27]}).encode(), "application/json", 400, "28x28"),
        (b'{"instances": [[[NaN]]]}', "application/json", 400, "NaN"),
        (json.dumps({"images": ["@@@@"]}).encode(), "application/json", 400, "images[0]: not valid base64"),
        (json.dumps({"instances": [[[0] * 28] * 28] * 9}).encode(), "application/json", 413, "maximum of 8"),
        (encode_png(np.zeros((29, 28), np.uint8)), "image/png", 400, "wrong size 28x29"),
        (b"GIF89a....", "image/gif", 415, "unsupported Content-Type (image/gif)"),
        (json.dumps({MARKER: 1}).encode(), "application/json", 400, "unknown field"),
    ],
)
def test_refusals_say_what_is_wrong(scorer, body, content_type, status, words):
    got, answer = call(scorer, body, content_type)
    assert got == status and words in answer["message"]


def test_messages_never_echo_the_request(scorer):
    hostile = [
        (json.dumps({"instances": [[[MARKER] * 28] * 28]}).encode(), "application/json"),
        (json.dumps({"images": [MARKER]}).encode(), "application/json"),
        (MARKER.encode() * 10, "image/png"),
        (MARKER.encode(), f"text/{MARKER}"),
        (b'{"instances": ' + MARKER.encode() + b"}", "application/json"),
    ]
    for body, content_type in hostile:
        status, answer = call(scorer, body, content_type)
        assert 400 <= status < 500 and MARKER not in answer["message"]


def test_a_png_bomb_is_refused_from_its_header():
    from mnist_mlops.serving.validation import png_bomb

    with pytest.raises(BadRequest, match="wrong size 10000x10000"):
        parse_request(png_bomb(), "image/png", Limits())


def test_key_is_required_and_compared(scorer):
    body = encode_png(images_of(10)[0])
    assert call(scorer, body, "image/png", key=None)[0] == 401
    assert call(scorer, body, "image/png", key="wrong")[0] == 401
    assert call(scorer, body, "image/png")[0] == 200
    assert call(scorer, body, "image/png", method="GET")[0] == 405


def test_an_oversized_body_is_refused_before_it_is_read(scorer):
    reads = []
    response = scorer.respond(
        method="POST",
        authorization=f"Bearer {KEY}",
        content_type="application/json",
        content_length=scorer.limits.max_body_bytes + 1,
        read_body=lambda size: reads.append(size) or b"",
    )
    assert response.status == 413
    assert all(size <= 1 << 20 for size in reads)  # drained in bounded chunks, never parsed


@pytest.mark.parametrize("uri", ["./model", "runs:/abc/model", "models:/m", "models:/m/latest", "models:/m@"])
def test_only_registry_references_are_served(uri):
    with pytest.raises(UserInputError, match="registry reference"):
        parse_model_uri(uri)


def test_registry_references_parse():
    assert parse_model_uri("models:/mnist-mlops/3") == ("mnist-mlops", "3", None)
    assert parse_model_uri("models:/mnist-mlops@production") == ("mnist-mlops", None, "production")


def test_each_request_is_recorded_compactly_and_the_log_rotates(tmp_path):
    from mnist_mlops.serving.request_log import RequestLog

    log = RequestLog(tmp_path / "requests", max_bytes=4000, keep=2)
    scorer = Scorer(
        LoadedModel("mnist-mlops", "7", brightness_model), key=KEY, limits=Limits(), request_log=log
    )
    secret = json.dumps({"instances": images_of(0, 250).tolist(), MARKER: 1}).encode()
    call(scorer, secret, "application/json")
    call(scorer, json.dumps({"instances": images_of(0, 250).tolist()}).encode(), "application/json")
    call(scorer, b"x", "image/png", key=None)
    lines = log.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        contracts.validate(record, "request_record", source="request log")
    assert [record["status"] for record in records] == [400, 200, 401]
    assert [image["class"] for image in records[1]["images"]] == [0, 9]
    assert (
        records[1]["images"][1]["mean_intensity"] == 250.0 and records[1]["images"][1]["ink_fraction"] == 1.0
    )
    assert MARKER not in log.path.read_text()
    for _ in range(60):
        call(scorer, encode_png(images_of(100)[0]), "image/png")
    assert len(list((tmp_path / "requests").glob("*.jsonl"))) <= 3  # the live file and `keep` rotated ones
