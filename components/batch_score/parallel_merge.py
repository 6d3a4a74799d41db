"""Merge what a parallel batch scoring wrote into batch_score's outputs: predictions.csv and a summary.

The processes of an Azure ML parallel job (or the shard tasks of a Kubeflow fan-out) each score their
own mini-batches (`parallel_entry`): the rows land in one file in completion order, without a header and
without `expected`, and each process keeps its records (the version it loaded, skipped files, mini-batch
counts). Here, once, over the whole listing of `images`: the rows sorted by path with `expected` filled
as `labels` says (`expected_classes`, which needs every file's folder), so the predictions are exactly
the file batch_score writes for the same files and model; and the `parallel_score_summary`.

Refused (UserInputError, nothing written): no process records (nothing ran), processes that loaded
different versions (an alias moved during the job: score again with `models:/<name>/<version>`), rows or
records of files that are not under `images`, two different rows for one file. Files that neither got a
row nor a skipped record (their mini-batch failed more often than the retries, and the job's thresholds
let it pass) are listed as `missing` in the summary, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.components.batch_score.executor import COLUMNS, expected_classes
from mnist_mlops.components.batch_score.parallel_entry import PATH_ENCODING, RECORDS_SUFFIX, listed_files
from mnist_mlops.errors import UserInputError
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import registry_uri
from mnist_mlops.serving.scorer import RegistryModels

SUMMARY_SCHEMA = "parallel_score_summary"


def merge_parallel_score(
    images: str | Path,
    rows: Sequence[str | Path],
    records: Sequence[str | Path],
    predictions: str | Path,
    summary: str | Path,
    *,
    labels: str = "auto",
    registry: str | None = None,
) -> dict[str, Any]:
    """Write `predictions` (batch_score's CSV) and `summary` from the row files and record folders of a
    parallel scoring of `images`; returns the summary."""
    root = Path(images)
    listing = [path.relative_to(root).as_posix() for path in listed_files(root)]
    known = set(listing)
    processes, skipped, mini_batches = _read_records([Path(folder) for folder in records], known)
    by_path = _read_rows([Path(file) for file in rows], known)
    versions = sorted({(process["model_name"], process["model_version"]) for process in processes})
    if len(versions) != 1:
        found = ", ".join(f"{name} v{version}" for name, version in versions) or "none"
        raise UserInputError(
            f"{', '.join(map(str, records))}: the processes scored with {found}; expected exactly one version"
            " (an alias that moved during the job: score again with models:/<name>/<version>)"
        )
    ((name, version),) = versions
    interface = RegistryModels(f"models:/{name}/{version}", registry_uri(registry)).interface(version)
    expected = dict(zip(listing, expected_classes(listing, interface, labels, str(root)), strict=True))
    skipped = {path: reason for path, reason in skipped.items() if path not in by_path}
    missing = [path for path in listing if path not in by_path and path not in skipped]
    counts = [0] * interface.class_count
    labelled = correct = 0
    lines = io.StringIO()
    writer = csv.writer(lines, lineterminator="\n")
    writer.writerow(COLUMNS)
    for path in sorted(by_path):
        row = by_path[path]
        predicted = int(row[1])
        if predicted >= interface.class_count:
            raise UserInputError(
                f"{path}: class {predicted}, but {name} v{version} answers {interface.class_count}"
            )
        counts[predicted] += 1
        truth = expected[path]
        if truth is not None:
            labelled += 1
            correct += truth == predicted
        writer.writerow([*row[:4], "" if truth is None else interface.classes[truth]])
    atomic_write_bytes(Path(predictions), lines.getvalue().encode(*PATH_ENCODING))
    document = {
        "schema_version": 1,
        "model_uri": processes[0]["model_uri"],
        "model_name": name,
        "model_version": version,
        "source": str(root),
        "files": len(listing),
        "scored": len(by_path),
        "skipped_count": len(skipped),
        "skipped": [{"path": path, "reason": skipped[path]} for path in sorted(skipped)],
        "missing_count": len(missing),
        "missing": missing,
        "class_distribution": dict(zip(interface.classes, counts, strict=True)),
        "labels": labels,
        "labelled": labelled,
        "accuracy": round(correct / labelled, 6) if labelled else None,
        "processes": len(processes),
        "mini_batches": mini_batches,
        "finished_at": utc_iso(datetime.now(UTC)),
    }
    contracts.write_json(summary, document, SUMMARY_SCHEMA)
    return document


def _read_records(
    folders: Sequence[Path], known: set[str]
) -> tuple[list[dict[str, Any]], dict[str, str], int]:
    """The process lines, the skipped files with their reasons and the number of mini-batches scored."""
    processes: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    mini_batches = 0
    for folder in folders:
        for file in sorted(folder.glob(f"*{RECORDS_SUFFIX}")):
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                    kind = record["kind"]
                    if kind == "skipped":
                        path, reason = record["path"], record["reason"]
                except (ValueError, TypeError, KeyError):
                    raise UserInputError(f"{file}:{number}: not a record line") from None
                if kind == "process":
                    processes.append(record)
                elif kind == "mini_batch":
                    mini_batches += 1
                elif kind == "skipped":
                    _check_known(path, known, file)
                    skipped[path] = reason
    if not processes:
        raise UserInputError(f"{', '.join(map(str, folders))}: no process records; nothing was scored")
    return processes, skipped, mini_batches


def _read_rows(files: Sequence[Path], known: set[str]) -> dict[str, list[str]]:
    """Each scored file's row (path, class, label, confidence, expected), by path; a retried mini-batch may
    have appended the same rows twice, which is harmless, but two different rows for one file are not."""
    by_path: dict[str, list[str]] = {}
    for file in files:
        text = file.read_bytes().decode(*PATH_ENCODING)
        for row in csv.reader(io.StringIO(text, newline="")):
            if len(row) != len(COLUMNS) or not row[1].isdigit():
                raise UserInputError(f"{file}: {row!r} is not a row of {','.join(COLUMNS)}")
            _check_known(row[0], known, file)
            if by_path.setdefault(row[0], row) != row:
                raise UserInputError(f"{file}: two different rows for {row[0]}: {by_path[row[0]]} and {row}")
    return by_path


def _check_known(path: str, known: set[str], source: Path) -> None:
    if path not in known:
        raise UserInputError(f"{source}: {path} is not a file of the images input")
