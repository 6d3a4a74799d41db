"""batch_score as the entry script of an Azure ML parallel job (`parallel_spec.yaml`).

The parallel runner starts `max_concurrency_per_instance` processes on each of `instance_count` nodes,
calls `init()` once in each, then `run(mini_batch)` with lists of file paths under the mounted `images`
input, and appends every element `run` returns as one line of the `predictions` output (`append_row_to`).
A file of the mini-batch without an element back counts as failed, against the job's `error_threshold`.

So `init()` resolves and loads the registered model once per process through the scorer the server and
batch_score use (the version's ONNX export in ONNX Runtime when it has one), and `run()` scores with
batch_score's own `score_mini_batch`: one CSV row per scored file, `path,class,label,confidence,` (the
path relative to `images`; `expected` stays empty, as labels need the whole listing, which the merge
reads). A file that cannot be scored (not a PNG, truncated, wrong size, a bomb) gets no row, so it counts
against `error_threshold` rather than failing its mini-batch, and its reason goes to the `records` output:
one JSON-lines file per process, with a line naming the version the process loaded, one per skipped file
and one per mini-batch. `parallel_merge` turns rows and records into batch_score's predictions.csv and a
summary.

    python -m mnist_mlops.components.batch_score.parallel_entry --images DIR --model REF --records DIR \
        --rows FILE [--shard I --shards N] [--mini-batch-size K]

plays the runner for one process over every N-th file (`score_shard`: a Kubeflow fan-out task).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.components.batch_score.executor import score_mini_batch
from mnist_mlops.errors import UserInputError, exit_on_user_error
from mnist_mlops.registry import registry_uri
from mnist_mlops.serving.scorer import LoadedModel, RegistryModels

RECORDS_SUFFIX = ".jsonl"
PATH_ENCODING = ("utf-8", "surrogateescape")  # as batch_score writes paths that are not UTF-8


@dataclass
class _Process:
    """What init() prepared for this process's run() calls."""

    model: LoadedModel
    images: Path
    records: TextIO


_process: _Process | None = None


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The component's own `program_arguments`; the runner adds arguments of its own, which are ignored."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--images", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--registry")
    return parser.parse_known_args(list(argv))[0]


def init(argv: Sequence[str] | None = None) -> None:
    """Once per process: resolve the reference to a ready version, load it, open this process's records."""
    global _process
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    models = RegistryModels(arguments.model, registry_uri(arguments.registry))
    version = models.resolve()
    model = models.load(version)
    records = Path(arguments.records)
    records.mkdir(parents=True, exist_ok=True)
    handle = (records / f"{socket.gethostname()}-{os.getpid()}{RECORDS_SUFFIX}").open("a", encoding="utf-8")
    _process = _Process(model, Path(arguments.images), handle)
    _record(
        kind="process",
        model_uri=arguments.model,
        model_name=model.name,
        model_version=model.version,
        runtime=model.runtime,
    )


def run(mini_batch: Sequence[str]) -> list[str]:
    """Score a mini-batch of files; one CSV row per scored file, none for a file that cannot be scored."""
    process = _initialized()
    paths, blobs, unreadable = [], [], []
    for file in mini_batch:
        relative = Path(os.path.relpath(file, process.images)).as_posix()
        if relative == ".." or relative.startswith("../"):
            raise UserInputError(f"{file}: not under the images input {process.images}")
        try:
            blobs.append(Path(file).read_bytes())
            paths.append(relative)
        except OSError as error:
            unreadable.append({"path": relative, "reason": f"unreadable ({error.strerror})"})
    scored = score_mini_batch(process.model, paths, blobs, [None] * len(paths))
    for skipped in [*unreadable, *scored.skipped]:
        _record(kind="skipped", **skipped)
    _record(kind="mini_batch", files=len(mini_batch), scored=len(paths) - len(scored.skipped))
    rows = []
    for row in csv.reader(io.StringIO(scored.rows, newline="")):
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow(row)
        rows.append(line.getvalue())
    return rows


def shutdown() -> None:
    """Once per process at the end (the runner calls it when the entry script has one)."""
    global _process
    if _process is not None:
        _process.records.close()
        _process = None


def _initialized() -> _Process:
    if _process is None:
        raise RuntimeError("run() before init(): the parallel runner calls init() once per process first")
    return _process


def _record(**fields: Any) -> None:
    records = _initialized().records
    records.write(json.dumps(fields) + "\n")
    records.flush()


def listed_files(images: Path) -> list[Path]:
    """Every regular file under `images`, in path order: what the parallel runner splits into mini-batches."""
    if not images.is_dir():
        raise UserInputError(f"images {images}: not a folder of files")
    found = [Path(folder) / name for folder, _, names in os.walk(images) for name in names]
    return sorted(
        (path for path in found if path.is_file()), key=lambda path: path.relative_to(images).as_posix()
    )


def score_shard(
    images: Path,
    model: str,
    records: Path,
    rows: Path,
    *,
    registry: str | None = None,
    shard: int = 0,
    shards: int = 1,
    mini_batch_size: int = 1024,
) -> int:
    """Run the entry script as the parallel runner would in one process, over every `shards`-th file from
    the `shard`-th: init(), run() per mini-batch, rows to `rows` (written atomically), shutdown().
    Returns the number of rows."""
    if not 0 <= shard < shards or mini_batch_size < 1:
        raise UserInputError(f"shard {shard} of {shards}, mini_batch_size {mini_batch_size}: out of range")
    files = [str(path) for path in listed_files(images)[shard::shards]]
    arguments = ["--images", str(images), "--model", model, "--records", str(records)]
    init(arguments + (["--registry", registry] if registry else []))
    try:
        lines = [
            line
            for start in range(0, len(files), mini_batch_size)
            for line in run(files[start : start + mini_batch_size])
        ]
    finally:
        shutdown()
    atomic_write_bytes(rows, "".join(line + "\n" for line in lines).encode(*PATH_ENCODING))
    return len(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_mlops.components.batch_score.parallel_entry", description=score_shard.__doc__
    )
    parser.add_argument("--images", required=True, help="folder of files to score")
    parser.add_argument("--model", required=True, help="models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument("--records", required=True, help="folder for this shard's records (skipped files)")
    parser.add_argument("--rows", required=True, help="file for this shard's CSV rows")
    parser.add_argument(
        "--registry", help="MLflow registry URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--mini-batch-size", type=int, default=1024)
    arguments = parser.parse_args(argv)
    with exit_on_user_error():
        count = score_shard(
            Path(arguments.images),
            arguments.model,
            Path(arguments.records),
            Path(arguments.rows),
            registry=arguments.registry,
            shard=arguments.shard,
            shards=arguments.shards,
            mini_batch_size=arguments.mini_batch_size,
        )
    print(f"shard {arguments.shard} of {arguments.shards}: {count} rows in {arguments.rows}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
