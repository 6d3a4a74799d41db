"""What the scoring server records per request, for monitoring: compact, schema'd, rotating.

One JSON line per request (`request_record` schema): id, time, model version, HTTP status, latency,
and for each image its mean intensity and ink fraction (the features preprocess baselined), the
predicted class (index, and name when the model's classes are given) and its confidence. Never the
payload itself. The id is the one the response carries (body and `x-request-id` header), and a
client's own `x-ms-client-request-id` is kept beside it, so `mnist-mlops lineage <id>` finds the
request from either. Each server worker process writes its own file (``requests-<pid>.jsonl`` in the log
folder), so workers never interleave or rotate each other's files; a file past `max_bytes` is renamed
with a timestamp and a fresh one started, and the oldest are removed beyond `keep` files per worker.
`read_records` reads them back, for the monitor and for resolve_champion's picture of what clients send;
`find_records` finds one request's records.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from mnist_mlops import contracts
from mnist_mlops.errors import ContractError
from mnist_mlops.features import ink_fraction, mean_intensity

MAX_EXAMPLES = 5
REQUEST_ID = re.compile(contracts.load_schema("request_record")["properties"]["request_id"]["pattern"])
"""What an id may look like to be kept: a GUID (as the Azure ML inference server makes them) or any
short token of letters, digits and ``._:-``; never a path, a space or a control character, so it is
safe in a header, a log line and a terminal."""


def usable_request_id(candidate: str | None) -> str | None:
    """`candidate` if it is a safe request id (see `REQUEST_ID`), else None."""
    return candidate if candidate and REQUEST_ID.fullmatch(candidate) else None


def new_request_id() -> str:
    """A fresh id in the form the Azure ML inference server gives a request that came without one."""
    return str(uuid.uuid4())


QUEUE_LIMIT = 4096
"""Records waiting for a log's writer thread; a longer burst makes `submit` wait, never drops one. It
also bounds what a worker killed outright can lose (see `RequestLog`)."""
WRITE_INTERVAL_SECONDS = 0.05
"""How often a log's writer wakes to write the records submitted meanwhile."""

_START_LOCK = threading.Lock()
"""Held while a log starts or stops its writer thread."""


def _reset_start_lock() -> None:
    """A fork while another thread holds `_START_LOCK` would leave the child's copy held for good, and
    the child's first record would wait forever: the child starts with a free lock."""
    global _START_LOCK
    _START_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_start_lock)


@dataclass(frozen=True)
class _Pending:
    """One request's record as `submit` took it: formatted by the writer, off the request's path."""

    unix_time: float
    latency_ms: float
    fields: dict[str, Any]


class RequestLog:
    """The request records of one folder, written by one background thread per process.

    `submit` (the server's path) only appends a record to a list in memory, so an answer does not wait
    for the disk or for another thread: the writer wakes every WRITE_INTERVAL_SECONDS, formats what was
    submitted meanwhile and appends it with one unbuffered write (a process forked meanwhile holds no
    copy of it to write again). Waking the writer for each record cost a single-image request more
    than its model call (two threads trading the interpreter lock per request). The writer keeps the
    file open and rotates it as described above. `record` writes and waits; `flush` waits for
    everything submitted so far; `close` writes what is queued, ends the thread and closes the file.
    More than QUEUE_LIMIT records waiting make the caller wait, every live log is closed when the
    process exits normally (a server stopped by SIGTERM included), and flushed before this process
    reads a log (`read_records`, `find_records`, `log_state`). A process killed outright (SIGKILL, the
    OOM killer, gunicorn's worker timeout) loses the records it answered but had not yet written: those
    still pending (the last WRITE_INTERVAL_SECONDS while the disk keeps up), at most QUEUE_LIMIT. A
    batch the writer cannot write is reported on stderr and counted in `dropped`, so a gap in the log
    can be told from a quiet server.
    """

    def __init__(self, folder: Path, *, max_bytes: int = 10 * 1024 * 1024, keep: int = 5) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)
        self._pending: deque[_Pending] = deque()
        self._thread: threading.Thread | None = None  # None: no writer running
        self._writer_pid: int | None = None  # the process the writer, `_handle` and `_dropped` belong to
        self._wake = threading.Event()
        self._progress = threading.Condition()  # notified after each of the writer's rounds
        self._rounds = 0
        self._stopping = False
        self._handle: BinaryIO | None = None
        self._size = 0
        self._dropped = 0
        _LIVE_LOGS.add(self)

    @property
    def path(self) -> Path:
        return self.folder / f"requests-{os.getpid()}.jsonl"

    @property
    def dropped(self) -> int:
        """Records this process submitted that the writer could not write."""
        return self._dropped if self._writer_pid == os.getpid() else 0

    def record(self, **request: Any) -> None:
        """`submit`, then wait until the line is in the file."""
        self.submit(**request)
        self.flush()

    def submit(
        self,
        *,
        model_name: str,
        model_version: str,
        status: int,
        started: float,
        images: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        """Queue one request's line and return: the writer thread formats and appends it. `classes`
        (the model's, by index) adds each image's `label`. `request_id` is the one the response
        carried (a new one when None); `client_request_id`, the client's own, is kept when it is safe.
        The arrays are kept, not copied: the caller must not change them afterwards."""
        fields = {
            "model_name": model_name,
            "model_version": model_version,
            "status": status,
            "images": images,
            "probabilities": probabilities,
            "classes": classes,
            "request_id": request_id,
            "client_request_id": client_request_id,
        }
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self._start_writer()
        if len(self._pending) >= QUEUE_LIMIT:
            self._wake.set()
            with self._progress:
                self._progress.wait_for(lambda: len(self._pending) < QUEUE_LIMIT or self._thread is None)
        self._pending.append(_Pending(time.time(), latency_ms, fields))

    def flush(self) -> None:
        """Wait until every record this process submitted is in the file."""
        if self._thread is None or self._writer_pid != os.getpid():
            return
        with self._progress:
            # the round under way may have taken the list before the last record came: wait for the next
            target = self._rounds + 2
            while self._rounds < target and self._thread is not None:
                self._wake.set()
                self._progress.wait(WRITE_INTERVAL_SECONDS)

    def close(self) -> None:
        """Write every record this process submitted, end its writer thread and close the file; a later
        `submit` starts them again. For teardown: a record submitted while `close` runs may be lost."""
        with _START_LOCK:  # held until the thread ends, so a new writer never shares the file with it
            thread = self._thread
            if thread is None or self._writer_pid != os.getpid():
                return
            self._stopping = True
            self._wake.set()
            thread.join()
            self._thread = None
            self._stopping = False

    def _start_writer(self) -> None:
        """Start this process's writer with its first record: the server's worker, also after a fork
        from a preloading master (the parent's list, file and count are not the child's), or after
        `close`."""
        if self._thread is not None and self._writer_pid == os.getpid():
            return
        with _START_LOCK:
            if self._writer_pid != os.getpid():
                self._close_file()  # the child's copy of the parent's descriptor
                self._pending = deque()
                self._progress = threading.Condition()
                self._wake = threading.Event()
                self._rounds = self._dropped = 0
                self._thread, self._stopping = None, False  # forked while the parent was closing it
                self._writer_pid = os.getpid()
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_pending, name="request-log", daemon=True)
                self._thread.start()

    def _write_pending(self) -> None:
        """The writer thread: every WRITE_INTERVAL_SECONDS (or when woken), append what is pending."""
        while True:
            self._wake.wait(WRITE_INTERVAL_SECONDS)
            self._wake.clear()
            stopping = self._stopping
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            if batch:
                self._append_batch(batch)
            with self._progress:
                self._rounds += 1
                self._progress.notify_all()
            if stopping and not self._pending:
                self._close_file()
                return

    def _append_batch(self, batch: list[_Pending]) -> None:
        """Append the batch's lines in one write; a record that cannot be formatted costs only itself."""
        lines = []
        for pending in batch:
            try:
                lines.append(_line(pending))
            except Exception as error:
                self._lost(1, error)
        if not lines:
            return
        try:
            self._append(b"".join(lines))
        except Exception as error:
            self._lost(len(lines), error)
            self._close_file()

    def _lost(self, count: int, error: Exception) -> None:
        """The server keeps answering; say loudly what was not recorded."""
        self._dropped += count
        print(
            f"request log {self.path}: could not write {count} record(s) ({error});"
            f" {self._dropped} lost in this process",
            file=sys.stderr,
        )

    def _append(self, lines: bytes) -> None:
        path = self.path
        if self._handle is None and path.exists():
            self._size = path.stat().st_size
        if (self._handle is not None or path.exists()) and self._size + len(lines) > self.max_bytes:
            self._close_file()
            with contextlib.suppress(FileNotFoundError):  # renamed or removed by someone else meanwhile
                path.rename(path.with_name(f"{path.stem}.{time.time_ns()}.jsonl"))
            rotated = sorted(self.folder.glob(f"{path.stem}.*.jsonl"))
            for old in rotated[: max(len(rotated) - self.keep, 0)]:
                old.unlink(missing_ok=True)
        if self._handle is None:
            self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across records
            self._size = self._handle.tell()
        self._handle.write(lines)
        self._size += len(lines)

    def _close_file(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()


def _line(pending: _Pending) -> bytes:
    """One `request_record` line of a submitted request."""
    fields = pending.fields
    images, probabilities, classes = fields["images"], fields["probabilities"], fields["classes"]
    client_request_id = fields["client_request_id"]
    entry = {
        "schema_version": 1,
        "request_id": usable_request_id(fields["request_id"]) or new_request_id(),
        **({"client_request_id": client_request_id} if usable_request_id(client_request_id) else {}),
        "time": datetime.fromtimestamp(pending.unix_time, UTC).isoformat().replace("+00:00", "Z"),
        "model_name": fields["model_name"],
        "model_version": fields["model_version"],
        "status": fields["status"],
        "latency_ms": pending.latency_ms,
        "images": [],
    }
    if images is not None and probabilities is not None:
        entry["images"] = [
            {
                "mean_intensity": round(float(mean), 3),
                "ink_fraction": round(float(ink), 4),
                "class": predicted,
                **({"label": classes[predicted]} if classes is not None else {}),
                "confidence": round(float(p), 4),
            }
            for mean, ink, predicted, p in zip(
                mean_intensity(images),
                ink_fraction(images),
                probabilities.argmax(axis=1).tolist(),
                probabilities.max(axis=1),
                strict=True,
            )
        ]
    return orjson.dumps(entry) + b"\n"


_LIVE_LOGS: weakref.WeakSet[RequestLog] = weakref.WeakSet()
"""Every log of this process: a log whose writer is running is held by its thread until `close`."""


def flush_live_logs() -> None:
    """Wait until every record this process submitted, to any log, is in its file."""
    for log in list(_LIVE_LOGS):
        log.flush()


@atexit.register
def _close_live_logs() -> None:
    """On a normal exit, write what every log queued and close it (the writer threads are daemons)."""
    for log in list(_LIVE_LOGS):
        log.close()


def read_records(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every valid `request_record` below `folder`, oldest first, and what was read (files, lines, bad
    lines with a few examples). A line after a file's last newline is one the server is still writing:
    left for the next reader. A missing folder reads as no records."""
    flush_live_logs()  # what this process answered is read too
    files = sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []
    records: list[dict[str, Any]] = []
    lines = bad = 0
    examples: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.split("\n")[:-1], start=1):
            if not line.strip():
                continue
            lines += 1
            where = f"{file.relative_to(folder)}:{number}"
            try:
                entry = json.loads(line)
                contracts.validate(entry, "request_record", source=where)
            except (ValueError, ContractError) as error:
                bad += 1
                if len(examples) < MAX_EXAMPLES:
                    message = str(error) if isinstance(error, ContractError) else f"{where}: not JSON"
                    examples.append(message[:300])
                continue
            entry["time"] = datetime.fromisoformat(entry["time"]).astimezone(
                UTC
            )  # the schema checked RFC 3339
            records.append(entry)
    records.sort(key=lambda entry: entry["time"])
    log = {"files": len(files), "lines": lines, "bad_lines": bad, "bad_line_examples": examples}
    return records, log


def find_records(folder: Path, request_id: str) -> tuple[list[dict[str, Any]], list[Path]]:
    """The records below `folder` whose `request_id` or `client_request_id` is `request_id` (a client may
    reuse its own ids, so there can be several), oldest first, and the log files searched. Only lines
    holding the id are parsed, so a large log is searched at the speed of reading it."""
    flush_live_logs()  # what this process answered is read too
    files = sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []
    found = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").split("\n"), 1):
            if request_id not in line:
                continue
            try:
                entry = json.loads(line)
                contracts.validate(entry, "request_record", source=f"{file}:{number}")
            except (ValueError, ContractError):
                continue
            if request_id in (entry["request_id"], entry.get("client_request_id")):
                found.append(entry | {"file": str(file)})
    return sorted(found, key=lambda entry: datetime.fromisoformat(entry["time"])), files


def log_state(folder: Path) -> str:
    """A cheap fingerprint of the log's files (names and sizes): it changes whenever a request is logged."""
    flush_live_logs()  # what this process answered is read too
    files = sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []
    listing = [f"{file.relative_to(folder)}:{file.stat().st_size}" for file in files]
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()
