"""What a test sees of its own process: the files it holds open, and a deadline for work that could hang."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def open_files() -> set[Path]:
    """The files this process holds open (Linux: read from /proc)."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        with suppress(FileNotFoundError):  # the listing's own descriptor is closed by now
            paths.add(Path(os.readlink(f"/proc/self/fd/{fd}")))
    return paths


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail the block with TimeoutError when it runs past `seconds`: a hang fails the test instead of
    blocking the test run (a wait on a lock is interrupted by the signal)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
