"""Keeping Python's cyclic garbage collector off what is built once and lives on.

Each full collection walks every object alive. Importing MLflow and opening its SQL store makes hundreds
of thousands that are never freed, and the collections triggered on the way walk them again and again:
measured on this project's 2-core machine, about 1 s of a 3.5 s import, and about 0.5 s more in the
last collection at exit. A fork pool's workers inherit the whole heap, and their collections walk it
too (touching every page they could share). `gc.freeze` moves what is alive out of the collector's
reach, as Python documents for a process that forks without exec.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_built: set[str] = set()


@contextmanager
def long_lived(what: str) -> Iterator[None]:
    """The first block for `what` in this process runs with the collector paused and ends by freezing
    what is alive, for good: so it is done once per process and kind of thing built, not at every call.
    Later blocks for `what` run as they are."""
    if what in _built:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        _built.add(what)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def frozen_while_forking() -> Iterator[None]:
    """What is alive now frozen while the block forks workers and they run, then unfrozen. When something
    was frozen already (`long_lived`) it all stays frozen: Python cannot unfreeze a part."""
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
