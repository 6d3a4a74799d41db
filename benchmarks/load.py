"""Benchmark: the scoring server under many concurrent clients while production is deployed and rolled back.

    python benchmarks/load.py [--registry URI] [--model models:/mnist-mlops@production] [--test-data DIR]
                              [--seconds 60] [--clients 32] [--workers 1,2] [--max-queue N]

For each `--workers` setting, `mnist-mlops serve --workers N` (the real server, following
`@production`, key auth and request log on) is warmed up, then measured twice by `--clients`
concurrent asyncio clients (aiohttp, loopback, each request bounded by a timeout, one at a time per
client):
- throughput: `--throughput-seconds` of batches of `--throughput-batch` base64 PNGs only (large
  batches, so the clients' own CPU on these shared cores matters least): images/s per setting and
  `workers_scaling`, the largest setting's over the smallest's;
- load: `--seconds` (at least; see below) of mixed traffic, in every ten requests six single PNGs,
  two JSON batches of `--batch` PNGs and two malformed requests cycling through every kind of
  `mnist_mlops.serving.validation.invalid_requests`. A quarter of the way in, the other registered
  version is deployed with `mnist-mlops deploy` (the real component: infra validation in a server of
  its own on the same cores, then `production` moves); at 60%, or FOLLOW_SECONDS after the deploy if
  later, `mnist-mlops rollback` moves it back; the load goes on until both are done and followed.

Per request: the HTTP status (a 503 with `Retry-After` is `shed`, the server's queue was full, and the
client waits as told; any other 5xx is `status_5xx`), `connection_errors` (no connection made),
`dropped` (sent, no HTTP answer), `wrong` (a valid request answered 200 whose classes are not what the
answering version, named in the body, predicts in this process for those images, or whose
probabilities differ by more than 1e-4, or answered by a version that is neither), malformed requests
answered with another status than their kind's (`unexpected`). p50/p99 are the load's single-PNG
latencies, `images_per_s` its valid images answered per second, `rss_growth_mb` the server's whole
process tree (gunicorn master and workers) from before the load to its end (deploy, rollback and two
model swaps included). Counts are totals over the settings; latency, throughput and memory are the
largest setting's (each setting's under `per_workers`).

The registry is copied into a scratch folder (deploys and rollbacks never touch yours). It needs the
production version and one more ready, blessed version; with only one, the copy gets a second version
registered from the same artifacts (then `wrong` still checks every answer against the version that
gave it, but the two versions answer alike). `--test-data` is the preprocessed folder deploy takes its
canaries from (default: the production version's pipeline run beside the registry, where `mnist-mlops
run` leaves it). The last line printed is the JSON summary.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import tree_memory_mb
from serving_inputs import argument_parser, test_pngs

from mnist_mlops.deployments import (
    HISTORY_TAG,
    ensure_key,
    key_path,
    production_stack,
    production_version,
    read_history,
)
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.keys import read_key
from mnist_mlops.registry import READY_TAG, client, registry_uri, sqlite_file
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import RegistryModels
from mnist_mlops.serving.server import (
    RunningServer,
    free_port,
    stop_process,
    wait_until_healthy,
)
from mnist_mlops.serving.validation import InvalidRequest, invalid_requests

CLI = [sys.executable, "-m", "mnist_mlops.cli"]
MIX = ("single",) * 6 + ("batch",) * 2 + ("invalid",) * 2
THROUGHPUT_MIX = ("throughput",)
DEPLOY_AT, ROLLBACK_AT = 0.25, 0.6
FOLLOW_SECONDS = 6.0
"""Load kept up after a deploy before the rollback, and after the rollback before the end: the server
checks the alias every second, then a child process fetches the version (about 3 s, most of it
importing MLflow) before it is loaded and swapped in."""
REQUEST_TIMEOUT_S = 60
PROBABILITY_TOLERANCE = 1e-4
GOALS = {"status_5xx": 0, "shed_fraction_max": 0.05, "dropped": 0, "wrong": 0, "rss_growth_mb_max": 50.0}


@dataclass
class Tally:
    """What one worker setting's clients saw."""

    statuses: Counter = field(default_factory=Counter)
    requests: int = 0
    status_5xx: int = 0
    shed: int = 0
    connection_errors: int = 0
    dropped: int = 0
    wrong: int = 0
    unexpected: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    images: int = 0
    single_ms: list[float] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)


class Schedule:
    """When the clients stop: after `seconds`, and not before the deploy and rollback are done and
    followed for FOLLOW_SECONDS (a deploy under load can take longer than a short run)."""

    def __init__(self, seconds: float, *, changes: bool) -> None:
        self.started = time.perf_counter()
        self.seconds = seconds
        self.changes_done_at: float | None = None if changes else self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def over(self) -> bool:
        done = self.changes_done_at
        return (
            self.elapsed() >= self.seconds
            and done is not None
            and time.perf_counter() >= done + FOLLOW_SECONDS
        )


@dataclass(frozen=True)
class Traffic:
    """The requests the clients cycle through and what each valid one must be answered with."""

    pngs: list[bytes]
    batches: list[tuple[bytes, list[int]]]  # body, indices of its images in `pngs`
    throughput_batches: list[tuple[bytes, list[int]]]
    invalid: list[InvalidRequest]
    expected: dict[str, np.ndarray]  # version -> probabilities per image of `pngs`


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--test-data", type=Path, help="preprocessed folder for deploy's canaries")
    parser.add_argument("--seconds", type=float, default=60.0, help="load per worker setting (default 60)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--workers", default="1,2", help="server worker settings, comma-separated")
    parser.add_argument("--max-queue", type=int, help="the server's --max-queue (default: its own)")
    parser.add_argument("--batch", type=int, default=16, help="images per valid batch request")
    parser.add_argument(
        "--throughput-seconds", type=float, default=15.0, help="batches only, per setting (default 15)"
    )
    parser.add_argument(
        "--throughput-batch", type=int, default=64, help="images per request in the throughput phase"
    )
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temporary one)")
    parser.set_defaults(images=512)
    args = parser.parse_args()
    worker_settings = sorted({int(value) for value in args.workers.split(",")})
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="mnist-mlops-load-"))
    try:
        uri, name, versions, test_data = scratch_registry(
            registry_uri(args.registry), args.model, args.test_data, scratch
        )
        traffic = build_traffic(
            args.tarball,
            args.images,
            (args.batch, args.throughput_batch),
            uri,
            name,
            versions,
            key_path(uri, name),
        )
        per_workers = {}
        for workers in worker_settings:
            per_workers[workers] = run_setting(
                args, workers, uri, name, versions, test_data, traffic, scratch
            )
            print(f"--workers {workers}: {json.dumps(per_workers[workers])}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(summary(per_workers, args)))


def scratch_registry(
    uri: str, model: str, test_data: Path | None, scratch: Path
) -> tuple[str, str, tuple[str, str], Path]:
    """A copy of the SQLite registry in `scratch` with production and a second ready, blessed version
    (registered from production's artifacts when there is none); returns (its URI, the model name,
    (production, the other), the canaries' folder)."""
    database = sqlite_file(uri)
    if database is None or not database.is_file():
        raise SystemExit(f"{uri}: the load benchmark needs an embedded SQLite registry (mlflow.db) to copy")
    copy = scratch / "registry" / "mlflow.db"
    copy.parent.mkdir(parents=True)
    shutil.copy2(database, copy)
    scratch_uri = f"sqlite:///{copy}"
    name = RegistryModels(model, scratch_uri).name
    production = production_version(scratch_uri, name)
    if production is None:
        raise SystemExit(f"{name}: no production version in {uri} (run `mnist-mlops run` first)")
    registry = client(scratch_uri)
    usable = [
        str(found.version)
        for found in registry.search_model_versions(f"name='{name}'")
        if (found.tags or {}).get(READY_TAG) == "ready" and (found.tags or {}).get("blessed") == "True"
    ]
    others = sorted((version for version in usable if version != production), key=int)
    other = others[-1] if others else clone_version(scratch_uri, name, production)
    if production_stack(read_history(scratch_uri, name))[-1:] != [production]:
        raise SystemExit(f"{name}: production v{production} has no deploy in its history to roll back to")
    if test_data is None:
        run_id = registry.get_model_version(name, production).tags.get("pipeline_run_id", "")
        test_data = database.parent / "runs" / run_id / "preprocess" / "preprocessed"
        if not run_id or not (test_data / "manifest.json").is_file():
            raise SystemExit(f"no preprocessed folder at {test_data}: pass --test-data")
    return scratch_uri, name, (production, other), test_data


def clone_version(uri: str, name: str, version: str) -> str:
    """Register `version`'s artifacts again as a new version with its tags (history excepted)."""
    registry = client(uri)
    found = registry.get_model_version(name, version)
    tags = {key: value for key, value in (found.tags or {}).items() if not key.startswith(HISTORY_TAG)}
    clone = registry.create_model_version(name, found.source, run_id=found.run_id, tags=tags)
    registry.set_model_version_tag(name, clone.version, "load_benchmark_copy_of", version)
    print(f"registered v{clone.version} from v{version}'s artifacts (the registry had one version)")
    return str(clone.version)


def build_traffic(
    tarball: Path,
    count: int,
    batch_sizes: tuple[int, int],
    uri: str,
    name: str,
    versions: tuple[str, str],
    key_file: Path,
) -> Traffic:
    """`count` test PNGs, batch bodies of both sizes (the mixed load's, the throughput phase's), the
    malformed catalogue, and each version's own in-process predictions for every PNG."""
    pngs, _ = test_pngs(tarball, count)
    models = RegistryModels(f"models:/{name}/{versions[0]}", uri)
    loaded = {version: models.load(version) for version in versions}
    images = decode_pngs(pngs, loaded[versions[0]].interface.image_shape).images
    expected = {version: model.predict(images) for version, model in loaded.items()}
    mixed, throughput = (batch_bodies(pngs, size) for size in batch_sizes)
    invalid = invalid_requests(images[0], Limits(), read_key(ensure_key(key_file)))
    return Traffic(pngs, mixed, throughput, invalid, expected)


def batch_bodies(pngs: list[bytes], size: int) -> list[tuple[bytes, list[int]]]:
    if not 0 < size <= len(pngs):
        raise SystemExit(f"batches of {size}: expected 1 to --images ({len(pngs)}) images")
    bodies = []
    for start in range(0, len(pngs) - size + 1, size):
        indices = list(range(start, start + size))
        body = {"images": [base64.b64encode(pngs[i]).decode() for i in indices]}
        bodies.append((json.dumps(body).encode(), indices))
    return bodies


def run_setting(
    args,
    workers: int,
    uri: str,
    name: str,
    versions: tuple[str, str],
    test_data: Path,
    traffic: Traffic,
    scratch: Path,
) -> dict:
    """Serve with `workers`, warm up, then load for `args.seconds` with a deploy and a rollback."""
    port = free_port()
    command = [*CLI, "serve", "--model", f"models:/{name}@production", "--registry", uri]
    command += ["--port", str(port), "--workers", str(workers), "--poll-seconds", "1"]
    if args.max_queue is not None:
        command += ["--max-queue", str(args.max_queue)]
    log_path = scratch / f"serve-{workers}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(RunningServer(url, server, log_path), startup_seconds=180)
        key = read_key(key_path(uri, name))
        warm_up = Schedule(min(args.seconds, 10) / 2, changes=False)
        asyncio.run(load(url, key, traffic, args.clients, warm_up, Tally()))
        throughput = Tally()
        capacity = Schedule(args.throughput_seconds, changes=False)
        asyncio.run(load(url, key, traffic, args.clients, capacity, throughput, THROUGHPUT_MIX))
        throughput_images_per_s = throughput.images / capacity.elapsed()
        rss_before = tree_memory_mb(server.pid)
        tally, changes, schedule = Tally(), {}, Schedule(args.seconds, changes=True)
        record = scratch / f"deploy-{workers}.json"
        changer = threading.Thread(
            target=deploy_and_roll_back, args=(uri, name, versions[1], test_data, schedule, changes, record)
        )
        changer.start()
        asyncio.run(load(url, key, traffic, args.clients, schedule, tally))
        seconds = schedule.elapsed()
        changer.join()
        rss_after = tree_memory_mb(server.pid)
    finally:
        stop_process(server)
    return figures(tally, seconds, rss_before, rss_after, changes) | {
        "throughput_images_per_s": round(throughput_images_per_s, 1),
        "throughput_wrong": throughput.wrong,
    }


def deploy_and_roll_back(
    uri: str, name: str, version: str, test_data: Path, schedule: Schedule, changes: dict, record: Path
) -> None:
    """At DEPLOY_AT of the load, deploy `version` with the real CLI; at ROLLBACK_AT (or FOLLOW_SECONDS
    after the deploy, if later), roll back with it."""
    try:
        time.sleep(schedule.seconds * DEPLOY_AT)
        deploy = [*CLI, "deploy", "--model", f"models:/{name}/{version}", "--test-data", str(test_data)]
        deploy += ["--deployment-record", str(record), "--target", "local", "--registry", uri]
        deploy += ["--max-canary-p99-ms", "2000"]  # its server shares the cores with the load
        changes["deploy"] = run_timed(deploy, schedule)
        time.sleep(max(schedule.seconds * ROLLBACK_AT - schedule.elapsed(), FOLLOW_SECONDS))
        changes["rollback"] = run_timed([*CLI, "rollback", "--name", name, "--registry", uri], schedule)
    finally:
        schedule.changes_done_at = time.perf_counter()


def run_timed(command: list[str], schedule: Schedule) -> dict:
    begun = schedule.elapsed()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{' '.join(command[3:5])} failed:\n{done.stdout}\n{done.stderr}", file=sys.stderr, flush=True)
    return {"ok": done.returncode == 0, "start_s": round(begun, 1), "end_s": round(schedule.elapsed(), 1)}


async def load(
    url: str,
    key: str,
    traffic: Traffic,
    clients: int,
    schedule: Schedule,
    tally: Tally,
    mix: tuple[str, ...] = MIX,
) -> None:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=clients, force_close=True)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=connector) as session:
        await asyncio.gather(
            *(one_client(session, key, traffic, mix, number, schedule, tally) for number in range(clients))
        )


@dataclass(frozen=True)
class Outgoing:
    kind: str  # "single", "batch" or "invalid"
    method: str
    body: bytes
    headers: dict[str, str]
    images: list[int]  # the valid images it carries, by index into `Traffic.pngs`
    invalid: InvalidRequest | None = None


def outgoing(traffic: Traffic, kind: str, position: int, key: str) -> Outgoing:
    authorized = {"Authorization": f"Bearer {key}"}
    if kind == "single":
        index = position % len(traffic.pngs)
        headers = {"Content-Type": "image/png", **authorized}
        return Outgoing(kind, "POST", traffic.pngs[index], headers, [index])
    if kind in ("batch", "throughput"):
        bodies = traffic.batches if kind == "batch" else traffic.throughput_batches
        body, indices = bodies[position % len(bodies)]
        return Outgoing(kind, "POST", body, {"Content-Type": "application/json", **authorized}, indices)
    bad = traffic.invalid[position % len(traffic.invalid)]
    headers = {"Content-Type": bad.content_type, **authorized, **bad.headers}  # as validation.send_invalid
    sent = {name: value for name, value in headers.items() if value}
    return Outgoing(kind, bad.method, bad.body, sent, [], bad)


async def one_client(
    session: aiohttp.ClientSession,
    key: str,
    traffic: Traffic,
    mix: tuple[str, ...],
    number: int,
    schedule: Schedule,
    tally: Tally,
) -> None:
    """One client: requests in `mix` order (offset by its number), one at a time, until the schedule ends."""
    kinds = itertools.islice(itertools.cycle(mix), number, None)
    for sent, kind in enumerate(kinds):
        if schedule.over():
            return
        wait = await exchange(session, outgoing(traffic, kind, number * 7919 + sent, key), traffic, tally)
        if wait:
            await asyncio.sleep(wait)


async def exchange(
    session: aiohttp.ClientSession, request: Outgoing, traffic: Traffic, tally: Tally
) -> float:
    """Send one request and tally its outcome; returns how long the server asked the client to wait."""
    tally.requests += 1
    started = time.perf_counter()
    try:
        async with session.request(
            request.method, "/score", data=request.body, headers=request.headers
        ) as response:
            payload = await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except aiohttp.ClientConnectorError:
        tally.connection_errors += 1
        return 0.5
    except (TimeoutError, aiohttp.ClientError):
        tally.dropped += 1
        return 0.0
    elapsed_ms = (time.perf_counter() - started) * 1000
    tally.statuses[status] += 1
    if status == 503 and retry_after is not None:
        tally.shed += 1
        return min(float(retry_after), 5.0)
    if status >= 500:
        tally.status_5xx += 1
    if request.invalid is not None:
        if status != request.invalid.expected_status:
            tally.unexpected[f"{request.invalid.kind}:{status}"] += 1
        return 0.0
    if status != 200:
        tally.unexpected[f"{request.kind}:{status}"] += 1
        return 0.0
    answer = json.loads(payload)
    version = answer.get("model_version")
    tally.versions[version] += 1
    tally.images += len(request.images)
    (tally.single_ms if request.kind == "single" else tally.batch_ms).append(elapsed_ms)
    if not answers_as(answer, traffic.expected.get(version), request.images):
        tally.wrong += 1
    return 0.0


def answers_as(answer: dict, expected: np.ndarray | None, indices: list[int]) -> bool:
    """Whether `answer` is what its version predicts for these images: same classes, probabilities
    within PROBABILITY_TOLERANCE (the server rounds them to 6 decimals)."""
    if expected is None or len(answer["predictions"]) != len(indices):
        return False
    got = np.array([prediction["probabilities"] for prediction in answer["predictions"]])
    wanted = expected[indices]
    classes = [prediction["class"] for prediction in answer["predictions"]]
    return classes == wanted.argmax(axis=1).tolist() and bool(
        np.abs(got - wanted).max() <= PROBABILITY_TOLERANCE
    )


def figures(tally: Tally, seconds: float, rss_before: float, rss_after: float, changes: dict) -> dict:
    percentile = lambda values, q: round(float(np.percentile(values, q)), 2) if values else None  # noqa: E731
    return {
        "requests": tally.requests,
        "status_5xx": tally.status_5xx,
        "shed": tally.shed,
        "connection_errors": tally.connection_errors,
        "dropped": tally.dropped,
        "wrong": tally.wrong,
        "unexpected": dict(tally.unexpected),
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "answers_by_version": dict(tally.versions),
        "seconds": round(seconds, 1),
        "p50_ms": percentile(tally.single_ms, 50),
        "p99_ms": percentile(tally.single_ms, 99),
        "batch_p50_ms": percentile(tally.batch_ms, 50),
        "batch_p99_ms": percentile(tally.batch_ms, 99),
        "images_per_s": round(tally.images / seconds, 1),
        "rss_start_mb": round(rss_before, 1),
        "rss_end_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "deploy": changes.get("deploy"),
        "rollback": changes.get("rollback"),
    }


def summary(per_workers: dict[int, dict], args) -> dict:
    largest, smallest = per_workers[max(per_workers)], per_workers[min(per_workers)]
    total = lambda key: sum(figures[key] for figures in per_workers.values())  # noqa: E731
    changed = lambda change: sum(  # noqa: E731
        bool(figures[change] and figures[change]["ok"]) for figures in per_workers.values()
    )
    result = {
        "requests": total("requests"),
        "status_5xx": total("status_5xx"),
        "shed": total("shed"),
        "connection_errors": total("connection_errors"),
        "dropped": total("dropped"),
        "wrong": total("wrong") + total("throughput_wrong"),
        "p50_ms": largest["p50_ms"],
        "p99_ms": largest["p99_ms"],
        "images_per_s": largest["images_per_s"],
        "rss_growth_mb": max(figures["rss_growth_mb"] for figures in per_workers.values()),
        "deploys_during_load": changed("deploy"),
        "rollbacks_during_load": changed("rollback"),
        "workers": max(per_workers),
        "workers_scaling": round(largest["throughput_images_per_s"] / smallest["throughput_images_per_s"], 2),
        "throughput_images_per_s": {
            str(workers): figures["throughput_images_per_s"] for workers, figures in per_workers.items()
        },
        "clients": args.clients,
        "seconds_per_setting": args.seconds,
        "per_workers": {str(workers): figures for workers, figures in per_workers.items()},
        "goals": GOALS,
    }
    result["shed_fraction"] = round(result["shed"] / max(result["requests"], 1), 4)
    result["goals_met"] = {
        "status_5xx": result["status_5xx"] == 0,
        "shed_fraction": result["shed_fraction"] < GOALS["shed_fraction_max"],
        "dropped": result["dropped"] == 0 and result["connection_errors"] == 0,
        "wrong": result["wrong"] == 0,
        "rss_growth_mb": result["rss_growth_mb"] < GOALS["rss_growth_mb_max"],
        "deploy_and_rollback": result["deploys_during_load"]
        == result["rollbacks_during_load"]
        == len(per_workers),
        "workers_scaling": len(per_workers) == 1 or result["workers_scaling"] > 1.0,
        "malformed_answered_as_expected": not any(figures["unexpected"] for figures in per_workers.values()),
    }
    return result


if __name__ == "__main__":
    try:
        main()
    except UserInputError as error:
        raise SystemExit(f"error: {error}") from None
