"""Benchmark: the scoring server vs `mlflow models serve`, on the same registered model, over loopback.

    python benchmarks/serve.py [--registry URI] [--model models:/mnist-mlops@production]

Needs a registry with a model trained on the shared MNIST (`mnist-mlops run` makes one in ./mlflow.db).
Our server is the Azure ML inference server with `score.py`, one worker, key auth and the request log
on, as `mnist-mlops serve` runs it. Measured, sequentially from this client process:
- one MNIST test PNG per request: p50 / p99 latency;
- 128 PNGs per request (base64 JSON): images/s;
- 128 images per request as JSON pixel arrays, against both servers: the only body `mlflow models serve`
  takes for this model, so the ratio compares the two stacks on the same payload.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_inputs import arguments, test_pngs

from mnist_mlops.dataset import MNIST_IMAGE_SHAPE
from mnist_mlops.deployments import ensure_key, key_path
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.registry import client, registry_uri
from mnist_mlops.serving.config import read_key
from mnist_mlops.serving.scorer import RegistryModels
from mnist_mlops.serving.server import ScoringClient, free_port, running_server, server_environment

BATCH = 128


def latencies(call, bodies: list) -> np.ndarray:
    timings = []
    for body in bodies:
        started = time.perf_counter()
        call(body)
        timings.append((time.perf_counter() - started) * 1000)
    return np.array(timings)


def throughput(call, batches: list, images_per_batch: int) -> float:
    started = time.perf_counter()
    for batch in batches:
        call(batch)
    return len(batches) * images_per_batch / (time.perf_counter() - started)


def checked(status: int, body: dict, expected: list[int] | None = None) -> dict:
    if status != 200:
        raise SystemExit(f"unexpected HTTP {status}: {body}")
    if expected is not None and [item["class"] for item in body["predictions"]] != expected:
        raise SystemExit("the server's classes differ from the expected ones")
    return body


def ours(uri: str, model: str, pngs: list[bytes], pixel_batches: list[dict]) -> dict:
    models = RegistryModels(model, uri)
    key_file = ensure_key(key_path(uri, models.name))
    request_log = Path(tempfile.mkdtemp(prefix="mnist-mlops-bench-requests-"))  # on, as `serve` runs it
    environment = server_environment(model, registry=uri, key_file=key_file, request_log=request_log)
    with running_server(environment) as server:
        scoring = ScoringClient(server.url, read_key(str(key_file)))
        for png in pngs[:200]:
            checked(*scoring.score(png, "image/png"))
        single = latencies(lambda png: checked(*scoring.score(png, "image/png")), pngs)
        png_batches = [
            {"images": [base64.b64encode(png).decode() for png in pngs[start : start + BATCH]]}
            for start in range(0, len(pngs) - BATCH + 1, BATCH)
        ]
        encoded = [json.dumps(batch).encode() for batch in png_batches]
        batch_rate = throughput(
            lambda body: checked(*scoring.score(body, "application/json")), encoded, BATCH
        )
        pixel_bodies = [json.dumps(batch).encode() for batch in pixel_batches]
        pixel_rate = throughput(
            lambda body: checked(*scoring.score(body, "application/json")), pixel_bodies, BATCH
        )
        version = checked(*scoring.score(pngs[0], "image/png"))["model_version"]
    return {"single": single, "batch_rate": batch_rate, "pixel_rate": pixel_rate, "version": version}


def mlflow_baseline(uri: str, model_uri: str, pixel_batches: list[dict]) -> float:
    """`mlflow models serve` (the local env manager, as this machine needs) on the same version."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    # mlflow execs `uvicorn` by name: put this interpreter's scripts folder on PATH.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    log_path = Path(tempfile.gettempdir()) / "mlflow-serve-benchmark.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    baseline = ScoringClient(f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if baseline.request("GET", "/ping", b"", {})[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"mlflow models serve did not start (see {log_path})")
        bodies = [json.dumps({"inputs": batch["instances"]}).encode() for batch in pixel_batches]

        def call(body: bytes) -> None:
            status, payload = baseline.request(
                "POST", "/invocations", body, {"Content-Type": "application/json"}
            )
            if status != 200:
                raise SystemExit(f"mlflow models serve answered HTTP {status}: {payload[:200]!r}")

        for body in bodies[:2]:
            call(body)
        return throughput(call, bodies, BATCH)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    uri = registry_uri(args.registry)
    pngs, _ = test_pngs(args.tarball, args.images)
    pixels = decode_pngs(pngs, MNIST_IMAGE_SHAPE).images
    pixel_batches = [
        {"instances": pixels[start : start + BATCH].astype(int).tolist()}
        for start in range(0, len(pixels) - BATCH + 1, BATCH)
    ]
    measured = ours(uri, args.model, pngs, pixel_batches)
    name = RegistryModels(args.model, uri).name
    version_uri = f"models:/{name}/{measured['version']}"
    client(uri).get_model_version(name, measured["version"])
    mlflow_rate = mlflow_baseline(uri, version_uri, pixel_batches)
    print(
        json.dumps(
            {
                "model": version_uri,
                "requests_single": len(measured["single"]),
                "p50_ms": round(float(np.percentile(measured["single"], 50)), 3),
                "p99_ms": round(float(np.percentile(measured["single"], 99)), 3),
                "batch_size": BATCH,
                "batch_images_per_s": round(measured["batch_rate"]),
                "json_pixels_images_per_s": round(measured["pixel_rate"]),
                "mlflow_images_per_s": round(mlflow_rate),
                "ratio_vs_mlflow": round(measured["pixel_rate"] / mlflow_rate, 2),
                "ratio_png_vs_mlflow": round(measured["batch_rate"] / mlflow_rate, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
