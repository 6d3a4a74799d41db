"""Run the Azure ML inference server with our entry script on loopback, and talk to it.

`azmlinfsrv` always binds 0.0.0.0; `main` runs the same server start-up (its gunicorn configuration,
logging and entry-script loading) with the host set to 127.0.0.1, because a local model server with a
key on a laptop should not listen on every interface. `running_server` starts it as a child process and
waits until `init()` has loaded and warmed the model (the health route answers only after that).

Queueing: azmlinfsrv runs gunicorn's default sync workers, one request each; every other connection
waits in the kernel's listen backlog (2048) with no answer until a worker is free, however long that
takes. `main` runs gunicorn's threaded workers instead (`gthread`), each with one thread per request
its `AdmissionGate` admits (the one it scores and `max_queue` waiting) plus `SHED_THREADS` that answer
any further request at once with 503 and `Retry-After`. A worker accepts no more connections than it
has threads, so a full worker leaves new connections to an idle one; a worker with a request in hand
waits a moment before it accepts, so an idle worker takes the connection first; an idle worker answers
a small request that has arrived whole in its main thread, as the sync worker would (both in
`gunicorn_worker`); and keep-alive is off (as with the sync worker), so an idle client holds no thread.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.serving import config

ENTRY_SCRIPT = Path(__file__).with_name("score.py")
LOOPBACK = "127.0.0.1"
SHED_THREADS = 2
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number
HEARTBEAT_DIR = "/dev/shm"
"""Where gunicorn keeps each worker's heartbeat file, touched on every request: in memory, as gunicorn's
documentation advises (on this disk the touch took a sixth of a single-image request's time)."""
PARENT_PID_VARIABLE = "MNIST_MLOPS_SERVER_PARENT"
"""Set by `running_server`: the pid whose death, even by SIGKILL, stops the server it started."""
PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies


def main(argv: list[str] | None = None) -> None:
    """`python -m mnist_mlops.serving.server --port N [--workers W]`: the real server, on loopback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    parent = os.environ.pop(PARENT_PID_VARIABLE, None)
    if parent is not None:
        stop_with(int(parent))
    from azureml_inference_server_http import amlserver

    from mnist_mlops.serving.gunicorn_worker import ScoringLogger, ScoringWorker

    amlserver.DEFAULT_HOST = LOOPBACK
    _limit_malloc_arenas(MALLOC_ARENAS)
    threads = 1 + config.max_queue() + SHED_THREADS
    os.environ["GUNICORN_CMD_ARGS"] = (
        f"--worker-class {ScoringWorker.__module__}.{ScoringWorker.__name__} --threads {threads}"
        f" --worker-connections {threads} --keep-alive 0"
        f" --logger-class {ScoringLogger.__module__}.{ScoringLogger.__name__}"
        + (f" --worker-tmp-dir {HEARTBEAT_DIR}" if os.access(HEARTBEAT_DIR, os.W_OK | os.X_OK) else "")
    )
    sys.argv = [
        "azmlinfsrv",
        "--entry_script",
        str(ENTRY_SCRIPT),
        "--port",
        str(args.port),
        "--worker_count",
        str(args.workers),
    ]
    amlserver.run()


def stop_with(parent: int) -> None:
    """SIGTERM this process when its parent `parent` dies (the thread that started it, strictly): a
    server runs in a session of its own, so a deploy killed mid-validation would otherwise leave it
    serving, orphaned, on its port; a worker's fetch would otherwise run on after the worker."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _limit_malloc_arenas(arenas: int) -> None:
    """glibc gives threads that allocate at once arenas of their own (up to 8 per core) and keeps what
    they freed: a worker's request threads grew its memory by 26 MB over a minute of load, 5 MB with
    2 arenas. Set in the master before gunicorn forks, so every worker has it (no-op without glibc)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def server_environment(
    model_uri: str,
    *,
    registry: str,
    key_file: Path | None,
    max_batch: int | None = None,
    max_body_bytes: int | None = None,
    poll_seconds: float | None = None,
    request_log: Path | None = None,
    max_queue: int | None = None,
) -> dict[str, str]:
    """The environment `score.py` reads (see `mnist_mlops.serving.config`)."""
    settings = {
        config.MODEL_URI: model_uri,
        config.REGISTRY: registry,
        config.KEY_FILE: str(key_file) if key_file else None,
        config.MAX_BATCH: max_batch,
        config.MAX_BODY_BYTES: max_body_bytes,
        config.POLL_SECONDS: poll_seconds,
        config.REQUEST_LOG: str(request_log) if request_log else None,
        config.MAX_QUEUE: max_queue,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return {name: str(value) for name, value in settings.items() if value is not None}


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_server(
    environment: dict[str, str],
    *,
    port: int | None = None,
    workers: int = 1,
    log_path: Path | None = None,
    startup_seconds: float = 180,
) -> Iterator[RunningServer]:
    """Start the server as a child process; yield once it is healthy; stop it (SIGTERM) afterwards.

    The server also stops when the thread that started it ends (PR_SET_PDEATHSIG follows the forking
    thread, not the process): start it from a thread that outlives its use."""
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkstemp(prefix="mnist-mlops-server-", suffix=".log")[1])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_mlops.serving.server",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env={**os.environ, **environment, PARENT_PID_VARIABLE: str(os.getpid())},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(f"http://{LOOPBACK}:{port}", process, log_path)
    try:
        wait_until_healthy(server, startup_seconds)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, grace_seconds: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_seconds`: a child that hangs on shutdown
    must not outlive its caller."""
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_healthy(server: RunningServer, startup_seconds: float) -> None:
    """Return once the server answers its health route (the model loaded and warmed); a clear error,
    with the end of its log, when it exits first or is not healthy in time."""
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise UserInputError(
                f"the scoring server exited with status {server.process.returncode} while loading the model;"
                f" its log ({server.log_path}) ends with:\n{server.log_tail()}"
            )
        try:
            if ScoringClient(server.url).health():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise UserInputError(
        f"the scoring server did not become healthy in {startup_seconds:.0f} s; its log ({server.log_path})"
        f" ends with:\n{server.log_tail()}"
    )


class ScoringClient:
    """A minimal HTTP client for the scoring server (one connection per request, as gunicorn closes it)."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 30) -> None:
        host_port = url.removeprefix("http://").split("/", 1)[0]
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.key = key
        self.timeout = timeout

    def health(self) -> bool:
        status, _ = self.request("GET", "/", b"", {})
        return status == 200

    def score(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST /score; returns (status, parsed JSON body)."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if self.key and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self.key}"
        status, payload = self.request("POST", "/score", body, sent)
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, {"message": payload[:200].decode(errors="replace")}

    def score_json(self, document: dict) -> tuple[int, Any]:
        return self.score(json.dumps(document).encode(), "application/json")

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


if __name__ == "__main__":
    main()
