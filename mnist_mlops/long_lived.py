"""Building what lives as long as the process (MLflow's import and its store) without the garbage
collector walking it again and again.

Importing MLflow and opening its SQL store makes hundreds of thousands of objects that are never freed.
Each collection the cyclic garbage collector starts on the way walks every object made so far: measured
on this project's 2-core machine, about 1 s of a 3.5 s import. The collector is paused while they are
built, then they are frozen out of its reach (`gc.freeze`, which Python documents for a preforking
server's long-lived state), so later collections and the final one at exit skip them too (about 0.5 s
more at exit). Freezing keeps whatever is alive at that moment for good, so it is done once per process
and per kind of thing built, not at every call.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_built: set[str] = set()


@contextmanager
def long_lived(what: str) -> Iterator[None]:
    """The first block for `what` in this process runs with the collector paused and ends by freezing
    what is alive; later blocks for `what` run as they are."""
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
