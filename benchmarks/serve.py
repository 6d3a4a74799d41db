"""Benchmark: the scoring server beside the served model's own in-process call and `mlflow models serve`.

    python benchmarks/serve.py [--registry URI] [--model models:/mnist-mlops@production]
                               [--rounds 5] [--workers N]

Needs a registry with a model trained on the shared MNIST (`mnist-mlops run` makes one in ./mlflow.db).
Our server is the Azure ML inference server with `score.py`, key auth and the request log on, as
`mnist-mlops serve --workers N` runs it. The floor it adds to is the same registered version called in
this process on the TensorFlow path every version has (its warmed `tf.function`, TensorFlow's own thread
pool over every core). Each round measures, in a shuffled order, on loopback:
- one MNIST test PNG per request, sequentially: p50 / p99 latency; beside it the in-process
  single-image call, and the server's health route (`GET /`, no body, no model): what the HTTP
  exchange, gunicorn and azmlinfsrv cost before any scoring;
- 128 PNGs per request (base64 JSON) from N concurrent clients: images/s; beside it the in-process
  128-image call. N workers and N clients (default: the machine's cores) let the server use every core
  as the in-process call does;
- 128 images per request as JSON pixel arrays, the only body `mlflow models serve` takes for this
  model, against both servers with the same workers and clients: the ratio of images/s.
Every figure is the median of the rounds, with [min, max] beside it; ratios are taken within a round.
The server's memory is its whole process tree (gunicorn master and workers) after the rounds: the sum
of their RSS (`server_rss_mb`, the goal's figure: shared pages counted once per process) and of their
PSS (`server_pss_mb`, shared pages split: what the server takes). The server's classes are checked
against the in-process call's. The last line printed is the JSON summary.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import spread, tree_memory_mb
from serving_inputs import argument_parser, test_pngs

from mnist_mlops.dataset import MNIST_IMAGE_SHAPE
from mnist_mlops.deployments import ensure_key, key_path
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.keys import read_key
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.registry import client, registry_uri
from mnist_mlops.serving.scorer import RegistryModels, compile_predict
from mnist_mlops.serving.server import (
    ScoringClient,
    free_port,
    running_server,
    server_environment,
    stop_process,
)

BATCH = 128
SINGLE_PER_ROUND = 300
BATCHES_PER_ROUND = 20
LATENCY_KINDS = ("single", "inprocess_single", "health")
GOALS = {
    "single_vs_inprocess_max": 1.5,
    "batch_vs_inprocess_min": 1.2,
    "ratio_vs_mlflow_min": 10.0,
    "server_rss_mb_max": 400.0,
}


def tensorflow_predict(uri: str, name: str, version: str) -> Callable[[np.ndarray], np.ndarray]:
    """The version's own in-process call on the TensorFlow path: its MLflow model, warmed tf.function."""
    import mlflow.artifacts
    import mlflow.tensorflow

    source = client(uri).get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-bench-model-") as scratch:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch, tracking_uri=uri)
        return compile_predict(mlflow.tensorflow.load_model(folder), ModelInterface.of_model(folder))


def latencies_ms(call: Callable, items: list) -> np.ndarray:
    timings = []
    for item in items:
        started = time.perf_counter()
        call(item)
        timings.append((time.perf_counter() - started) * 1000)
    return np.array(timings)


def images_per_s(call: Callable, bodies: list, clients: int) -> float:
    """All `bodies` sent by `clients` concurrent callers, BATCH images each."""
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        list(pool.map(call, bodies))
        return len(bodies) * BATCH / (time.perf_counter() - started)


def posted(scoring: ScoringClient, content_type: str) -> Callable[[bytes], None]:
    """POST /score, insisting on HTTP 200 (the answer itself is checked once, before the rounds)."""
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {scoring.key}"}

    def call(body: bytes) -> None:
        status, payload = scoring.request("POST", "/score", body, headers)
        if status != 200:
            raise SystemExit(f"our server answered HTTP {status}: {payload[:200]!r}")

    return call


def classes_of(status: int, body: dict) -> list[int]:
    if status != 200:
        raise SystemExit(f"unexpected HTTP {status}: {body}")
    return [item["class"] for item in body["predictions"]]


def mlflow_server(uri: str, model_uri: str, workers: int) -> tuple[subprocess.Popen, ScoringClient]:
    """`mlflow models serve` (the local env manager, as this machine needs) on the same version."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    # mlflow execs `uvicorn` by name: put this interpreter's scripts folder on PATH.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    log_path = Path(tempfile.gettempdir()) / "mlflow-serve-benchmark.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    baseline = ScoringClient(f"http://127.0.0.1:{port}", timeout=120)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if baseline.request("GET", "/ping", b"", {})[0] == 200:
                return process, baseline
        except OSError:
            time.sleep(0.5)
    stop_process(process)
    raise SystemExit(f"mlflow models serve did not start (see {log_path})")


def mlflow_call(baseline: ScoringClient) -> Callable[[bytes], None]:
    def call(body: bytes) -> None:
        status, payload = baseline.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit(f"mlflow models serve answered HTTP {status}: {payload[:200]!r}")

    return call


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurement rounds (median and spread)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server workers and concurrent clients (default: the machine's cores)",
    )
    args = parser.parse_args()
    uri = registry_uri(args.registry)
    pngs, _ = test_pngs(args.tarball, args.images)
    pixels = decode_pngs(pngs, MNIST_IMAGE_SHAPE).images
    starts = range(0, len(pngs) - BATCH + 1, BATCH)
    png_bodies = [
        json.dumps({"images": [base64.b64encode(png).decode() for png in pngs[i : i + BATCH]]}).encode()
        for i in starts
    ]
    instances = [pixels[i : i + BATCH].astype(int).tolist() for i in starts]
    pixel_bodies = [json.dumps({"instances": batch}).encode() for batch in instances]
    mlflow_bodies = [json.dumps({"inputs": batch}).encode() for batch in instances]
    pixel_batches = [pixels[i : i + BATCH] for i in starts]
    if len(png_bodies) < BATCHES_PER_ROUND:
        raise SystemExit(f"--images {args.images}: need at least {BATCHES_PER_ROUND * BATCH}")

    models = RegistryModels(args.model, uri)
    version = models.resolve()
    version_uri = f"models:/{models.name}/{version}"
    predict = tensorflow_predict(uri, models.name, version)
    expected = predict(pixels).argmax(axis=1).tolist()

    key_file = ensure_key(key_path(uri, models.name))
    request_log = Path(tempfile.mkdtemp(prefix="mnist-mlops-bench-requests-"))  # on, as `serve` runs it
    environment = server_environment(version_uri, registry=uri, key_file=key_file, request_log=request_log)
    clients = args.workers
    baseline_process, baseline = mlflow_server(uri, version_uri, args.workers)
    try:
        with running_server(environment, workers=args.workers) as server:
            scoring = ScoringClient(server.url, read_key(str(key_file)))
            one_by_one = [classes_of(*scoring.score(png, "image/png"))[0] for png in pngs[:BATCH]]
            batched = classes_of(*scoring.score(png_bodies[0], "application/json"))
            if not one_by_one == batched == expected[:BATCH]:
                raise SystemExit("the server's classes differ from the in-process call's")
            single_http, batch_http = posted(scoring, "image/png"), posted(scoring, "application/json")
            to_mlflow = mlflow_call(baseline)
            for body in pixel_bodies[:2]:  # warm both servers' JSON paths
                batch_http(body)
                to_mlflow(mlflow_bodies[0])
            rounds = measure_rounds(
                args.rounds,
                clients,
                single=(single_http, pngs),
                health=(lambda _: scoring.health(), pngs),
                inprocess_single=(lambda image: predict(image[None]), pixels),
                batch=(batch_http, png_bodies),
                inprocess_batch=(predict, pixel_batches),
                pixels=(batch_http, pixel_bodies),
                mlflow=(to_mlflow, mlflow_bodies),
            )
            memory = {measure: tree_memory_mb(server.process.pid, measure) for measure in ("Rss", "Pss")}
    finally:
        stop_process(baseline_process)
    print(json.dumps(summary(rounds, memory, version_uri, args.workers, clients)))


def measure_rounds(rounds: int, clients: int, **kinds: tuple[Callable, list]) -> dict[str, list]:
    """Every kind once per round, in a shuffled order; single kinds time each call, the others
    count images/s (HTTP batches from `clients` concurrent clients, in-process calls one at a time)."""
    measured: dict[str, list] = {kind: [] for kind in kinds}
    shuffler = random.Random(0)
    for number in range(rounds):
        order = list(kinds)
        shuffler.shuffle(order)
        for kind in order:
            call, items = kinds[kind]
            if kind in LATENCY_KINDS:
                offset = number * SINGLE_PER_ROUND % (len(items) - SINGLE_PER_ROUND)
                measured[kind].append(latencies_ms(call, items[offset : offset + SINGLE_PER_ROUND]))
            else:
                callers = 1 if kind == "inprocess_batch" else clients
                measured[kind].append(images_per_s(call, items[:BATCHES_PER_ROUND], callers))
        print(f"round {number + 1}/{rounds} done", file=sys.stderr, flush=True)
    return measured


def summary(
    rounds: dict[str, list], memory: dict[str, float], model: str, workers: int, clients: int
) -> dict:
    single_p50 = [float(np.percentile(times, 50)) for times in rounds["single"]]
    inprocess_p50 = [float(np.percentile(times, 50)) for times in rounds["inprocess_single"]]
    health_p50 = [float(np.percentile(times, 50)) for times in rounds["health"]]
    single_ratio = [ours / floor for ours, floor in zip(single_p50, inprocess_p50, strict=True)]
    batch_ratio = [
        ours / floor for ours, floor in zip(rounds["batch"], rounds["inprocess_batch"], strict=True)
    ]
    mlflow_ratio = [ours / theirs for ours, theirs in zip(rounds["pixels"], rounds["mlflow"], strict=True)]
    figures = {
        "model": model,
        "rounds": len(single_p50),
        "workers": workers,
        "clients": clients,
        "requests_single_per_round": SINGLE_PER_ROUND,
        "batch_size": BATCH,
        "batches_per_round": BATCHES_PER_ROUND,
        "p50_ms": round(float(np.median(single_p50)), 3),
        "p99_ms": round(float(np.percentile(np.concatenate(rounds["single"]), 99)), 3),
        "inprocess_single_p50_ms": round(float(np.median(inprocess_p50)), 3),
        "health_p50_ms": round(float(np.median(health_p50)), 3),
        "health_vs_inprocess": round(
            float(np.median([ours / floor for ours, floor in zip(health_p50, inprocess_p50, strict=True)])), 2
        ),
        "batch_images_per_s": round(float(np.median(rounds["batch"]))),
        "inprocess_batch_images_per_s": round(float(np.median(rounds["inprocess_batch"]))),
        "json_pixels_images_per_s": round(float(np.median(rounds["pixels"]))),
        "mlflow_images_per_s": round(float(np.median(rounds["mlflow"]))),
        "ratio_vs_mlflow": round(float(np.median(mlflow_ratio)), 2),
        "server_rss_mb": round(memory["Rss"], 1),
        "server_pss_mb": round(memory["Pss"], 1),
        "single_vs_inprocess": round(float(np.median(single_ratio)), 2),
        "batch_vs_inprocess": round(float(np.median(batch_ratio)), 2),
        "spread": {
            "p50_ms": spread(single_p50, 3),
            "inprocess_single_p50_ms": spread(inprocess_p50, 3),
            "health_p50_ms": spread(health_p50, 3),
            "batch_images_per_s": spread(rounds["batch"], 0),
            "inprocess_batch_images_per_s": spread(rounds["inprocess_batch"], 0),
            "ratio_vs_mlflow": spread(mlflow_ratio, 2),
            "single_vs_inprocess": spread(single_ratio, 2),
            "batch_vs_inprocess": spread(batch_ratio, 2),
        },
        "goals": GOALS,
    }
    figures["goals_met"] = {
        "single_vs_inprocess": figures["single_vs_inprocess"] <= GOALS["single_vs_inprocess_max"],
        "batch_vs_inprocess": figures["batch_vs_inprocess"] >= GOALS["batch_vs_inprocess_min"],
        "ratio_vs_mlflow": figures["ratio_vs_mlflow"] >= GOALS["ratio_vs_mlflow_min"],
        "server_rss_mb": figures["server_rss_mb"] <= GOALS["server_rss_mb_max"],
    }
    return figures


if __name__ == "__main__":
    main()
