"""Run a function over a stream of jobs on a fork pool, results in submission order, memory bounded.

`Pool.imap` would do, but its feeder thread drains the job iterator without bound: a stream read from
an archive would be read whole into the task queue. Here at most two jobs per worker are pending, so
the producer (the archive reader, in this process) and the workers overlap and memory stays bounded.
The pool is a `ProcessPoolExecutor`, not a `multiprocessing.Pool`: when a worker dies (killed for
memory, a crash in a C library) the executor fails every pending job at once, where `Pool` silently
starts a new worker, drops the job and leaves its caller waiting forever.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mnist_mlops.collector import frozen_while_forking


def worker_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_results(
    function: Callable[..., Any], jobs: Iterable[tuple[Any, ...]], *, workers: int | None = None
) -> Iterator[Any]:
    """`function(*job)` for each job, in job order: on a fork pool of `workers` processes when there is
    more than one job, more than one CPU and the platform can fork; else in this process.

    `function` must be a module-level function (workers find it by name). Forking copies this process:
    call it before starting threads. A worker that dies raises RuntimeError here. Closing the iterator
    early (or an error in the consumer, once the iterator is closed) cancels the jobs not yet started
    and waits for the running ones. While the pool lives, this process's heap is frozen
    (`collector.frozen_while_forking`, unless something is frozen already), so no worker's collection
    walks the heap it inherited: close the iterator (or exhaust it) to end that, as the pool.
    """
    workers = workers or worker_count()
    jobs = iter(jobs)
    first_two = list(itertools.islice(jobs, 2))
    if len(first_two) < 2 or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for job in itertools.chain(first_two, jobs):
            yield function(*job)
        return
    pending: deque[Future] = deque()
    with (
        frozen_while_forking(),
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool,
    ):
        try:
            for job in itertools.chain(first_two, jobs):
                pending.append(pool.submit(function, *job))
                if len(pending) >= 2 * workers:
                    yield _result(pending.popleft(), function)
            while pending:
                yield _result(pending.popleft(), function)
        except BaseException:  # also a consumer that stops early (GeneratorExit): drop the pending jobs
            pool.shutdown(cancel_futures=True)
            raise


def _result(future: Future, function: Callable[..., Any]) -> Any:
    """The job's result; a dead worker is named as such (the executor's own words do not say which
    work failed, nor the likely cause)."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise RuntimeError(
            f"a worker process running {function.__module__}.{function.__qualname__} died (killed for "
            "memory, or a crash); rerun, with more memory if the system log shows an out-of-memory kill"
        ) from error
