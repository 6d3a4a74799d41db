"""Run a pipeline graph on this machine: each node runs its component's container command in its own
process (or, with isolation "container", inside its component image), with inputs and outputs bound to
folders under a run directory, through a content-addressed step cache, writing a `run.json` record.

The graph comes from `pipelines/graph.py`. The runner knows no component by name: how a step may be
reused is each component's own `local_cache` policy in its metadata.yaml (`ports.load_metadata`):
`content` (inputs and parameters decide the result), `never` (it reads the outside world), `source`
(ingest: keyed by its source's content and the day) or `registry` (the result comes from or lives in
the registry too, as the champion, a registration, a deployment: reused only while the registry still
agrees); `annotations` lists
parameters that only label the result and stay out of the key; `reuse_when_same_content` names an input
that adds nothing to judge when it holds the same content as another (`step_cache.SameContentRule`:
evaluate's champion that is the challenger itself). A node reused that way is reported as cached, with
the rule's reason on the console and in the run's outcome. A component declared `local_in_process` runs
its executor in the runner's process rather than its command in a new one (`_execute_in_process`).

One run at a time per runs folder: a run holds its step cache's lock (`StepCache.held_by`), and a
second one waits for it, naming the lock and its holder. A run killed anywhere leaves nothing a rerun
would take for finished (outputs and cache entries are renamed into place whole); a full disk stops
the run with one line naming the disk and the node (`_stop_on_full_disk`).

A sweep (`--sweep`, `pipelines.sweep`) runs its node once per trial as `<node>.trial-<n>`, each like any
node (cache, folder, MLflow run), and gives the nodes downstream the best trial's outputs in the node's
own folder; run.json records every trial under the node's `sweep`.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from mnist_mlops import contracts
from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import (
    DISK_FULL_EXIT_CODE,
    UserInputError,
    is_disk_full,
    report_disk_full,
    reported_full_file,
)
from mnist_mlops.hashing import content_sha256
from mnist_mlops.pipelines.graph import (
    Node,
    Ref,
    apply_overrides,
    bind_parameters,
    nodes_from_aml,
    output_path,
    parameter_overrides,
    ref_path,
    training_pipeline,
)
from mnist_mlops.pipelines.run_report import report_finished_run
from mnist_mlops.pipelines.sweep import Sweep, parse_sweep
from mnist_mlops.ports import load_metadata, load_spec
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import exclusive, registry_uri
from mnist_mlops.runner import is_artifact, run_component
from mnist_mlops.step_cache import SameContentRule, StepCache, link_copy, step_key
from mnist_mlops.tracking import TRACKING_SWITCH, PipelineRuns, end_interrupted
from mnist_mlops.uris import redact, scrub

PIPELINE = "mnist_mlops_training"


def run_pipeline_job(
    job: Any,
    *,
    runs_dir: Path = Path("runs"),
    registry: str | None = None,
    use_cache: bool = True,
    tracking: bool = True,
) -> tuple[int, Path]:
    """Run an AML pipeline job of these components on this machine; returns (exit code, run folder)."""
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    run_dir = runs_dir / run_id
    options = RunOptions(use_cache=use_cache, registry=registry, tracking=tracking)
    cache = StepCache(runs_dir / ".cache")
    with _holding(cache, run_id, options):
        run_dir.mkdir(parents=True)
        return run_nodes(nodes_from_aml(job), run_dir, cache, options), run_dir


@dataclass
class RunOptions:
    use_cache: bool = True
    isolation: str = "process"
    registry: str | None = None
    tracking: bool = True
    """MLflow runs on the run's registry: a parent per pipeline run, a child per node."""
    sweep: Sweep | None = None
    """A node trained once per point of a grid, going on with the best trial (`pipelines.sweep`)."""
    verbose: bool = False
    """Nodes' whole output on the console too, not only their progress (all of it is in their log.txt)."""


def new_run_record(run_id: str) -> dict[str, Any]:
    """The record of run `run_id` as it starts: running, no node done, not tracked yet."""
    return {
        "schema_version": 1,
        "run_id": run_id,
        "pipeline": PIPELINE,
        "started_at": utc_iso(datetime.now(UTC)),
        "finished_at": None,
        "status": "running",
        "nodes": [],
        "lineage": {"dataset_version": None, "model_version": None, "deployed": False},
        "outcome": "running",
        "tracking": None,
    }


def run_nodes(nodes: list[Node], run_dir: Path, cache: StepCache, options: RunOptions) -> int:
    """Run `nodes` in order through the cache; print progress and a summary; write run.json."""
    record = new_run_record(run_dir.name)
    runs = _pipeline_runs(options, run_dir)
    if runs is not None:
        record["tracking"] = {
            "uri": redact(runs.uri),
            "experiment_id": runs.experiment_id,
            "run_id": runs.run_id,
        }
        print(f"MLflow run {runs.run_id} (experiment {PIPELINE}) in {redact(runs.uri)}", flush=True)
    stage = "the run's record"  # what a full disk stopped, if one does
    try:
        _write_record(run_dir, record)
        known: dict[str, str] = {}  # output path -> content hash, so a downstream input is not hashed again
        notes: list[str] = []  # why a node was reused other than by its own key
        for node in nodes:
            stage = f"node {node.name}"
            try:
                if options.sweep is not None and node.name == options.sweep.node:
                    entry, note = _run_sweep(node, nodes, run_dir, cache, options, known, runs), None
                else:
                    entry, note = _run_node(node, nodes, run_dir, cache, options, known, runs)
            except UserInputError as error:  # the tracking store failed between nodes: say so in run.json too
                _finish(run_dir, record, _folders(nodes, run_dir), "failed", f"{node.name}: {error}")
                raise
            if note:
                notes.append(f"{node.name} reused: {note}")
            known |= {output["path"]: output["sha256"] for output in entry["outputs"].values()}
            record["nodes"].append(entry)
            _write_record(run_dir, record)
            _announce(entry)
            if entry["status"] == "failed":
                tail = (
                    Path(entry["log"]).read_text().strip().splitlines()[-1:]
                    if Path(entry["log"]).is_file()
                    else []
                )
                print(f"node {node.name} failed: {' '.join(tail)}\n  log: {entry['log']}")
                _summary(record["nodes"])
                _finish(
                    run_dir,
                    record,
                    _folders(nodes, run_dir),
                    "failed",
                    f"{node.name} failed (log: {entry['log']})",
                )
                if runs is not None:
                    runs.finish(runs.run_id, succeeded=False)
                return 1
        stage = "the run's record and report"
        _summary(record["nodes"])
        folders = _folders(nodes, run_dir)
        reused = {
            node.component
            for node, entry in zip(nodes, record["nodes"], strict=True)
            if entry["status"] == "cached"
        }
        _finish(run_dir, record, folders, "succeeded", _outcome(folders, reused, notes))
        if runs is not None:
            runs.finish(runs.run_id, succeeded=True)
        try:
            _closing(run_dir, record, folders, registry_uri(options.registry))
        except (OSError, UserInputError) as error:  # the run succeeded: only the advice is missing
            print(f"warning: no serve and curl lines: {error}", file=sys.stderr)
    except OSError as error:
        if not is_disk_full(error):
            raise
        return _stop_on_full_disk(run_dir, record, runs, stage, error)
    return 0


def _stop_on_full_disk(
    run_dir: Path, record: dict, runs: PipelineRuns | None, stage: str, error: OSError
) -> int:
    """A disk filled up (under a node's output, the registry or the temporary folder, or the runner's
    own record, cache entry or log): one line naming the disk and the node, the run recorded as failed
    if the record still fits. The disk is the one holding the file the write failed on, when known, else
    the runs folder's. Nothing half-written stays behind: outputs, cache entries and run.json are staged
    and renamed into place, and a failed node's staged outputs are removed."""
    full = Path(error.filename) if error.filename else run_dir
    disk = _mount_point(next(path for path in (full, *full.parents) if path.exists()))
    usage = shutil.disk_usage(disk)
    whose = f"the runs folder {run_dir.parent}" if disk == _mount_point(run_dir) else str(full)
    message = (
        f"{stage} stopped: no space left on {disk} ({usage.free // 1024} KiB free of"
        f" {usage.total // 1024} KiB), the disk of {whose}; free space and run"
        " again (steps that finished are reused)"
    )
    print(f"error: {message}", file=sys.stderr, flush=True)
    record |= {"status": "failed", "finished_at": utc_iso(datetime.now(UTC)), "outcome": message}
    with suppress(OSError):  # the disk may not even take the record: it stays as last written
        _write_record(run_dir, record)
    if runs is not None:
        runs.finish(runs.run_id, succeeded=False)
    return 1


def _mount_point(path: Path) -> Path:
    """The root of the file system holding `path`."""
    path = path.resolve()
    device = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def _announce(entry: dict) -> None:
    """The console line of a node (or a sweep's trial) that has ended."""
    print(f"[{entry['name']}] {entry['status']} in {entry['seconds']:.1f}s", flush=True)


def _pipeline_runs(options: RunOptions, run_dir: Path) -> PipelineRuns | None:
    """The pipeline's MLflow runs on the run's registry, or None with tracking off."""
    if not options.tracking:
        return None
    tags = {"mnist_mlops.run_dir": str(run_dir.resolve()), "mnist_mlops.pipeline": PIPELINE}
    uri = registry_uri(options.registry)
    with exclusive(uri):  # a new registry's tables are created once, by one process
        return PipelineRuns(uri, PIPELINE, run_dir.name, tags)


def _run_node(
    node: Node,
    nodes: list[Node],
    run_dir: Path,
    cache: StepCache,
    options: RunOptions,
    known: dict[str, str],
    runs: PipelineRuns | None,
) -> tuple[dict, str | None]:
    """Reuse or run one node; returns its run_record entry and, when a `SameContentRule` let it be
    reused, the rule's reason."""
    spec = load_spec(node.component)
    inputs = {
        port: ref_path(run_dir, value, nodes) if isinstance(value, Ref) else value
        for port, value in node.inputs.items()
        if value is not None
    }
    outputs = {port: output_path(run_dir, node.name, node.component, port) for port in spec["outputs"]}
    artifacts = {
        port: known.get(str(path)) or content_sha256(Path(path))
        for port, path in inputs.items()
        if is_artifact(spec["inputs"][port])
    }
    parameters = {port: value for port, value in inputs.items() if port not in artifacts}
    metadata = load_metadata(node.component)
    policy = metadata.get("local_cache", "content")
    keyed = {port: value for port, value in parameters.items() if port not in metadata.get("annotations", [])}
    if "registry" in spec["inputs"]:
        from mnist_mlops.registry import registry_uri

        keyed["registry"] = registry_uri(options.registry)
    reusable = policy != "never"
    if policy == "source":
        source = _source_identity(parameters.get("source_uri"), parameters.get("source_sha256"))
        reusable = source is not None or "source_data" in artifacts
        keyed |= {"source_content": source, "day": _today()}
    key = step_key(node.component, artifacts, keyed)
    log = run_dir / node.name / "log.txt"
    entry = {
        "name": node.name,
        "component": spec["name"],
        "component_version": str(spec["version"]),
        "status": "done",
        "cache_key": key,
        "seconds": 0.0,
        "inputs": {port: {"path": str(inputs[port]), "sha256": sha} for port, sha in artifacts.items()},
        "parameters": {port: _plain(value) for port, value in parameters.items()},
        "outputs": {},
        "log": str(log),
    }
    rule = SameContentRule.from_metadata(metadata)
    candidates = [(key, None)]
    also_file_under = None  # a result judged against anything but `same_as` itself becomes the standing one
    if rule is not None:
        standing = rule.standing_key(node.component, artifacts, keyed)
        if rule.holds(inputs, artifacts):
            candidates.insert(0, (standing, rule.reason()))
        else:
            also_file_under = standing
    hit = (
        _reusable_hit(cache, candidates, policy, options.registry) if options.use_cache and reusable else None
    )
    if hit:
        found, note, cached = hit
        if also_file_under:
            cache.record(also_file_under, cached)
        print(f"[{node.name}] cached ({found[:12]}){f': {note}' if note else ''}", flush=True)
        for port, path in outputs.items():
            link_copy(Path(cached[port]["path"]), path)
        entry |= {"reused_because": note} if note else {}
        if runs is not None:
            runs.cached_node(node.name, spec["name"], found, note)
        entry |= {
            "status": "cached",
            "cache_key": found,
            "outputs": {
                port: {"path": str(outputs[port]), "sha256": cached[port]["sha256"]} for port in outputs
            },
        }
        return entry, note
    print(f"[{node.name}] running", flush=True)
    started = time.perf_counter()
    node_run = runs.start_node(node.name, spec["name"], key, also_file_under) if runs is not None else None
    environment = runs.environment(node_run) if runs is not None else {TRACKING_SWITCH: "off"}
    try:
        code = _execute(node, inputs, outputs, log, options, environment)
    except BaseException:  # interrupted, or refused before it ran: its MLflow run is not left running
        if runs is not None:
            runs.finish(node_run, succeeded=False)
        raise
    entry["seconds"] = round(time.perf_counter() - started, 3)
    if code != 0:
        entry["status"] = "failed"
        if runs is not None:
            runs.finish(node_run, succeeded=False)
        if code == DISK_FULL_EXIT_CODE:  # its log says which file, unless the log is on the full disk
            readable = options.isolation == "process" and log.is_file()  # a container's paths are its own
            reported = reported_full_file(log.read_text(errors="replace")) if readable else None
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), reported or str(run_dir / node.name))
        return entry, None
    stored = cache.store(key, outputs)  # before the run's status: a store that is down loses no work
    if also_file_under:
        cache.record(also_file_under, stored)
    if runs is not None:
        runs.finish(node_run, succeeded=True)
    entry["outputs"] = {
        port: {"path": str(outputs[port]), "sha256": stored[port]["sha256"]} for port in outputs
    }
    return entry, None


def _run_sweep(
    node: Node,
    nodes: list[Node],
    run_dir: Path,
    cache: StepCache,
    options: RunOptions,
    known: dict[str, str],
    runs: PipelineRuns | None,
) -> dict:
    """Run the sweep's trials as nodes `<node>.trial-<n>` (each through the step cache, in its own folder
    and MLflow run), then place the best trial's outputs as the node's own, for the nodes downstream.
    A failed trial fails the sweep: a pick among the rest would hide a configuration that breaks."""
    objective = options.sweep.objective
    spec = load_spec(node.component)
    trials: list[dict] = []
    entries: list[dict] = []
    record = {"objective": {"metric": objective.metric, "goal": objective.goal}, "trials": trials}
    for number, values in enumerate(options.sweep.grid(), start=1):
        trial = Node(f"{node.name}.trial-{number}", node.component, node.inputs | values)
        entry, _ = _run_node(trial, nodes, run_dir, cache, options, known, runs)
        _announce(entry)
        trials.append(
            {
                "name": trial.name,
                "parameters": {port: _plain(value) for port, value in values.items()},
                "status": entry["status"],
                "cache_key": entry["cache_key"],
                "seconds": entry["seconds"],
                "folder": str(run_dir / trial.name),
                "objective": None,
                "chosen": False,
            }
        )
        entries.append(entry)
        if entry["status"] == "failed":
            return entry | {"name": node.name, "sweep": record}
        trials[-1]["objective"] = objective.value(Path(entry["outputs"][objective.summary_port]["path"]))
    best = objective.best([trial["objective"] for trial in trials])
    trials[best]["chosen"] = True
    chosen = entries[best]
    outputs = {port: output_path(run_dir, node.name, node.component, port) for port in spec["outputs"]}
    for port, path in outputs.items():
        link_copy(Path(chosen["outputs"][port]["path"]), path)
    note = (
        f"the best of {len(trials)} trials by {objective.metric}: {trials[best]['name']}"
        f" ({objective.metric} {trials[best]['objective']:.4f})"
    )
    print(f"[{node.name}] {note}", flush=True)
    if runs is not None:  # the node's own run links to the chosen trial's
        runs.cached_node(node.name, spec["name"], chosen["cache_key"], note, status="chosen_trial")
    return chosen | {
        "name": node.name,
        "status": "cached" if all(entry["status"] == "cached" for entry in entries) else "done",
        "seconds": round(sum(entry["seconds"] for entry in entries), 3),
        "outputs": {
            port: {"path": str(path), "sha256": chosen["outputs"][port]["sha256"]}
            for port, path in outputs.items()
        },
        "sweep": record | {"chosen": trials[best]["name"]},
    }


def _reusable_hit(
    cache: StepCache, candidates: list[tuple[str, str | None]], policy: str, registry: str | None
) -> tuple[str, str | None, dict[str, dict[str, str]]] | None:
    """The first (key, reason) candidate with a cached result the policy lets us reuse, and that result."""
    for key, note in candidates:
        cached = cache.lookup(key)
        if cached and (policy != "registry" or _registry_agrees(cached, registry)):
            return key, note, cached
    return None


def _execute(
    node: Node, inputs: dict, outputs: dict, log: Path, options: RunOptions, environment: dict[str, str]
) -> int:
    """Run the node's component, its output in `log` and its progress on the console as `[node] ...`;
    `environment`: the variables that attach it to its MLflow run. In a container (no network, only its
    own folders) the node logs nothing: its run records status only."""
    if options.isolation == "process" and load_metadata(node.component).get("local_in_process"):
        code = _execute_in_process(node.component, inputs, outputs, log, environment)
        if options.verbose:  # what its command's output would have shown, once it ended
            lines = log.read_text().splitlines(keepends=True)
            print("".join(f"[{node.name}] {line}" for line in lines), end="", flush=True)
        return code
    if options.isolation == "process":
        return run_component(
            node.component,
            inputs,
            outputs,
            log_path=log,
            environment=environment,
            label=node.name,
            verbose=options.verbose,
        ).returncode
    from mnist_mlops import containers
    from mnist_mlops.registry import registry_uri, sqlite_file

    services = {}
    if "registry" in load_spec(node.component)["inputs"]:
        database = sqlite_file(registry_uri(options.registry))
        if database is None:
            raise UserInputError("--isolation container needs the embedded SQLite registry (a local file)")
        database.parent.mkdir(parents=True, exist_ok=True)
        services["/mnt/registry"] = database.parent
        inputs = inputs | {"registry": f"sqlite:////mnt/registry/{database.name}"}
    source = inputs.get("source_uri")
    if load_metadata(node.component).get("local_cache") == "source" and source and Path(source).exists():
        # a local source is mounted read-only like any input; the container has no network
        inputs = {port: value for port, value in inputs.items() if port != "source_uri"} | {
            "source_data": source
        }
    tag = containers.build_image(containers.environment_of(node.component))
    result = containers.run_in_container(
        node.component, tag, inputs, outputs, services=services, environment={TRACKING_SWITCH: "off"}
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    return result.returncode


def _execute_in_process(
    component: str, inputs: dict, outputs: dict, log: Path, environment: dict[str, str]
) -> int:
    """Call the component's executor (`run_<component>`) in this process, for a light step declared
    `local_in_process` (resolve_champion, which reruns whenever production moves): no interpreter and no
    MLflow import to pay again. As its command would: it sees `environment` and whatever it sets in
    os.environ is undone after it; everything it writes, from Python or from C, to stdout or stderr
    goes to `log` (file descriptors 1 and 2 point there meanwhile; nodes run one at a time); the exit
    code is 0, 2 for bad input (`error: ...`), a SystemExit's own code, or 1 for a crash (its traceback);
    and a failed or interrupted step leaves none of the outputs it was to create. The executor is loaded
    from its file: importing it as a module of its component's package would import that component's
    decorated function, with mldesigner and azure-ai-ml (seconds)."""
    import importlib.util
    import traceback

    from mnist_mlops.errors import USER_ERROR_EXIT_CODE
    from mnist_mlops.ports import component_dir
    from mnist_mlops.runner import discard

    def executor() -> Any:
        name = f"_in_process_{component}_executor"
        if name not in sys.modules:
            found = importlib.util.spec_from_file_location(name, component_dir(component) / "executor.py")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)  # registered once it loaded: a broken file fails every time
            sys.modules[name] = module
        return sys.modules[name]

    fresh = [Path(path) for path in outputs.values() if not Path(path).exists()]
    log.parent.mkdir(parents=True, exist_ok=True)
    code = 1
    try:
        with open(log, "w", buffering=1) as stream, _process_output_to(stream), _environment(environment):
            try:
                getattr(executor(), f"run_{component}")(**outputs, **inputs)
                code = 0
            except UserInputError as error:
                print(f"error: {error}", file=sys.stderr)
                code = USER_ERROR_EXIT_CODE
            except SystemExit as stop:  # what `sys.exit` in a command would have made its exit code
                if stop.code is None or isinstance(stop.code, int):
                    code = stop.code or 0
                else:
                    print(stop.code, file=sys.stderr)
            except Exception as error:  # a crash fails the node, as a child process's would, not the runner
                if is_disk_full(error):
                    report_disk_full(error)
                    code = DISK_FULL_EXIT_CODE
                else:
                    traceback.print_exc()
    finally:
        if code != 0:
            discard(fresh)
    return code


@contextmanager
def _process_output_to(stream: IO[str]) -> Iterator[None]:
    """This process's stdout and stderr, Python's and the file descriptors under them, into `stream`."""
    import contextlib

    for console in (sys.stdout, sys.stderr):
        console.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
            stream.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in saved:
            os.close(descriptor)


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """os.environ with `variables` for the duration, then exactly as it was (a step's own setdefaults too)."""
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _source_identity(uri: str | None, pin: str | None) -> str | None:
    """What ingest will read, by content: a local file or folder's hash, a download's sha256 pin, the
    published MNIST pins. None (always ingest again) for sources without one, such as Azure Blob."""
    from mnist_mlops import sources

    if uri is None:
        return None
    if uri == sources.MNIST:
        return json.dumps(sources.MNIST_FILES, sort_keys=True)
    if uri.startswith(("http://", "https://")):
        return pin
    path = Path(uri).expanduser()
    return content_sha256(path) if path.exists() and "://" not in uri else None


def _today() -> str:
    """ingest judges data age in days: a cached ingest is good for the day it was made."""
    return datetime.now(UTC).date().isoformat()


def _registry_agrees(cached: dict[str, dict[str, str]], registry: str | None) -> bool:
    """A cached champion, registration or deployment record is reused only if the registry still says
    the same: the pointer names the same version (or still none) and the request log the champion's
    traffic was read from is unchanged, the version is still ready, production is still where the
    deployment left it."""
    from mnist_mlops.champions import RECORD
    from mnist_mlops.deployments import production_version, request_log_dir
    from mnist_mlops.registry import READY_TAG, client, pointer_version, registry_uri, sqlite_file
    from mnist_mlops.serving.request_log import log_state

    uri = registry_uri(registry)
    path = Path(next(iter(cached.values()))["path"])
    document = json.loads((path / RECORD if path.is_dir() else path).read_text())
    if "pointer" in document:  # a champion_record
        traffic, name = document["traffic"], document["model_name"]
        folder = Path(traffic["folder"]) if traffic["folder"] else None
        if folder and not folder.exists() and sqlite_file(uri) is not None:
            # read under --isolation container, at its mount of the registry's folder (/mnt/registry)
            folder = request_log_dir(uri, name)
        return pointer_version(uri, name, document["pointer"]) == document["version"] and (
            folder is None or log_state(folder) == traffic["log_state"]
        )
    if "registered" in document:  # a registration_record
        if not document["registered"]:
            return True
        try:
            tags = client(uri).get_model_version(document["model_name"], document["version"]).tags or {}
        except Exception:  # deleted version, other registry: run the step again
            return False
        return tags.get(READY_TAG) == "ready"
    expected = (
        document["model_version"] if document["outcome"] == "deployed" else document["previous_version"]
    )
    return production_version(uri, document["model_name"]) == expected


def _plain(value: Any) -> str | int | float | bool | None:
    """A parameter as run.json records it, any SAS signature or account key in it scrubbed."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def _holding(cache: StepCache, run_id: str, options: RunOptions) -> AbstractContextManager[None]:
    """The runs folder's lock for run `run_id`, an earlier run that died holding it closed first."""
    return cache.held_by(
        run_id, recover=lambda left: _close_interrupted(cache.root.parent / left, run_id, options)
    )


def _close_interrupted(run_dir: Path, found_by: str, options: RunOptions) -> None:
    """A run that died holding the runs folder's lock (killed, or stopped by Ctrl-C) is recorded as
    failed, finished when its record was last written, and its MLflow runs still RUNNING end as KILLED;
    otherwise its run.json and the MLflow UI would say "running" for ever. Its MLflow runs are ended
    only where this run tracks to the same store (a warning says when they are not); a run killed
    before it wrote its record has none to close."""
    path = run_dir / "run.json"
    if not path.is_file():
        return
    record = contracts.read_json(path, "run_record")
    if record["status"] != "running":  # it finished, then died (or a lock file of an older version)
        return
    last_written = utc_iso(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    outcome = f"interrupted before it finished; found by run {found_by}"
    _write_record(run_dir, record | {"status": "failed", "finished_at": last_written, "outcome": outcome})
    print(f"warning: run {run_dir.name} was interrupted before it finished: recorded as failed", flush=True)
    tracking = record.get("tracking")
    if not tracking:
        return
    uri = registry_uri(options.registry)
    if not options.tracking or tracking["uri"] != redact(uri):
        print(
            f"warning: its MLflow run {tracking['run_id']} in {tracking['uri']} is left as it was", flush=True
        )
        return
    try:
        with exclusive(uri):
            end_interrupted(uri, tracking["experiment_id"], tracking["run_id"])
    except UserInputError as error:  # the store is down or lost the run: this run goes on without it
        print(f"warning: its MLflow runs were not ended: {error}", flush=True)


def _write_record(run_dir: Path, record: dict) -> None:
    contracts.validate(record, "run_record", source=str(run_dir / "run.json"))
    atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n")


def _folders(nodes: list[Node], run_dir: Path) -> dict[str, Path]:
    """Component -> the folder of the node running it (node names differ between graphs)."""
    return {node.component: run_dir / node.name for node in nodes}


def _finish(run_dir: Path, record: dict, folders: dict[str, Path], status: str, outcome: str) -> None:
    record |= {"status": status, "finished_at": utc_iso(datetime.now(UTC)), "outcome": outcome}
    if report := _artifact(folders, "ingest", "data_report"):
        record["lineage"]["dataset_version"] = report["dataset_version"]
    if blessing := _artifact(folders, "evaluate", "blessing"):
        record["lineage"]["data_shift"] = blessing["data_shift"]["decision"]
    if registration := _artifact(folders, "register", "registration_record"):
        record["lineage"]["model_version"] = registration["version"]
    if deployment := _artifact(folders, "deploy", "deployment_record"):
        record["lineage"]["deployed"] = deployment["outcome"] == "deployed"
    _write_record(run_dir, record)
    report_finished_run(run_dir)


def _artifact(folders: dict[str, Path], component: str, port: str) -> dict | None:
    """A JSON output of the node running `component`, if the run got that far."""
    if component not in folders:
        return None
    path = output_path(folders[component].parent, folders[component].name, component, port)
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(entries: list[dict]) -> None:
    print(f"\n{'node':<16} {'status':<8} {'seconds':>8}")
    for entry in entries:
        print(f"{entry['name']:<16} {entry['status']:<8} {entry['seconds']:>8.1f}")
        for trial in entry.get("sweep", {}).get("trials", []):
            values = " ".join(f"{port}={value}" for port, value in trial["parameters"].items())
            score = "-" if trial["objective"] is None else f"{trial['objective']:.4f}"
            metric = entry["sweep"]["objective"]["metric"]
            mark = "  <- chosen" if trial["chosen"] else ""
            row = f"  {trial['name']:<14} {trial['status']:<8} {trial['seconds']:>8.1f}"
            print(f"{row}  {values}  {metric} {score}{mark}")


def _outcome(folders: dict[str, Path], reused: set[str], notes: list[str]) -> str:
    """The gate's verdict, the registration and the deployment: the pipeline's answer, blessed or not.
    A registration or deployment reused from the cache changed nothing (the registry agreed with it),
    so it is reported as what stays, with the reasons of any rule that let a node be reused."""
    if blessing := _artifact(folders, "evaluate", "blessing"):
        earlier = " (the verdict of an earlier run, reused)" if "evaluate" in reused else ""
        print(f"\nmodel {'blessed' if blessing['blessed'] else 'NOT blessed'}{earlier}:")
        for reason in blessing["reasons"]:
            print(f"  - {reason}")
    summary = "finished"
    if registration := _artifact(folders, "register", "registration_record"):
        if registration["registered"] and "register" in reused:
            summary = "nothing new registered"
            print(
                f"{summary}: {registration['model_name']} v{registration['version']} was registered earlier"
            )
        elif registration["registered"]:
            summary = f"registered {registration['model_name']} v{registration['version']}"
            print(f"{summary} in {registration['registry_uri']}")
        else:
            summary = "not registered"
            print(summary)
    if deployment := _artifact(folders, "deploy", "deployment_record"):
        name, version = deployment["model_name"], deployment["model_version"]
        was = f"{name} v{deployment['previous_version']}" if deployment["previous_version"] else "nothing"
        if deployment["outcome"] == "skipped":
            summary = f"not deployed: production stays at {was}"
            print(summary)
        elif "deploy" in reused:
            summary = f"production stays at {name} v{version}, {summary}"
            print(f"production stays at {name} v{version}, deployed earlier")
        else:
            summary = f"deployed {name} v{version}"
            live = f", serving at {deployment['endpoint']}" if deployment["target"] != "local" else ""
            print(f"{summary} to production (was {was}){live}")
    elif "deploy" not in folders:
        print("no deploy node in this run: production is unchanged")
    for note in notes:
        print(note)
    return "; ".join([summary, *notes])


def _closing(run_dir: Path, record: dict, folders: dict[str, Path], registry: str) -> None:
    """Where the run's figures and files are and, when its model is in production on this machine, the
    lines that serve and call it: the deployment only moved the `production` alias, so nothing is
    listening until `mnist-mlops serve` is started."""
    figures = [
        os.path.relpath(figure, run_dir)
        for entry in record["nodes"]
        for output in entry["outputs"].values()
        for figure in _pngs(Path(output["path"]))
    ]
    shown = f"; figures {', '.join(figures)}" if figures else ""
    print(f"outputs in {run_dir.resolve()}: run.json (the run record){shown}")
    deployment = _artifact(folders, "deploy", "deployment_record")
    if not deployment or deployment["outcome"] != "deployed" or deployment["target"] != "local":
        return
    from mnist_mlops.deployments import key_path

    name, endpoint, version = deployment["model_name"], deployment["endpoint"], deployment["model_version"]
    production, port = f"models:/{name}@production", urlsplit(endpoint).port
    (deploy,) = [entry for entry in record["nodes"] if entry["name"] == folders["deploy"].name]
    example, images = _example_request(run_dir, Path(deploy["inputs"]["test_data"]["path"]))
    print(f"\nproduction: {name} v{version} ({production} in {redact(registry)})")
    if _listening(port):
        print(f"something already listens on port {port}: if it is `mnist-mlops serve --model {production}`,")
        print(f"it serves v{version} within seconds; from another terminal, score {images}:")
    else:
        print("nothing is listening yet; serve it with:")
        where = shlex.quote(redact(registry))
        print(f"  {_command()} serve --model {production} --registry {where} --port {port}")
        print(f"then, from another terminal, score {images}:")
    print(
        f'  curl -s -H "Authorization: Bearer $(cat {shlex.quote(str(key_path(registry, name)))})"'
        f' -H "Content-Type: application/json" -d @{shlex.quote(str(example))} {endpoint}'
    )


def _command() -> str:
    """How this shell reaches the CLI: `mnist-mlops` when it is on PATH, else this environment's script
    (the quick start installs into .venv without activating it)."""
    import shutil

    script = Path(sys.executable).parent / "mnist-mlops"
    found = shutil.which("mnist-mlops")
    if not script.is_file() or (found is not None and Path(found).resolve() == script.resolve()):
        return "mnist-mlops"
    return shlex.quote(os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script))


def _listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port (a server started earlier)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _pngs(path: Path) -> list[Path]:
    """The figures an output holds: a PNG file output, or the PNG files at the top of a folder output."""
    if path.is_dir():
        return sorted(path.glob("*.png"))
    return [path] if path.suffix == ".png" and path.is_file() else []


EXAMPLE_IMAGES = 2
"""Test images (of different classes) in the example scoring request: a batch, yet a body a person reads."""


def _example_request(run_dir: Path, test_data: Path) -> tuple[Path, str]:
    """A scoring request body of the first test images deploy's canaries came from, written beside the
    run (a curl line with the pixels inline would fill the screen); returns its path and what it holds."""
    import numpy as np

    from mnist_mlops.dataset import classes_of, load_split

    manifest = contracts.read_json(test_data / "manifest.json", "preprocessed_manifest")
    images, labels = load_split(test_data, manifest, "test")
    _, firsts = np.unique(labels, return_index=True)  # the first image of each class, so the answers differ
    chosen = sorted(firsts)[:EXAMPLE_IMAGES]
    path = run_dir.resolve() / "example_request.json"  # read from another terminal, in another folder
    document = {"instances": images[chosen].astype(int).tolist()}
    contracts.validate(document, "scoring_request", source=str(path))
    atomic_write_text(path, json.dumps(document) + "\n")
    shown = ", ".join(classes_of(manifest)[label] for label in labels[chosen])
    return path, f"{len(document['instances'])} test images (classes {shown})"


def run_training_pipeline(
    data: str,
    *,
    sha256: str | None,
    runs_dir: Path,
    overrides: list[str],
    sweep: Sequence[str] = (),
    registry: str | None = None,
    until: str | None = None,
    use_cache: bool = True,
    isolation: str = "process",
    tracking: bool = True,
    verbose: bool = False,
) -> int:
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    nodes = training_pipeline({"source_uri": data, "source_sha256": sha256}, registry)
    swept = parse_sweep(nodes, sweep, overrides)
    if swept is not None:
        swept.grid()  # a range (Azure ML only) is refused before anything runs
    values, node_overrides = parameter_overrides(nodes, overrides)
    bind_parameters(nodes, {**values, "pipeline_run_id": run_id})
    apply_overrides(nodes, node_overrides)
    if until is not None:
        names = [node.name for node in nodes]
        if until not in names:
            raise UserInputError(f"--until {until!r}: no such node; nodes: {', '.join(names)}")
        nodes = nodes[: names.index(until) + 1]
        if swept is not None and swept.node not in names[: names.index(until) + 1]:
            raise UserInputError(f"--sweep {swept.node}: the run stops before it (--until {until})")
    if isolation not in ("process", "container"):
        raise UserInputError(f"--isolation {isolation!r}: expected process or container")
    run_dir = runs_dir / run_id
    options = RunOptions(
        use_cache=use_cache,
        isolation=isolation,
        registry=registry,
        tracking=tracking,
        sweep=swept,
        verbose=verbose,
    )
    cache = StepCache(runs_dir / ".cache")
    with _holding(cache, run_id, options):
        run_dir.mkdir(parents=True)
        print(f"run {run_id} in {run_dir}")
        return run_nodes(nodes, run_dir, cache, options)
