"""What every benchmark shares: the shared MNIST tarball, how a figure is reported (the median over its
rounds with the spread: one round on a shared machine can be off by 2x, the median of several cannot) and
the memory of a process tree."""

from __future__ import annotations

import statistics
from pathlib import Path

DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_png.tar.gz"


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """The median and the [min, max] of a figure over the rounds."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def tree_memory_mb(root_pid: int, measure: str = "Rss") -> float:
    """Memory of a process and all its descendants (a gunicorn master and its workers, a pool's workers),
    from /proc; processes that end while they are read count 0. "Rss" counts pages the processes share
    (libraries, a forked parent's) once per process, "Pss" splits them between the sharers, so its sum is
    what the tree takes."""
    total_kib, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        fields = (line.split() for line in rollup.splitlines())
        total_kib += next((int(field[1]) for field in fields if field[0] == f"{measure}:"), 0)
        pending += [int(child) for child in children]
    return total_kib / 1024
