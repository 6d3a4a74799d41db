"""Crash trials: `mnist-mlops run` killed with SIGKILL (its whole process group) some time into a chosen
node, then run again plainly, and what must hold afterwards. Shared by tests/test_crash.py (a few trials
in CI) and benchmarks/crash.py (many).

A trial starts from a reference run that never crashed, in the same runs folder: on a registry of its
own, with a step cache that keeps only the entries of the nodes before the chosen one, so the killed run
reaches that node in seconds and the node itself really runs.

What is compared with the reference (`fingerprint`), since it is deterministic: the dataset's content
(`dataset_version`), the preprocessed arrays and baseline statistics, the trained weights (the `.h5`
inside the Keras file: the file's zip metadata and MLmodel carry save times), the training curves, the
evaluation's accuracy, confusion matrix and per-class figures, the verdict, whether a version was
registered and the deployment's outcome. Not compared: timestamps, latencies, run ids, version numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mnist_mlops import contracts
from mnist_mlops.atomic import STAGING_SUFFIXES
from mnist_mlops.hashing import content_sha256
from mnist_mlops.step_cache import StepCache

MNIST_MLOPS = Path(sys.executable).parent / "mnist-mlops"
SERVER_MODULE = "mnist_mlops.serving.server"


@dataclass(frozen=True)
class Workspace:
    """A runs folder and a registry folder at fixed paths, and the `mnist-mlops run` arguments (after
    `mnist-mlops`) that run the pipeline on them."""

    runs: Path
    registry: Path
    argv: tuple[str, ...]

    @classmethod
    def create(cls, root: Path, data: Path, settings: list[str]) -> Workspace:
        argv = ["run", "--data", str(data)]
        for setting in settings:
            argv += ["--set", setting]
        return cls.like(argv, root / "runs", root / "registry")

    @classmethod
    def like(cls, argv: list[str] | tuple[str, ...], runs: Path, registry: Path) -> Workspace:
        """The run `argv` (after `mnist-mlops`) on the runs folder `runs` and a registry in `registry`."""
        kept, skip = [], False
        for word in argv:
            if not skip and word not in ("--runs-dir", "--registry"):
                kept.append(word)
            skip = word in ("--runs-dir", "--registry")
        uri = f"sqlite:///{registry}/mlflow.db"
        return cls(runs, registry, (*kept, "--runs-dir", str(runs), "--registry", uri))

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.registry}/mlflow.db"

    def run(self, timeout: float = 900) -> tuple[int, Path | None, str]:
        """One plain run to its end: exit code, run folder (None if none was made) and its output."""
        before = self.run_folders()
        done = subprocess.run(
            [str(MNIST_MLOPS), *self.argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_environment(),
            check=False,
        )
        made = self.run_folders() - before
        return done.returncode, made.pop() if len(made) == 1 else None, done.stdout + done.stderr

    def run_folders(self) -> set[Path]:
        return {path for path in self.runs.glob("2*") if path.is_dir()} if self.runs.exists() else set()

    def reset(self, reference: dict, reference_cache: Path, node: str) -> Workspace:
        """This workspace's runs folder on a registry never used before, its step cache holding only the
        entries of the `reference` run's nodes before `node`, taken from `reference_cache` (this
        workspace's own, or another's). A new registry path, not the old one emptied: MLflow keeps one
        engine per database URI in a process, and its pooled connections go on reading a deleted
        database file, so a checker in this process would see the previous trial's registry."""
        names = [entry["name"] for entry in reference["nodes"]]
        kept = {
            f"{entry['cache_key']}.json": (reference_cache / f"{entry['cache_key']}.json").read_bytes()
            for entry in reference["nodes"][: names.index(node)]
        }
        cache = self.runs / ".cache"
        cache.mkdir(parents=True, exist_ok=True)
        for entry in cache.glob("*.json"):
            entry.unlink()
        for name, content in kept.items():
            (cache / name).write_bytes(content)
        fresh = self.registry.with_name(f"{self.registry.name}.{uuid.uuid4().hex[:8]}")
        return Workspace.like(self.argv, self.runs, fresh)


@dataclass(frozen=True)
class Kill:
    node: str
    """The node the kill landed in (`between nodes` after one ended and before the next began, `after
    the run` when it ended first)."""
    seconds_into_node: float
    output: str


def kill_inside(
    workspace: Workspace, node: str, delay: float, *, after: str | None = None, timeout: float = 900
) -> Kill:
    """Start a run; `delay` seconds after it says `[node] running` (with `after`: after the node's log
    first holds that text), SIGKILL its process group."""
    process = subprocess.Popen(
        [str(MNIST_MLOPS), *workspace.argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
        start_new_session=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.strip() == f"[{node}] running":
                started.set()

    def reached() -> bool:
        if not started.is_set() or after is None:
            return started.is_set()
        run_dir = next(Path(line.split(" in ", 1)[1].strip()) for line in lines if line.startswith("run "))
        log = run_dir / node / "log.txt"
        return log.is_file() and after in log.read_text(errors="replace")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not reached() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    began = time.monotonic()
    if reached():
        time.sleep(delay)
    elapsed = time.monotonic() - began
    with contextlib.suppress(ProcessLookupError):  # it ended before the kill
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    reader.join()
    return Kill(_landed(lines, process.returncode), round(elapsed, 3), "".join(lines))


def _landed(lines: list[str], code: int) -> str:
    """The node a run was in when it died, from its console lines."""
    if code != -signal.SIGKILL:
        return "after the run"
    running = None
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0].startswith("[") and words[1] in ("running", "done", "failed"):
            running = words[0].strip("[]") if words[1] == "running" else None
    return running or "between nodes"


def fingerprint(run_dir: Path) -> dict[str, str]:
    """The deterministic content of a finished run (see the module's docstring), as short hashes."""
    ingest = contracts.read_json(run_dir / "ingest" / "data_report.json", "data_report")
    preprocessed = run_dir / "preprocess" / "preprocessed"
    report = json.loads((run_dir / "evaluate" / "evaluation" / "evaluation_report.json").read_text())
    blessing = json.loads((run_dir / "evaluate" / "blessing.json").read_text())
    registration = json.loads((run_dir / "register" / "registration_record.json").read_text())
    deployment = json.loads((run_dir / "deploy" / "deployment_record.json").read_text())
    judged = {key: report[key] for key in ("accuracy", "confusion_matrix", "per_class", "test_count")}
    return {
        "dataset": ingest["dataset_version"],
        "preprocessed": _hash_of(
            {
                part: content_sha256(preprocessed / part)
                for part in ("train", "validation", "test", "baseline_statistics.json")
            }
        ),
        "model_weights": model_weights(run_dir),
        "training_curves": content_sha256(run_dir / "train" / "training_curves.png"),
        "evaluation": _hash_of(judged),
        "blessed": str(blessing["blessed"]),
        "registered": str(registration["registered"]),
        "deployed": deployment["outcome"],
    }


def model_weights(run_dir: Path) -> str:
    """The hash of the weights train saved (the Keras file's zip metadata carries the save time)."""
    with zipfile.ZipFile(run_dir / "train" / "model" / "data" / "model.keras") as keras_file:
        return hashlib.sha256(keras_file.read("model.weights.h5")).hexdigest()


def _hash_of(document: object) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def check(workspace: Workspace, rerun: Path, expected: dict[str, str]) -> list[str]:
    """What is wrong after a crash and a plain rerun (empty when all holds): the rerun's deterministic
    outputs against `expected`; every cache entry complete and unchanged; every registered version
    verified (`ready`), none left half-registered; `production` and `challenger` on ready versions;
    the deployment history replaying to where `production` is; nothing staged left in the rerun's
    folder; no scoring server left running on the registry; no run, in its record or in MLflow, still
    said to be running (the killed one was ended by the rerun)."""
    from mnist_mlops.deployments import production_stack, production_version, read_history
    from mnist_mlops.registry import READY_TAG, client, pointer_version

    problems = [
        f"{key}: {found[:12]} differs from the uncrashed run's {expected[key][:12]}"
        for key, found in fingerprint(rerun).items()
        if found != expected[key]
    ]
    cache = StepCache(workspace.runs / ".cache")
    for entry in sorted((workspace.runs / ".cache").glob("*.json")):
        outputs = cache.lookup(entry.stem)
        if outputs is None:
            problems.append(f"cache entry {entry.name} holds a missing, partial or changed output")
        elif staged := [o["path"] for o in outputs.values() if any(m in o["path"] for m in STAGING_SUFFIXES)]:
            problems.append(f"cache entry {entry.name} points at staged output {staged}")
    left = [str(path) for path in rerun.rglob("*") if any(m in path.name for m in STAGING_SUFFIXES)]
    problems += [f"staged output left in the rerun: {path}" for path in left]
    uri, name = workspace.uri, "mnist-mlops"
    versions = {str(v.version): v.tags or {} for v in client(uri).search_model_versions(f"name='{name}'")}
    problems += [
        f"version {version} is {tags.get(READY_TAG)}, not ready"
        for version, tags in versions.items()
        if tags.get(READY_TAG) != "ready"
    ]
    for pointer in ("production", "challenger"):
        version = pointer_version(uri, name, pointer)
        if version is not None and versions.get(version, {}).get(READY_TAG) != "ready":
            problems.append(f"{pointer} names version {version}, which is not ready")
    production, stack = production_version(uri, name), production_stack(read_history(uri, name))
    if (stack[-1] if stack else None) != production:
        problems.append(f"the deployment history ends at {stack[-1:]} but production is {production}")
    deployment = json.loads((rerun / "deploy" / "deployment_record.json").read_text())
    if deployment["outcome"] == "deployed" and deployment["model_version"] != production:
        problems.append(f"the rerun deployed v{deployment['model_version']} but production is {production}")
    problems += [f"scoring server left running: pid {pid}" for pid in servers_of(workspace)]
    problems += [
        f"run {record.parent.name} still says running"
        for record in workspace.runs.glob("*/run.json")
        if json.loads(record.read_text())["status"] == "running"
    ]
    tracked = client(uri)
    experiments = [experiment.experiment_id for experiment in tracked.search_experiments()]
    running = tracked.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    problems += [f"MLflow run {run.info.run_id} ({run.info.run_name}) still RUNNING" for run in running]
    return problems


def servers_of(workspace: Workspace) -> list[int]:
    """Scoring servers started for this workspace's registry that are still running."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            environment = (proc / "environ").read_bytes()
        except OSError:
            continue
        if SERVER_MODULE.encode() in command and str(workspace.registry).encode() in environment:
            found.append(int(proc.name))
    return found


def _environment() -> dict[str, str]:
    """This environment without MLflow's variables: a run decides its own tracking store."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
