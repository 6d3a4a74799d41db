"""The collector kept off what lives on: `long_lived` (the first build of a kind runs with the collector
paused and ends frozen) and `frozen_while_forking` (a fork pool's workers skip the heap they inherit)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_mlops import collector as module
from mnist_mlops.collector import frozen_while_forking, long_lived
from mnist_mlops.workers import ordered_results


@pytest.fixture
def collector() -> Iterator[None]:
    """Nothing frozen and no kind built when the test starts, the collector on; afterwards the
    collector on or off as before, the kinds built as before, and nothing frozen (what was frozen before
    the test is unfrozen for good: harmless, it is only collected again)."""
    was_enabled = gc.isenabled()
    built = set(module._built)
    module._built.clear()
    gc.unfreeze()
    gc.enable()
    yield
    module._built.clear()
    module._built.update(built)
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def is_frozen(item: object) -> bool:
    """Whether the collector no longer sees `item` (frozen objects are left out of gc.get_objects)."""
    return gc.is_tracked(item) and not any(seen is item for seen in gc.get_objects())


def test_the_first_block_runs_paused_and_freezes_what_it_built(collector: None) -> None:
    with long_lived("thing"):
        enabled_inside = gc.isenabled()
        kept = [[number] for number in range(1000)]
        before_the_end = is_frozen(kept)
    assert not enabled_inside and not before_the_end
    assert gc.isenabled()
    assert is_frozen(kept)


class Node:
    """An object that can be in a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.me = self


def test_the_garbage_the_first_block_made_is_freed_not_frozen(collector: None) -> None:
    with long_lived("thing"):
        garbage = Node()
        watched = weakref.ref(garbage)
        del garbage
        left_inside = watched() is not None  # the collector is paused: the cycle is still there
    assert left_inside
    assert watched() is None


def test_later_blocks_of_the_same_kind_neither_pause_nor_freeze(collector: None) -> None:
    with long_lived("thing"):
        pass
    gc.unfreeze()
    with long_lived("thing"):
        enabled_inside = gc.isenabled()
        kept = [[number] for number in range(1000)]
    assert enabled_inside
    assert not is_frozen(kept) and gc.get_freeze_count() == 0


def test_a_collector_already_paused_stays_paused(collector: None) -> None:
    gc.disable()
    with long_lived("thing"):
        pass
    assert not gc.isenabled()


def test_a_failed_block_freezes_nothing_and_is_built_again(collector: None) -> None:
    with pytest.raises(RuntimeError), long_lived("thing"):
        raise RuntimeError("import failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with long_lived("thing"):
        paused_again = not gc.isenabled()
    assert paused_again and gc.get_freeze_count() > 0


def test_the_runner_ends_its_mlflow_import_frozen(tmp_path: Path) -> None:
    """In a fresh process, as the runner meets it: MLflow's import and store end frozen, the collector on
    (the pause itself is the unit tests' above)."""
    script = (
        "import gc, json, sys\n"
        "from mnist_mlops.tracking import PipelineRuns\n"
        "PipelineRuns(sys.argv[1], 'collector', 'run', {})\n"
        "print(json.dumps({'frozen': gc.get_freeze_count(), 'enabled': gc.isenabled()}))\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = subprocess.run(
        [sys.executable, "-c", script, uri], capture_output=True, text=True, check=True, timeout=300
    )
    state = json.loads(completed.stdout.strip().splitlines()[-1])
    assert state["enabled"]
    assert state["frozen"] > 100_000  # MLflow's and SQLAlchemy's classes, modules and functions


def frozen_in_worker(_: int) -> int:
    """How many objects a pool worker sees frozen (module level: workers find it by name)."""
    return gc.get_freeze_count()


def test_a_fork_pool_runs_with_the_heap_frozen_and_leaves_it_as_it_was(collector: None) -> None:
    counts = list(ordered_results(frozen_in_worker, [(number,) for number in range(4)], workers=2))
    assert min(counts) > 10_000  # this process's modules and test objects, inherited frozen
    assert gc.get_freeze_count() == 0


def test_a_pool_closed_early_unfreezes_too(collector: None) -> None:
    results = ordered_results(frozen_in_worker, [(number,) for number in range(20)], workers=2)
    next(results)
    assert gc.get_freeze_count() > 0
    results.close()
    assert gc.get_freeze_count() == 0


def test_a_heap_already_frozen_is_left_as_it_is(collector: None) -> None:
    held = [[0]]
    gc.freeze()
    with frozen_while_forking():
        kept = [[number] for number in range(1000)]
        inside = is_frozen(kept)
    assert not inside and not is_frozen(kept) and is_frozen(held)


def test_a_long_lived_freeze_during_the_pool_stays(collector: None) -> None:
    with frozen_while_forking(), long_lived("thing"):
        pass
    assert gc.get_freeze_count() > 0
