"""Benchmark: a live scoring server under a flood of malformed requests.

    python benchmarks/bad_input.py [--registry URI] [--model models:/mnist-mlops@production] [--each 1000]

Sends `--each` requests of every kind in `mnist_mlops.serving.validation.invalid_requests` (malformed
JSON, wrong shape, dtype, NaN, out of range, non-image bytes, truncated PNG, oversized image, PNG bomb,
bad base64, batch and body over the limits, wrong content type, missing or wrong key, ...) to one
server, then checks it still answers correctly. Resident memory is the server's (gunicorn master and
worker), read from /proc after a warm-up and at the end. Baseline for comparison: the same number of
valid requests. The last line printed is the JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import tree_memory_mb
from serving_inputs import arguments, test_pngs

from mnist_mlops.dataset import MNIST_IMAGE_SHAPE
from mnist_mlops.deployments import ensure_key, key_path
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.keys import read_key
from mnist_mlops.registry import registry_uri
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import RegistryModels
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from mnist_mlops.serving.validation import invalid_requests, send_invalid


def main() -> None:
    args = arguments(__doc__.splitlines()[0], each=True)
    each = args.each
    uri = registry_uri(args.registry)
    pngs, labels = test_pngs(args.tarball, 200)
    models = RegistryModels(args.model, uri)
    key_file = ensure_key(key_path(uri, models.name))
    key = read_key(str(key_file))
    catalogue = invalid_requests(decode_pngs(pngs[:1], MNIST_IMAGE_SHAPE).images[0], Limits(), key)
    statuses: dict[str, Counter] = {request.kind: Counter() for request in catalogue}
    client_errors = 0
    with running_server(server_environment(args.model, registry=uri, key_file=key_file)) as server:
        scoring = ScoringClient(server.url, key)
        for _ in range(3):  # warm-up: every code path once, then valid traffic
            for request in catalogue:
                send_invalid(scoring, request)
            for png in pngs:
                scoring.score(png, "image/png")
        before = tree_memory_mb(server.process.pid)
        started = time.perf_counter()
        for round_number in range(each):
            for request in catalogue:
                try:
                    statuses[request.kind][send_invalid(scoring, request)] += 1
                except OSError:
                    client_errors += 1
            if round_number % 200 == 199:
                print(
                    f"{round_number + 1} rounds, server RSS {tree_memory_mb(server.process.pid):.1f} MB",
                    flush=True,
                )
        seconds = time.perf_counter() - started
        after = tree_memory_mb(server.process.pid)
        answers = [scoring.score(png, "image/png") for png in pngs]
        alive = all(status == 200 for status, _ in answers)
        accuracy = sum(
            status == 200 and body["predictions"][0]["class"] == label
            for (status, body), label in zip(answers, labels, strict=True)
        ) / len(labels)
    wrong = {
        request.kind: dict(statuses[request.kind])
        for request in catalogue
        if set(statuses[request.kind]) != {request.expected_status}
    }
    total = sum(sum(counter.values()) for counter in statuses.values())
    print(
        json.dumps(
            {
                "kinds": len(catalogue),
                "requests_per_kind": each,
                "requests": total,
                "status_5xx": sum(
                    n for counter in statuses.values() for status, n in counter.items() if status >= 500
                ),
                "unexpected_status": wrong,
                "client_errors": client_errors,
                "seconds": round(seconds, 1),
                "alive": alive,
                "accuracy_after": round(accuracy, 4),
                "rss_before_mb": round(before, 1),
                "rss_after_mb": round(after, 1),
                "rss_growth_mb": round(after - before, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
