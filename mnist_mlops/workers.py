"""Run a function over a stream of jobs on a fork pool, results in submission order, memory bounded.

`Pool.imap` would do, but its feeder thread drains the job iterator without bound: a stream read from
an archive would be read whole into the task queue. Here at most `in_flight` jobs are pending, so the
producer (the archive reader, in this process) and the workers overlap and memory stays bounded.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def worker_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_results(
    function: Callable[..., Any], jobs: Iterable[tuple[Any, ...]], *, workers: int | None = None
) -> Iterator[Any]:
    """`function(*job)` for each job, in job order: on a fork pool of `workers` processes when there is
    more than one job, more than one CPU and the platform can fork; else in this process.

    `function` must be a module-level function (workers find it by name). Forking copies this process:
    call it before starting threads.
    """
    workers = workers or worker_count()
    jobs = iter(jobs)
    first_two = list(itertools.islice(jobs, 2))
    if len(first_two) < 2 or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for job in itertools.chain(first_two, jobs):
            yield function(*job)
        return
    pending: deque = deque()
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        for job in itertools.chain(first_two, jobs):
            pending.append(pool.apply_async(function, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    except BaseException:  # also a consumer that stops early (GeneratorExit): drop the pending jobs
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
