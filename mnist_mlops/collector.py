"""Keeping Python's cyclic garbage collector off what is built once and lives on.

Each full collection walks every object the collector tracks. Importing MLflow and opening its SQL store
makes hundreds of thousands that are never freed, and the collections triggered on the way walk them
again and again; so do the later ones, and the last one at exit. Measured on this project's 2-core
machine: about 1 s of a 3.5 s import, and about 2 s of a 6 s cached pipeline rerun in all. A fork
pool's workers inherit the whole heap, and their collections walk it too (touching every page they
could share). `gc.freeze` moves everything tracked out of the collector's reach, as Python documents for
a process that forks without exec; what is frozen is never collected, garbage included, so freezing is
for short-lived processes and for moments when little but long-lived state is alive.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_built: set[str] = set()


@contextmanager
def long_lived(what: str) -> Iterator[None]:
    """The first block for `what` in this process that succeeds runs with the collector paused and ends
    by freeing the cyclic garbage among what it made (a young-generation collection: with the collector
    paused, everything it made is young; older objects it left as garbage stay) and freezing everything
    tracked, for good. Later blocks for `what` run as they are. For a process that is short-lived or
    builds its long-lived state first (the pipeline runner)."""
    if what in _built:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.collect(0)
        gc.freeze()
        _built.add(what)
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def frozen_while_forking() -> Iterator[None]:
    """Everything tracked frozen while the block forks workers and they run, then unfrozen. When something
    is frozen already (`long_lived`), the block runs as it is: what was built since is transient, and
    Python cannot unfreeze a part. When `long_lived` freezes during the block, its freeze stays."""
    if gc.get_freeze_count():
        yield
        return
    built = len(_built)
    gc.freeze()
    try:
        yield
    finally:
        if len(_built) == built:
            gc.unfreeze()
