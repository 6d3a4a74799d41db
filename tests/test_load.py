"""The server under load: a full queue answers 503 with Retry-After at once instead of letting clients
wait without bound; the load benchmark, reduced, holds its goals while production is deployed and
rolled back."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import encode_png
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.serving import config
from mnist_mlops.serving.gunicorn_worker import INLINE_BYTES
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import (
    BODY_READ_SECONDS,
    AdmissionGate,
    BodyNotReceived,
    LoadedModel,
    Scorer,
    encode,
    requests_in_process,
)
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment

REPO = Path(__file__).resolve().parents[1]
PNG = encode_png(np.full((28, 28), 90, np.uint8))
DIGITS = ModelInterface((28, 28), tuple(str(digit) for digit in range(10)))


def held_model(release: threading.Event, entered: threading.Semaphore) -> LoadedModel:
    """A model whose every call waits for `release`: requests pile up behind the first."""

    def predict(images: np.ndarray) -> np.ndarray:
        entered.release()
        release.wait(30)
        return np.eye(10, dtype=np.float32)[np.zeros(len(images), int)]

    return LoadedModel("mnist-mlops", "3", predict, DIGITS)


def score(
    scorer: Scorer, read_body: Callable[[int], bytes] | None = None, content_length: int | None = len(PNG)
) -> tuple[int, dict, dict]:
    response = scorer.respond(
        method="POST",
        authorization=None,
        content_type="image/png",
        content_length=content_length,
        read_body=read_body or (lambda size: PNG[:size]),
    )
    return response.status, json.loads(encode(response)), response.headers


def stalled(size: int) -> bytes:
    """A body that stops arriving: what the server's socket deadline turns a stalled upload into."""
    raise BodyNotReceived("timed out")


def test_a_body_that_stops_arriving_gets_408_and_leaves_the_queue():
    scorer = Scorer(held_model(threading.Event(), threading.Semaphore(0)), key=None, limits=Limits())
    status, body, _ = score(scorer, stalled)
    assert status == 408
    assert f"did not arrive whole within {BODY_READ_SECONDS:g} s" in body["message"]
    assert scorer.gate._inside == 0


def test_a_shed_request_drains_a_bounded_or_chunked_body_and_never_waits_on_a_stalled_one():
    release, entered = threading.Event(), threading.Semaphore(0)
    scorer = Scorer(held_model(release, entered), key=None, limits=Limits(), gate=AdmissionGate(max_queue=0))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(score, scorer)
        assert entered.acquire(timeout=10)
        chunks = [b"x" * 1000] * 3
        chunked = score(scorer, lambda size: chunks.pop() if chunks else b"", content_length=None)
        assert chunked[0] == 503 and not chunks  # read to its end, so the client can read the answer
        assert score(scorer, stalled, content_length=10_000)[0] == 503
        release.set()
        assert first.result(timeout=30)[0] == 200


def test_a_request_beyond_the_queue_is_shed_at_once_with_retry_after():
    release, entered = threading.Event(), threading.Semaphore(0)
    scorer = Scorer(held_model(release, entered), key=None, limits=Limits(), gate=AdmissionGate(max_queue=1))
    with ThreadPoolExecutor(2) as pool:
        scored = pool.submit(score, scorer)
        assert entered.acquire(timeout=10)  # the first holds the model
        waiting = pool.submit(score, scorer)  # the second waits its turn
        deadline = time.monotonic() + 10
        while scorer.gate._inside < 2 and time.monotonic() < deadline:  # the second is in the queue
            time.sleep(0.001)
        status, body, headers = score(scorer)  # the third is refused without waiting
        assert status == 503 and headers["Retry-After"] == "1"
        assert "busy: 1 requests already wait" in body["message"] and body["request_id"]
        release.set()
        assert scored.result()[0] == waiting.result()[0] == 200
    assert score(scorer)[0] == 200  # the queue drained: admitted again


def test_with_no_queue_only_the_request_being_scored_is_admitted():
    release, entered = threading.Event(), threading.Semaphore(0)
    scorer = Scorer(held_model(release, entered), key=None, limits=Limits(), gate=AdmissionGate(max_queue=0))
    with ThreadPoolExecutor(1) as pool:
        scored = pool.submit(score, scorer)
        assert entered.acquire(timeout=10)
        assert score(scorer)[0] == 503
        release.set()
        assert scored.result()[0] == 200


def test_the_queue_setting_is_checked(monkeypatch):
    monkeypatch.setenv(config.MAX_QUEUE, "-1")
    with pytest.raises(UserInputError, match="MNIST_MLOPS_MAX_QUEUE='-1': expected a whole number"):
        config.max_queue()
    monkeypatch.delenv(config.MAX_QUEUE)
    assert config.max_queue() == 32
    with pytest.raises(UserInputError, match="0 or more"):
        AdmissionGate(-2)


@pytest.mark.slow  # starts a server
def test_a_full_server_answers_503_with_retry_after_and_every_other_request_normally(deployed_run):
    from mnist_mlops.deployments import key_path
    from mnist_mlops.keys import read_key

    key_file = key_path(deployed_run.registry, "mnist-mlops")
    environment = server_environment(
        "models:/mnist-mlops/1", registry=deployed_run.registry, key_file=key_file, max_queue=1
    )
    big_batch = json.dumps({"instances": np.zeros((256, 28, 28), int).tolist()}).encode()
    png_batch = json.dumps({"images": [base64.b64encode(PNG).decode()] * 256}).encode()
    assert len(png_batch) < INLINE_BYTES  # small enough for an idle worker to answer in its main thread
    with running_server(environment, workers=1) as server:
        key = read_key(key_file)
        scoring = ScoringClient(server.url, key, timeout=60)
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: scoring.score(big_batch, "application/json"), range(60)))
            small = [
                status
                for status, _ in pool.map(lambda _: scoring.score(png_batch, "application/json"), range(60))
            ]
        after = scoring.score(PNG, "image/png")
        stalled_uploads = [_stalled_upload(server.url, key) for _ in range(2)]  # admitted: the queue is full
        started = time.monotonic()
        busy = scoring.score(PNG, "image/png")
        busy_seconds = time.monotonic() - started
        late = [_answer_status(connection) for connection in stalled_uploads]
        again = scoring.score(PNG, "image/png")
    statuses = [status for status, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    shed = [body for status, body in answers if status == 503]
    assert all("busy: 1 requests already wait" in body["message"] for body in shed)
    assert set(small) == {200, 503}, small  # requests a worker may answer inline are queued and shed alike
    assert after[0] == 200
    assert busy[0] == 503 and busy_seconds < BODY_READ_SECONDS / 2, (busy, busy_seconds)
    assert late == [408, 408]  # the stalled uploads were let go at the deadline
    assert again[0] == 200


def _stalled_upload(url: str, key: str) -> socket.socket:
    """A connection that sends a scoring request's headers, announces a body and sends none of it."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=BODY_READ_SECONDS * 3)
    headers = f"Authorization: Bearer {key}\r\nContent-Type: image/png\r\nContent-Length: 1000"
    connection.sendall(f"POST /score HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n".encode())
    time.sleep(0.5)  # admitted before the next request arrives
    return connection


def _answer_status(connection: socket.socket) -> int:
    with connection:
        return int(connection.recv(64).split()[1])


@pytest.mark.slow  # serves and deploys a model under load for about a minute
def test_the_load_benchmark_meets_its_goals_in_a_reduced_run(deployed_run, shared_tarball, tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "load.py"), "--registry", deployed_run.registry]
    command += ["--test-data", str(deployed_run.run_dir / "preprocess" / "preprocessed")]
    command += [
        "--tarball",
        str(shared_tarball),
        "--images",
        "128",
        "--batch",
        "8",
        "--throughput-batch",
        "32",
    ]
    command += ["--seconds", "5", "--throughput-seconds", "2", "--clients", "6", "--workers", "2"]
    command += ["--keep", str(tmp_path / "scratch")]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["requests"] > 200 and figures["images_per_s"] > 0
    assert (
        figures["status_5xx"] == figures["dropped"] == figures["connection_errors"] == figures["wrong"] == 0
    )
    assert figures["shed"] < 0.05 * figures["requests"]
    assert figures["deploys_during_load"] == figures["rollbacks_during_load"] == 1
    answered = figures["per_workers"]["2"]["answers_by_version"]
    assert set(answered) == {"1", "2"}, answered  # the server followed the deploy and the rollback
    assert figures["per_workers"]["2"]["unexpected"] == {}
    assert figures["rss_growth_mb"] < 50


def test_a_worker_knows_when_it_has_a_request_in_hand():
    """What `ScoringWorker` asks before it accepts a connection."""
    gate = AdmissionGate(max_queue=1)
    before = requests_in_process()
    with gate.admitted() as admitted:
        assert admitted and requests_in_process() == before + 1
    assert requests_in_process() == before
