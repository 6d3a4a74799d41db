"""Scoring requests: every accepted body kind, every malformed kind with its status, and no echoes; the
server follows its model's image shape and class names (MNIST's 28x28 digits or 32x32 colour images).

`Scorer` gets small numpy "models" so each request rule is checked fast and in isolation; one slow test
serves a real tiny colour model through the real HTTP server.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.components.train.executor import run_train
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import encode_png
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.serving import config
from mnist_mlops.serving.payloads import BadRequest, Limits, max_base64_chars, parse_request
from mnist_mlops.serving.request_log import RequestLog
from mnist_mlops.serving.scorer import LoadedModel, Scorer, encode, load_model_folder, parse_model_uri
from mnist_mlops.serving.server import ScoringClient, running_server
from mnist_mlops.serving.validation import (
    canary_capacity,
    infra_validate,
    invalid_requests,
    json_image_bytes,
    png_bomb,
)
from tests.datasets import colour_splits, png_bytes, write_png_tree

KEY = "k" * 43
MARKER = "SECRET-PAYLOAD-MARKER"
DIGITS = ModelInterface(MNIST_IMAGE_SHAPE, MNIST_CLASSES)
TINTS = ModelInterface((32, 32, 3), ("red", "green", "blue"))


def brightness_model(images: np.ndarray) -> np.ndarray:
    """Class = mean brightness bucket: enough to check that each image reaches its own row."""
    classes = (images.reshape(len(images), -1).mean(axis=1) / 25.6).astype(int).clip(0, 9)
    return np.eye(10, dtype=np.float32)[classes]


def tint_model(images: np.ndarray) -> np.ndarray:
    """Class = the brightest channel (red, green, blue)."""
    return np.eye(3, dtype=np.float32)[images.reshape(len(images), -1, 3).mean(axis=1).argmax(axis=1)]


def digits_model() -> LoadedModel:
    return LoadedModel("mnist-mlops", "7", brightness_model, DIGITS)


def tints_model() -> LoadedModel:
    return LoadedModel("tints", "2", tint_model, TINTS)


@pytest.fixture
def scorer() -> Scorer:
    return Scorer(digits_model(), key=KEY, limits=Limits(max_batch=8))


@pytest.fixture
def colour_scorer() -> Scorer:
    return Scorer(tints_model(), key=KEY, limits=Limits(max_batch=8))


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
    return np.stack([np.full(MNIST_IMAGE_SHAPE, level, np.uint8) for level in levels])


def tinted(*channels: int) -> np.ndarray:
    """32x32 RGB images, each bright in the given channel (0 red, 1 green, 2 blue)."""
    images = np.full((len(channels), 32, 32, 3), 30, np.uint8)
    for image, channel in zip(images, channels, strict=True):
        image[..., channel] = 200
    return images


def as_instances(images: np.ndarray) -> bytes:
    return json.dumps({"instances": images.tolist()}).encode()


def as_base64_pngs(pngs: list[bytes]) -> bytes:
    return json.dumps({"images": [base64.b64encode(png).decode() for png in pngs]}).encode()


def test_json_instances_base64_pngs_and_raw_png_give_the_same_answers(scorer):
    batch = images_of(0, 100, 250)
    as_hwc = json.dumps({"instances": batch[..., None].tolist(), "schema_version": 1}).encode()
    as_pngs = as_base64_pngs([encode_png(image) for image in batch])
    answers = [call(scorer, body, "application/json") for body in (as_instances(batch), as_hwc, as_pngs)]
    for status, body in answers:
        assert status == 200
        contracts.validate(body, "scoring_response", source="response")
        assert [item["class"] for item in body["predictions"]] == [0, 3, 9]
        assert [item["label"] for item in body["predictions"]] == ["0", "3", "9"]
        assert body["model_version"] == "7"
    status, body = call(scorer, encode_png(batch[1]), "image/png")
    assert status == 200 and body["predictions"][0]["class"] == 3


def test_a_colour_model_answers_with_its_class_names(colour_scorer):
    batch = tinted(2, 0, 1)
    pngs = [png_bytes(image, "RGB") for image in batch]
    for body, content_type in [
        (as_instances(batch), "application/json"),
        (as_base64_pngs(pngs), "application/json"),
    ]:
        status, answer = call(colour_scorer, body, content_type)
        assert status == 200, answer
        contracts.validate(answer, "scoring_response", source="response")
        predictions = answer["predictions"]
        assert [(item["class"], item["label"]) for item in predictions] == [
            (2, "blue"),
            (0, "red"),
            (1, "green"),
        ]
        assert all(len(item["probabilities"]) == 3 for item in predictions)
        assert (answer["model_name"], answer["model_version"]) == ("tints", "2")
    status, answer = call(colour_scorer, pngs[1], "image/png")
    assert status == 200 and answer["predictions"][0]["label"] == "red"
    gray_png_of_the_right_size = png_bytes(np.full((32, 32), 90, np.uint8), "L")  # decoded to RGB
    assert call(colour_scorer, gray_png_of_the_right_size, "image/png")[0] == 200


@pytest.mark.parametrize(
    "served, body, content_type, message",
    [
        (
            "colour_scorer",
            as_instances(images_of(0)),
            "application/json",
            "instances[0]: 28x28 grayscale, the model takes 32x32x3",
        ),
        (
            "colour_scorer",
            json.dumps({"instances": [*tinted(0, 1).tolist(), np.zeros((32, 32), int).tolist()]}).encode(),
            "application/json",
            "instances[2]: 32x32 grayscale, the model takes 32x32x3",
        ),
        (
            "colour_scorer",
            encode_png(images_of(0)[0]),
            "image/png",
            "body: 28x28 grayscale PNG, the model takes 32x32x3",
        ),
        (
            "colour_scorer",
            as_base64_pngs([png_bytes(tinted(0)[0], "RGB"), encode_png(images_of(0)[0])]),
            "application/json",
            "images[1]: 28x28 grayscale PNG, the model takes 32x32x3",
        ),
        (
            "scorer",
            as_instances(tinted(0)),
            "application/json",
            "instances[0]: 32x32x3, the model takes 28x28 grayscale",
        ),
        (
            "scorer",
            png_bytes(tinted(0)[0], "RGB"),
            "image/png",
            "body: 32x32x3 PNG, the model takes 28x28 grayscale",
        ),
    ],
)
def test_images_of_another_shape_are_refused_naming_both_shapes(request, served, body, content_type, message):
    status, answer = call(request.getfixturevalue(served), body, content_type)
    assert (status, answer["message"]) == (400, message)


@pytest.mark.parametrize("served, sample", [("scorer", images_of(100)[0]), ("colour_scorer", tinted(1)[0])])
def test_every_invalid_kind_gets_its_status_and_a_message_without_the_payload(request, served, sample):
    scorer = request.getfixturevalue(served)
    catalogue = invalid_requests(sample, scorer.limits, KEY)
    assert len({request.kind for request in catalogue}) == len(catalogue) >= 25
    for invalid in catalogue:
        authorization = invalid.headers.get("Authorization", f"Bearer {KEY}") or None
        response = scorer.respond(
            method=invalid.method,
            authorization=authorization,
            content_type=invalid.content_type,
            content_length=len(invalid.body),
            read_body=lambda size, body=invalid.body: body[:size],
        )
        assert response.status == invalid.expected_status, (invalid.kind, response.body)
        assert 400 <= response.status < 500 and response.body["message"], invalid.kind


@pytest.mark.parametrize(
    "body, content_type, status, words",
    [
        (b'{"instances": [[1, 2', "application/json", 400, "malformed JSON"),
        (json.dumps({"instances": [[[0.5] * 28] * 28]}).encode(), "application/json", 400, "integers"),
        (json.dumps({"instances": [[[256] * 28] * 28]}).encode(), "application/json", 400, "0..255"),
        (
            json.dumps({"instances": [[[0] * 28] * 27]}).encode(),
            "application/json",
            400,
            "instances[0]: 27x28 grayscale, the model takes 28x28 grayscale",
        ),
        (
            json.dumps({"instances": [[[0] * 28] * 27 + [[0] * 27]]}).encode(),
            "application/json",
            400,
            "instances[0]: not a 28x28 grayscale array",
        ),
        (b'{"instances": [[[NaN]]]}', "application/json", 400, "NaN"),
        (json.dumps({"images": ["@@@@"]}).encode(), "application/json", 400, "images[0]: not valid base64"),
        (json.dumps({"instances": [[[0] * 28] * 28] * 9}).encode(), "application/json", 413, "maximum of 8"),
        (
            encode_png(np.zeros((29, 28), np.uint8)),
            "image/png",
            400,
            "body: 29x28 grayscale PNG, the model takes 28x28 grayscale",
        ),
        (b"GIF89a....", "image/gif", 415, "unsupported Content-Type (image/gif)"),
        (json.dumps({MARKER: 1}).encode(), "application/json", 400, "unknown field"),
    ],
)
def test_refusals_say_what_is_wrong(scorer, body, content_type, status, words):
    got, answer = call(scorer, body, content_type)
    assert got == status and words in answer["message"]


def test_a_batch_may_mix_the_two_grayscale_layouts(scorer):
    mixed = [images_of(0)[0].tolist(), images_of(250)[0][..., None].tolist()]
    status, answer = call(scorer, json.dumps({"instances": mixed}).encode(), "application/json")
    assert status == 200 and [item["class"] for item in answer["predictions"]] == [0, 9]


def test_messages_never_echo_the_request(scorer):
    hostile = [
        (json.dumps({"instances": [[[MARKER] * 28] * 28]}).encode(), "application/json"),
        (json.dumps({"instances": [[[MARKER] * 28] * 27]}).encode(), "application/json"),
        (json.dumps({"images": [MARKER]}).encode(), "application/json"),
        (MARKER.encode() * 10, "image/png"),
        (MARKER.encode(), f"text/{MARKER}"),
        (b'{"instances": ' + MARKER.encode() + b"}", "application/json"),
    ]
    for body, content_type in hostile:
        status, answer = call(scorer, body, content_type)
        assert 400 <= status < 500 and MARKER not in answer["message"]


def test_a_png_bomb_is_refused_from_its_header():
    with pytest.raises(BadRequest, match="body: 10000x10000 PNG, the model takes 28x28 grayscale"):
        parse_request(png_bomb(), "image/png", Limits(), MNIST_IMAGE_SHAPE)


def test_a_png_may_be_as_long_as_the_model_s_images_need():
    assert max_base64_chars(MNIST_IMAGE_SHAPE) == 65_536  # the schema's floor
    assert max_base64_chars((256, 256, 3)) == 3 * 256 * 256 * 3
    too_long = json.dumps({"images": ["iVBORw0KGgo" + "A" * 65_536]}).encode()
    with pytest.raises(BadRequest, match=r"images\[0\]: 65547 base64 characters exceed 65536"):
        parse_request(too_long, "application/json", Limits(), MNIST_IMAGE_SHAPE)


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


class SwappedVersions:
    """An alias that points at version "8", a colour model, once the server follows it (the registry
    part of `ServedReference`, which the slow deploy tests exercise for real)."""

    name = "mnist-mlops"

    def newer(self, current: str) -> LoadedModel | None:
        return LoadedModel(self.name, "8", tint_model, TINTS) if current != "8" else None


def test_after_following_an_alias_to_another_shape_requests_are_parsed_for_the_new_model(scorer):
    digit = encode_png(images_of(100)[0])
    assert call(scorer, digit, "image/png")[0] == 200
    scorer.follow(SwappedVersions(), poll_seconds=0.05)
    deadline = time.monotonic() + 10
    while scorer.model.version != "8" and time.monotonic() < deadline:
        time.sleep(0.01)
    status, answer = call(scorer, digit, "image/png")
    assert (status, answer["message"]) == (400, "body: 28x28 grayscale PNG, the model takes 32x32x3")
    status, answer = call(scorer, png_bytes(tinted(2)[0], "RGB"), "image/png")
    assert (status, answer["model_version"], answer["predictions"][0]["label"]) == (200, "8", "blue")


def test_each_request_is_recorded_compactly_and_the_log_rotates(tmp_path):
    log = RequestLog(tmp_path / "requests", max_bytes=4000, keep=2)
    scorer = Scorer(digits_model(), key=KEY, limits=Limits(), request_log=log)
    secret = json.dumps({"instances": images_of(0, 250).tolist(), MARKER: 1}).encode()
    call(scorer, secret, "application/json")
    call(scorer, as_instances(images_of(0, 250)), "application/json")
    call(scorer, b"x", "image/png", key=None)
    log.flush()  # the scorer only queues records: its writer thread appends them
    lines = log.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        contracts.validate(record, "request_record", source="request log")
    assert [record["status"] for record in records] == [400, 200, 401]
    assert [(image["class"], image["label"]) for image in records[1]["images"]] == [(0, "0"), (9, "9")]
    assert (
        records[1]["images"][1]["mean_intensity"] == 250.0 and records[1]["images"][1]["ink_fraction"] == 1.0
    )
    assert MARKER not in log.path.read_text()
    for _ in range(60):
        call(scorer, encode_png(images_of(100)[0]), "image/png")
    log.flush()
    assert len(list((tmp_path / "requests").glob("*.jsonl"))) <= 3  # the live file and `keep` rotated ones


def test_a_model_answering_nan_is_a_clear_500_and_a_valid_log_line(tmp_path):
    """JSON has no NaN: the answer would be invalid JSON or a null probability with a 200."""
    log = RequestLog(tmp_path / "requests")
    broken = LoadedModel(
        "mnist-mlops", "9", lambda images: np.full((len(images), 10), np.nan, np.float32), DIGITS
    )
    status, body = call(
        Scorer(broken, key=KEY, limits=Limits(), request_log=log),
        as_instances(images_of(3)),
        "application/json",
    )
    assert status == 500 and body["message"] == "model mnist-mlops v9 answered non-finite probabilities"
    log.flush()
    (record,) = [json.loads(line) for line in log.path.read_text().splitlines()]
    contracts.validate(record, "request_record", source="request log")
    assert record["status"] == 500


def test_every_answer_carries_its_request_id_and_the_log_keeps_it(tmp_path):
    log = RequestLog(tmp_path / "requests")
    scorer = Scorer(digits_model(), key=KEY, limits=Limits(), request_log=log)

    def answer(body: bytes, *, key: str = KEY, **ids: str):
        return scorer.respond(
            method="POST",
            authorization=f"Bearer {key}",
            content_type="image/png",
            content_length=len(body),
            read_body=lambda size: body[:size],
            **ids,
        )

    incoming = "3f2a9c1e-0b1c-4d2e-8f00-123456789abc"  # an x-request-id, as the inference server passes it
    scored = answer(encode_png(images_of(100)[0]), request_id=incoming, client_request_id="order-42")
    refused = answer(b"x", key="wrong")
    unsafe = [
        answer(b"x", request_id=bad, client_request_id=bad)
        for bad in ("a b", "../etc", "x" * 101, "\x1b[31mred", "id\n")
    ]
    for response in [scored, refused, *unsafe]:
        assert response.headers["x-request-id"] == response.body["request_id"]
    assert (scored.status, scored.body["request_id"]) == (200, incoming)
    contracts.validate(scored.body, "scoring_response", source="response")
    assert refused.status == 401 and refused.body.keys() == {"message", "request_id"}
    fresh = [response.body["request_id"] for response in [refused, *unsafe]]
    assert len(set(fresh)) == len(fresh) and all(str(uuid.UUID(value)) == value for value in fresh)
    log.flush()
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    for record in records:
        contracts.validate(record, "request_record", source="request log")
    assert [record["request_id"] for record in records] == [incoming, *fresh]
    assert records[0]["client_request_id"] == "order-42"
    assert not any("client_request_id" in record for record in records[1:])  # unsafe ids are not kept


def test_a_colour_model_s_requests_are_recorded_with_its_class_names(tmp_path):
    log = RequestLog(tmp_path / "requests")
    scorer = Scorer(tints_model(), key=KEY, limits=Limits(), request_log=log)
    call(scorer, as_instances(tinted(1, 2)), "application/json")
    log.flush()
    (record,) = [json.loads(line) for line in log.path.read_text().splitlines()]
    contracts.validate(record, "request_record", source="request log")
    assert [(image["class"], image["label"]) for image in record["images"]] == [(1, "green"), (2, "blue")]
    assert (record["model_name"], record["model_version"]) == ("tints", "2")


@pytest.mark.parametrize(
    ("image_shape", "capacity"), [(MNIST_IMAGE_SHAPE, 256), ((128, 128), 51), ((64, 64, 3), 60)]
)
def test_canaries_of_any_image_size_fit_one_batch_request(image_shape, capacity):
    """The batch canary of every image at its longest in JSON (all 255) fits the body limit; one more
    would not. MNIST's stays the batch limit (deploy's 2 x 128 canaries, as before)."""
    limits = Limits()
    assert canary_capacity(image_shape, limits) == capacity
    body = lambda count: len(as_instances(np.full((count, *image_shape), 255, np.uint8)))  # noqa: E731
    assert body(capacity) <= limits.max_body_bytes
    assert capacity == limits.max_batch or body(capacity + 1) > limits.max_body_bytes
    assert json_image_bytes(image_shape) == len(json.dumps(np.full(image_shape, 255).tolist()))


def test_infra_validation_refuses_canaries_labelled_with_classes_the_model_does_not_answer():
    never_contacted = ScoringClient("http://127.0.0.1:9")
    with pytest.raises(
        UserInputError,
        match=r"canary images: class indices 3, 7 expected; the model answers 3 classes, indices 0 to 2 "
        r"\(red, green, blue\)",
    ):
        infra_validate(
            never_contacted,
            tinted(0, 1, 2),
            np.array([0, 3, 7]),
            classes=TINTS.classes,
            model_version="2",
            limits=Limits(),
            max_p99_ms=1000.0,
        )


class InProcessClient(ScoringClient):
    """The scoring client handing each request to a `Scorer` directly: the server's request handling
    without a socket."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__("http://in-process", KEY)
        self.scorer = scorer

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        response = self.scorer.respond(
            method=method,
            authorization=headers.get("Authorization"),
            content_type=headers.get("Content-Type"),
            content_length=len(body),
            read_body=lambda size: body[:size],
        )
        return response.status, encode(response)


def test_a_refused_batch_canary_is_logged_with_its_status_and_message():
    limits = Limits(max_body_bytes=8_000)  # one PNG fits, the JSON batch of three images does not
    images = images_of(0, 100, 200)
    logged: list[str] = []
    checks = infra_validate(
        InProcessClient(Scorer(digits_model(), key=KEY, limits=limits)),
        images,
        brightness_model(images).argmax(axis=1),
        classes=DIGITS.classes,
        model_version="7",
        limits=limits,
        max_p99_ms=1000.0,
        log=logged.append,
    )
    size = len(json.dumps({"instances": images.astype(int).tolist()}))
    refusal = f"HTTP 413: request body of {size} bytes exceeds the limit of 8000"
    assert f"canary batch of 3 images: {refusal}" in logged
    assert (checks["canary_correct"], checks["canary_requests"], checks["passed"]) == (3, 4, False)


@pytest.mark.slow  # trains a model and starts a server
def test_a_real_colour_model_served_over_http_answers_with_its_class_names(tmp_path):
    names = ("amber", "blue", "cyan", "dune", "ember")
    splits = colour_splits(classes=5, train_per_class=60)
    run_ingest(
        str(write_png_tree(tmp_path / "src", splits, classes=list(names))),
        tmp_path / "dataset",
        tmp_path / "data_report.json",
    )
    run_preprocess(tmp_path / "dataset", tmp_path / "preprocessed", validation_fraction=0.25)
    model = tmp_path / "model"
    run_train(
        tmp_path / "preprocessed",
        model,
        tmp_path / "summary.json",
        tmp_path / "curves.png",
        epochs=2,
        batch_size=32,
    )
    images = splits["testing"][0]
    expected = load_model_folder("tints", "1", model).predict(images).argmax(axis=1)
    (tmp_path / "key").write_text(KEY)
    environment = {  # the model folder mounted as on an Azure ML online deployment
        "AZUREML_MODEL_DIR": str(model),
        config.MODEL_NAME: "tints",
        config.MODEL_VERSION: "1",
        config.KEY_FILE: str(tmp_path / "key"),
        config.REQUEST_LOG: str(tmp_path / "requests"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    logged: list[str] = []
    with running_server(environment) as server:
        client = ScoringClient(server.url, KEY)
        status, answer = client.score_json({"instances": images[:4].tolist()})
        assert status == 200, answer
        contracts.validate(answer, "scoring_response", source="response")
        labels = [item["label"] for item in answer["predictions"]]
        assert labels == [names[index] for index in expected[:4]]
        ids = [request_ids(server.url, {}), request_ids(server.url, {"x-request-id": "a b"})]
        traced = request_ids(server.url, {"x-request-id": "trace-7", "x-ms-client-request-id": "order-7"})
        status, answer = client.score(encode_png(images_of(100)[0]), "image/png")
        assert (status, answer["message"]) == (400, "body: 28x28 grayscale PNG, the model takes 32x32x3")
        checks = infra_validate(
            client,
            images,
            expected,
            classes=names,
            model_version="1",
            limits=Limits(),
            max_p99_ms=1000.0,
            log=logged.append,
        )
    assert checks["passed"], logged
    assert checks["canary_correct"] == checks["canary_requests"] == len(images) + 1
    assert checks["invalid_rejected"] == checks["invalid_requests"] >= 25
    for body_id, header_id, _ in ids:  # the server's GUID, or a new one for an unsafe incoming id
        assert body_id == header_id == str(uuid.UUID(body_id))
    assert traced == ("trace-7", "trace-7", "order-7")
    (log_file,) = (tmp_path / "requests").glob("requests-*.jsonl")
    records = {record["request_id"]: record for record in map(json.loads, log_file.read_text().splitlines())}
    assert {body_id for body_id, _, _ in ids} < records.keys()
    assert records["trace-7"]["client_request_id"] == "order-7" and records["trace-7"]["status"] == 401


def request_ids(url: str, headers: dict[str, str]) -> tuple[str, str, str | None]:
    """A request (refused: no key) with `headers`: the request id in its body and its x-request-id
    header, and its x-ms-client-request-id header."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST", "/score", body=b"{}", headers={"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        body = json.loads(response.read())
        return (
            body["request_id"],
            response.getheader("x-request-id"),
            response.getheader("x-ms-client-request-id"),
        )
    finally:
        connection.close()
