"""Exclusive locks between processes on this machine: `flock` on a lock file, released with the file
handle, so a process killed while it holds one (even by SIGKILL) never leaves it held."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def held(
    path: Path, *, holder: str | None = None, recover: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the lock on `path` (made if missing) for the block, waiting for it if another process holds
    it. With `holder`, a process that has to wait first says whose lock it waits for: the holder's
    name is kept in the file while it holds the lock, and cleared when the block ends normally or
    with an error. A name found there on taking the lock is a holder that died holding it (killed, or
    interrupted by Ctrl-C): `recover` gets it first, before this holder's name replaces it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        if holder is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            print(f"waiting for the lock {path}, held by {lock.read().strip() or 'another run'}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        if (left := lock.read().strip()) and recover is not None:
            recover(left)
        _write_holder(lock, holder)
        try:
            yield
        except Exception:
            _write_holder(lock, "")
            raise
        _write_holder(lock, "")


def _write_holder(lock: IO[str], holder: str) -> None:
    lock.truncate(0)
    lock.write(f"{holder}\n" if holder else "")
    lock.flush()
