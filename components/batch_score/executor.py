"""batch_score: score a folder or tarball of PNGs with a registered model, mini-batch by mini-batch.

Framework-free interface: plain paths and scalars. Only a registry reference is accepted
(``models:/<name>/<version>`` or ``models:/<name>@<alias>``, a `ready` version), so every prediction
can be traced to a registered, verified model; a local folder is refused.

The unit of work is a mini-batch of files (`score_mini_batch`): decode to the model's image shape
with the safe PNG decoder (bad files are reported per file, never fatal), predict with the model as the
scoring server loads it (its ONNX export in ONNX Runtime, else the warmed tf.function), return CSV rows
and counts per class of the model. That is what an Azure ML `parallel` job's entry script calls per
mini-batch; locally the files are cut into mini-batches in path order and scored in this process
(`workers=1`) or in `workers` spawned processes that each load the model once, on their share of the
CPUs, and pull mini-batches from a queue.

Resumable: every finished mini-batch is checkpointed in a work folder beside the predictions
(``<predictions>.parts/``), keyed by the input's content hash, the resolved model version and the
mini-batch size. A rerun after an interruption scores only what is missing (a changed input or a moved
alias starts over); the outputs are written atomically at the end and the work folder is removed.

Labels come from class folders, as `labels` says (`expected_classes`, over the whole listing before
scoring): "auto" takes a file's folder as its class only when that folder and every sibling folder
holding files name classes of the model (MNIST's `testing/0..9/`, not `incoming/2024/1..12/`), so
ordinary folders are scored unlabelled, never refused; "folders" requires every file's folder to name a
class of the model and refuses data labelled with other classes; "none" scores without labels.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mnist_mlops import contracts
from mnist_mlops.archives import FileEntry
from mnist_mlops.atomic import atomic_write_bytes, atomic_write_text
from mnist_mlops.dataset import listed
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.ports import checked
from mnist_mlops.progress import Progress
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import registry_uri, sqlite_file
from mnist_mlops.serving.scorer import LoadedModel, RegistryModels, parse_model_uri
from mnist_mlops.sources import open_source, read_files
from mnist_mlops.workers import worker_count

COMPONENT_NAME = "mnist_mlops_batch_score"
COLUMNS = ("path", "class", "label", "confidence", "expected")
"""`class` and `label`: the predicted class index and name, as in a scoring response; `expected`: the
class named by the file's folder when `labels` takes it as a label (`expected_classes`), else empty."""
PREDICT_BATCH = 512
"""Images per model call: measured a little faster than 2048 on 2 cores (stays in cache)."""
CHECKPOINT_FORMAT = 2
PROGRESS_SECONDS = 2.0
"""Progress is reported after a mini-batch at most this often (a small one takes milliseconds)."""
LABEL_MODES = ("auto", "folders", "none")
_PATH_ENCODING = ("utf-8", "surrogateescape")  # folder names that are not UTF-8 round-trip unchanged


class MiniBatch(NamedTuple):
    """The files of one unit of work, in path order, with the class each is expected to be of."""

    paths: list[str]
    blobs: list[bytes]
    expected: list[int | None]


@dataclass(frozen=True)
class ScoredMiniBatch:
    """What one mini-batch produced: CSV rows without header (path order), skipped files and counts."""

    files: int
    rows: str
    skipped: list[dict[str, str]]
    class_counts: list[int]
    labelled: int
    correct: int


def expected_classes(
    paths: Sequence[str], interface: ModelInterface, labels: str, source: str
) -> list[int | None]:
    """The class index each file is expected to be of, from the name of the folder holding it (None:
    unlabelled), as `labels` (one of LABEL_MODES) says; the whole listing is needed, as "auto" looks at
    sibling folders. "folders" refuses files outside a folder named after a class of the model."""
    if labels not in LABEL_MODES:
        raise UserInputError(f"labels={labels!r}: must be one of {', '.join(LABEL_MODES)}")
    if labels == "none":
        return [None] * len(paths)
    index = {name: position for position, name in enumerate(interface.classes)}
    folders = [tuple(path.split("/")[:-1]) for path in paths]
    if labels == "folders":
        unknown = sorted(
            {"/".join(folder) or "(top level)" for folder in folders if not folder or folder[-1] not in index}
        )
        if unknown:
            raise UserInputError(
                f"{source}: labels=folders, but the folders {listed(unknown)} name no class the model"
                f" answers: it was trained for {interface.class_count} classes ({listed(interface.classes)})."
                " Score data of those classes with a model trained on them, or pass labels=auto or none"
            )
        return [index[folder[-1]] for folder in folders]
    unlike_a_class = {folder[:-1] for folder in folders if folder and folder[-1] not in index}
    return [index[folder[-1]] if folder and folder[:-1] not in unlike_a_class else None for folder in folders]


def score_mini_batch(
    model: LoadedModel,
    paths: Sequence[str],
    blobs: Sequence[bytes],
    expected: Sequence[int | None],
    *,
    calls: Executor | None = None,
) -> ScoredMiniBatch:
    """Decode and predict one mini-batch of files (`expected`: their classes from `expected_classes`);
    undecodable files are skipped with their reason. Decoding and the model's calls go PREDICT_BATCH
    files at a time, in `calls`' threads when given, else one after another."""
    return _scored(model.interface, paths, expected, _start_predicting(model, blobs, calls))


class _Predicted(NamedTuple):
    """One call's share of a mini-batch: why files failed to decode (by index in the share) and the
    probabilities of the others, in order."""

    errors: dict[int, str]
    probabilities: np.ndarray


def _start_predicting(
    model: LoadedModel, blobs: Sequence[bytes], calls: Executor | None
) -> Iterator[_Predicted]:
    """Decode and predict `blobs` PREDICT_BATCH at a time: in `calls`, submitted at once (so the next
    mini-batch can queue behind this one), else lazily in this thread."""
    shares = [blobs[start : start + PREDICT_BATCH] for start in range(0, len(blobs), PREDICT_BATCH)]
    call_all = calls.map if calls is not None else map
    return call_all(functools.partial(_decode_and_predict, model), shares)


def _decode_and_predict(model: LoadedModel, blobs: Sequence[bytes]) -> _Predicted:
    decoded = decode_pngs(blobs, model.interface.image_shape)
    images = np.delete(decoded.images, list(decoded.errors), axis=0) if decoded.errors else decoded.images
    if not len(images):
        return _Predicted(decoded.errors, np.zeros((0, model.interface.class_count), dtype=np.float32))
    return _Predicted(decoded.errors, model.predict(images))


def _scored(
    interface: ModelInterface,
    paths: Sequence[str],
    expected: Sequence[int | None],
    shares: Iterable[_Predicted],
) -> ScoredMiniBatch:
    """The CSV rows, skipped files and counts of a mini-batch from its predicted shares."""
    errors: dict[int, str] = {}
    probabilities = []
    for offset, share in zip(range(0, len(paths), PREDICT_BATCH), shares, strict=True):
        errors.update((offset + index, reason) for index, reason in share.errors.items())
        probabilities.append(share.probabilities)
    scores = np.concatenate(probabilities)  # a mini-batch has at least one file, so one share
    good_paths = [path for index, path in enumerate(paths) if index not in errors]
    expected = [answer for index, answer in enumerate(expected) if index not in errors]
    predicted = scores.argmax(axis=1).tolist()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        zip(
            good_paths,
            predicted,
            [interface.classes[index] for index in predicted],
            [f"{confidence:.6f}" for confidence in scores.max(axis=1).tolist()],
            ["" if index is None else interface.classes[index] for index in expected],
            strict=True,
        )
    )
    return ScoredMiniBatch(
        files=len(paths),
        rows=buffer.getvalue(),
        skipped=[{"path": paths[index], "reason": reason} for index, reason in sorted(errors.items())],
        class_counts=np.bincount(predicted, minlength=interface.class_count).tolist(),
        labelled=sum(index is not None for index in expected),
        correct=sum(index == answer for index, answer in zip(expected, predicted, strict=True)),
    )


@checked("batch_score")
def run_batch_score(
    model: str,
    images: str | Path,
    predictions: str | Path,
    summary: str | Path,
    *,
    registry: str | None = None,
    mini_batch_size: int = 2048,
    workers: int = 1,
    labels: str = "auto",
) -> dict[str, Any]:
    """Score every file of `images` with registered `model`; write the CSV `predictions` and `summary`.

    Refusals (a local model path, an empty input, an unknown or unready version, with labels=folders
    files outside folders named after the model's classes) raise UserInputError before anything is
    written. Returns the summary.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    _check_reference(model)
    if mini_batch_size < 1 or workers < 1:
        raise UserInputError(f"mini_batch_size and workers must be >= 1 (got {mini_batch_size}, {workers})")
    with open_source(str(images)) as source:
        entries = sorted(read_files(source.path), key=lambda entry: entry.path)
        source_uri = source.uri
    if not entries:
        raise UserInputError(f"{source_uri}: no files to score (empty input)")
    resolving = time.perf_counter()
    models = RegistryModels(model, registry_uri(registry))
    version = _resolve(models)
    interface = models.interface(version)
    resolve_seconds = time.perf_counter() - resolving
    paths = [entry.path for entry in entries]
    expected = expected_classes(paths, interface, labels, source_uri)
    batches = [
        MiniBatch(
            paths[start : start + mini_batch_size],
            [entry.data for entry in entries[start : start + mini_batch_size]],
            expected[start : start + mini_batch_size],
        )
        for start in range(0, len(entries), mini_batch_size)
    ]
    identity = {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "input_sha256": _fingerprint(entries),
        "files": len(entries),
        "model_name": models.name,
        "model_version": version,
        "mini_batch_size": mini_batch_size,
        "labels": labels,
    }
    work = work_dir(Path(predictions))
    done = _prepare(work, identity, batches)
    pending = [index for index in range(len(batches)) if index not in done]
    print(
        f"scoring {len(entries)} files from {source_uri} with {models.name} v{version}"
        f" ({interface.describe()}) in {len(batches)} mini-batches of up to {mini_batch_size}"
        + (f" ({len(done)} already scored by an interrupted run, resumed from {work})" if done else ""),
        flush=True,
    )
    load_seconds = resolve_seconds
    already = sum(len(batches[index].paths) for index in done)
    progress = Progress(len(entries), "files", items="img", start=already, every_seconds=PROGRESS_SECONDS)
    if pending and workers == 1:
        load_seconds += _score_here(models, version, batches, pending, work, progress)
    elif pending:
        load_seconds += _score_in_workers(models, version, batches, pending, work, workers, progress)
    parts = [_read_part(_part_path(work, index), len(batch.paths)) for index, batch in enumerate(batches)]
    if any(part is None for part in parts):
        raise RuntimeError(f"{work}: a mini-batch checkpoint is missing or damaged after scoring")
    rows = "".join(part.rows for part in parts)
    atomic_write_bytes(Path(predictions), (",".join(COLUMNS) + "\n" + rows).encode(*_PATH_ENCODING))
    totals = _summary(
        parts,
        interface.classes,
        model=model,
        version=version,
        name=models.name,
        source=source_uri,
        mini_batch_size=mini_batch_size,
        labels=labels,
        resumed=len(done),
        workers=workers,
        processed=sum(len(batches[index].paths) for index in pending),
        seconds=time.perf_counter() - started - load_seconds,
        load_seconds=load_seconds,
    )
    contracts.write_json(summary, totals, "batch_score_summary")
    shutil.rmtree(work)
    accuracy = f", accuracy {totals['accuracy']:.4f} on {totals['labelled']}" if totals["labelled"] else ""
    print(
        f"scored {totals['scored']} files, skipped {totals['skipped_count']}{accuracy}; "
        f"{totals['images_per_s'] or 0:.0f} images/s",
        flush=True,
    )
    return totals


def work_dir(predictions_path: Path) -> Path:
    """Where the checkpoints of a run writing `predictions_path` live (beside it, so a rerun finds them)."""
    return predictions_path.with_name(predictions_path.name + ".parts")


def _check_reference(model: str) -> None:
    try:
        parse_model_uri(model)
    except UserInputError:
        raise UserInputError(
            f"model {model!r}: batch_score takes a registry reference, models:/<name>/<version> or "
            "models:/<name>@<alias> (a local path is refused: register the model first)"
        ) from None


def _resolve(models: RegistryModels) -> str:
    """The ready version the reference points at now, or a UserInputError that says what is missing."""
    from mlflow.exceptions import MlflowException

    database = sqlite_file(models.registry)
    if database is not None and not database.is_file():
        raise UserInputError(f"no registry at {models.registry} (pass registry, or register a model first)")
    try:
        return models.resolve()
    except MlflowException as error:
        raise UserInputError(
            f"{models.name}: not found in the registry ({str(error).splitlines()[0]})"
        ) from None


def _fingerprint(entries: Sequence[FileEntry]) -> str:
    """sha256 over the paths and bytes of all files, in order: a checkpoint only fits the same input."""
    digest = hashlib.sha256()
    for entry in entries:
        path = entry.path.encode(*_PATH_ENCODING)
        digest.update(b"%d %d\0" % (len(path), len(entry.data)) + path)
        digest.update(entry.data)
    return digest.hexdigest()


def _part_path(work: Path, index: int) -> Path:
    return work / f"{index:06d}.json"


def _prepare(work: Path, identity: dict[str, Any], batches: Sequence[MiniBatch]) -> set[int]:
    """The mini-batches an interrupted run of the same job finished; any other leftovers are cleared."""
    run_file = work / "run.json"
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == identity:
        done = set()
        for index, batch in enumerate(batches):
            if _read_part(_part_path(work, index), len(batch.paths)) is not None:
                done.add(index)
        return done
    if work.exists():
        print(f"{work}: checkpoint of another input, model version or mini-batch size; starting over")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _write_checkpoint(run_file, json.dumps(identity, indent=2, sort_keys=True))
    return set()


def _write_checkpoint(path: Path, text: str) -> None:
    """Atomic against a killed process, without fsync: a checkpoint torn by a power cut fails to parse
    on resume and its mini-batch is scored again, so durability is not worth a disk flush per batch."""
    atomic_write_text(path, text, durable=False)


def _write_part(work: Path, index: int, scored: ScoredMiniBatch) -> None:
    _write_checkpoint(_part_path(work, index), json.dumps(asdict(scored)))


def _read_part(path: Path, files: int) -> ScoredMiniBatch | None:
    """A finished mini-batch's checkpoint, or None when it is missing, damaged or of another size."""
    try:
        scored = ScoredMiniBatch(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return scored if scored.files == files else None


def _score_here(
    models: RegistryModels,
    version: str,
    batches: Sequence[MiniBatch],
    pending: list[int],
    work: Path,
    progress: Progress,
) -> float:
    """Score the pending mini-batches in this process; returns the model load time.

    Each call decodes and predicts PREDICT_BATCH files in a pool of one thread per CPU, and the next
    mini-batch is queued before this one's rows are written, so the CPUs never wait for the rows, the
    checkpoint or the decoding of a whole mini-batch. ONNX Runtime runs each call on one thread (its
    own threads cost more than they give on this small model; see `load_model_folder`); TensorFlow
    also spreads each call over its own threads."""
    loading = time.perf_counter()
    loaded = models.load(version)
    load_seconds = time.perf_counter() - loading
    scored = 0

    def finish(index: int, shares: Iterator[_Predicted]) -> None:
        nonlocal scored
        batch = batches[index]
        _write_part(work, index, _scored(loaded.interface, batch.paths, batch.expected, shares))
        scored += len(batch.paths)
        progress.update(progress.start + scored, items=scored)

    with ThreadPoolExecutor(worker_count(), thread_name_prefix="predict") as calls:
        started: deque[tuple[int, Iterator[_Predicted]]] = deque()
        for index in pending:
            started.append((index, _start_predicting(loaded, batches[index].blobs, calls)))
            if len(started) == 2:
                finish(*started.popleft())
        while started:
            finish(*started.popleft())
    return load_seconds


def _score_in_workers(
    models: RegistryModels,
    version: str,
    batches: Sequence[MiniBatch],
    pending: list[int],
    work: Path,
    workers: int,
    progress: Progress,
) -> float:
    """Score the pending mini-batches in spawned processes (TensorFlow, the fallback runtime, is not
    fork-safe), each on its own share of this process's CPUs (`cpu_shares`), loading the model once and
    pulling mini-batches from a queue, so a slow worker never holds up the others. Returns the time
    until the first worker was ready to score. A worker that dies or fails stops the run with an error
    naming it; the mini-batches already scored stay checkpointed for a rerun."""
    shares = cpu_shares(min(workers, len(pending)))
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    tasks.cancel_join_thread()  # tasks left unread at the end must not keep this process from exiting
    reference = f"models:/{models.name}/{version}"
    spawned = time.perf_counter()
    processes = [
        context.Process(
            target=_worker,
            args=(f"{number + 1}/{len(shares)}", reference, models.registry, work, cpus, tasks, results),
            daemon=True,
        )
        for number, cpus in enumerate(shares)
    ]
    for process in processes:
        process.start()
    for index in pending:
        tasks.put((index, batches[index]))
    ready_at = None
    scored = files = 0
    try:
        while scored < len(pending):
            try:
                kind, message = results.get(timeout=1)
            except queue.Empty:
                dead = [
                    (number, process) for number, process in enumerate(processes) if not process.is_alive()
                ]
                if dead:
                    number, process = dead[0]
                    raise RuntimeError(
                        f"scoring worker {number + 1} of {len(processes)} (pid {process.pid})"
                        f" {_ended(process.exitcode)}; the mini-batches scored so far are checkpointed in"
                        f" {work}: run the same command again to score the rest"
                    ) from None
                continue
            if kind == "error":
                raise RuntimeError(f"a scoring worker failed: {message}")
            if kind == "ready":
                ready_at = ready_at or time.perf_counter()
                print(message, flush=True)
            if kind == "scored":
                scored += 1
                files += len(batches[message].paths)
                progress.update(progress.start + files, items=files)
    finally:  # done (a worker still loading the model is not waited for) or failed
        for process in processes:
            process.terminate()
            process.join()
    return (ready_at or time.perf_counter()) - spawned


def cpu_shares(workers: int) -> list[frozenset[int]]:
    """The CPUs each of `workers` processes runs on: this process's CPUs dealt out in turn, as an Azure
    ML parallel job gives each process its share of a node (more workers than CPUs share them one to
    a worker); empty sets where the platform cannot pin a process to CPUs."""
    if not hasattr(os, "sched_setaffinity"):
        return [frozenset()] * workers
    cpus = sorted(os.sched_getaffinity(0))
    if workers >= len(cpus):
        return [frozenset({cpus[number % len(cpus)]}) for number in range(workers)]
    return [frozenset(cpus[number::workers]) for number in range(workers)]


def _ended(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-exitcode}"
        return f"was killed by {name}" + (
            " (the kernel's out-of-memory killer sends it)" if name == "SIGKILL" else ""
        )
    return f"exited with code {exitcode}"


def _cpus() -> str:
    """The CPUs this process may run on, as a list ("any" where the platform does not say)."""
    return ",".join(map(str, sorted(os.sched_getaffinity(0)))) if hasattr(os, "sched_getaffinity") else "any"


def _worker(
    name: str,
    reference: str,
    registry: str,
    work: Path,
    cpus: frozenset[int],
    tasks: multiprocessing.Queue,
    results: multiprocessing.Queue,
) -> None:
    """One scoring process (`name`: its number of all): keep to `cpus`, load the model, say which
    runtime runs it where, then score mini-batches from the queue, reporting each.

    The model runs as in `_score_here`, on `cpus` only: one CPU, one call at a time on one thread. The
    parent stops the workers when every mini-batch is scored; if the parent is killed, the worker exits
    at once (a task it was reading may be torn, so waiting on the queue could block forever) and a rerun
    resumes from the checkpoints.
    """
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        models = RegistryModels(reference, registry)
        loaded = models.load(models.version)  # as many threads as `cpus` allow
        results.put(("ready", f"worker {name} scores with {loaded.runtime} on CPUs {_cpus()}"))
        with ThreadPoolExecutor(worker_count(), thread_name_prefix="predict") as calls:
            while True:
                index, batch = tasks.get()
                _write_part(work, index, score_mini_batch(loaded, *batch, calls=calls))
                results.put(("scored", index))
    except Exception as error:
        results.put(("error", f"{type(error).__name__}: {error}"))


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _summary(
    parts: Sequence[ScoredMiniBatch],
    classes: Sequence[str],
    *,
    model: str,
    version: str,
    name: str,
    source: str,
    mini_batch_size: int,
    labels: str,
    resumed: int,
    workers: int,
    processed: int,
    seconds: float,
    load_seconds: float,
) -> dict[str, Any]:
    skipped = [item for part in parts for item in part.skipped]
    files = sum(part.files for part in parts)
    counts = np.sum([part.class_counts for part in parts], axis=0).tolist()
    labelled = sum(part.labelled for part in parts)
    correct = sum(part.correct for part in parts)
    return {
        "schema_version": 1,
        "model_uri": model,
        "model_name": name,
        "model_version": version,
        "source": source,
        "files": files,
        "scored": files - len(skipped),
        "skipped_count": len(skipped),
        "skipped": skipped,
        "class_distribution": dict(zip(classes, counts, strict=True)),
        "labels": labels,
        "labelled": labelled,
        "accuracy": round(correct / labelled, 6) if labelled else None,
        "mini_batch_size": mini_batch_size,
        "mini_batches": len(parts),
        "resumed_mini_batches": resumed,
        "workers": workers,
        "seconds": round(seconds, 4),
        "model_load_seconds": round(load_seconds, 4),
        "images_per_s": round(processed / seconds, 1) if processed else None,
        "finished_at": utc_iso(datetime.now(UTC)),
    }
