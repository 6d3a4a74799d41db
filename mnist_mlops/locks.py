"""Exclusive locks between processes on this machine: `flock` on a lock file, released with the file
handle, so a process killed while it holds one (even by SIGKILL) never leaves it held."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held(path: Path, *, holder: str | None = None) -> Iterator[str | None]:
    """Hold the lock on `path` (made if missing) for the block, waiting for it if another process holds
    it. With `holder`, a process that has to wait first says whose lock it waits for: the holder's
    name is kept in the file while it holds the lock, and cleared when it lets go. Yields the name a
    holder left there, one whose process died holding the lock (None when there was none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        if holder is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield None
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            print(f"waiting for the lock {path}, held by {lock.read().strip() or 'another run'}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        left = lock.read().strip() or None
        _name(lock, holder)
        try:
            yield left
        finally:
            _name(lock, "")


def _name(lock, holder: str) -> None:
    lock.truncate(0)
    lock.write(f"{holder}\n" if holder else "")
    lock.flush()
