"""The collector kept off what lives on: `long_lived` (the first build of a kind runs with the collector
paused and ends frozen) and `frozen_while_forking` (a fork pool's workers skip the heap they inherit)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_mlops import collector as module
from mnist_mlops.collector import frozen_while_forking, long_lived
from mnist_mlops.workers import ordered_results


@pytest.fixture
def collector() -> Iterator[None]:
    """This process's collector as it was, and no kind built yet."""
    was_enabled = gc.isenabled()
    built = set(module._built)
    module._built.clear()
    yield
    module._built.clear()
    module._built.update(built)
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def test_the_first_block_runs_paused_and_freezes_what_it_built(collector: None) -> None:
    gc.enable()
    gc.unfreeze()
    with long_lived("thing"):
        enabled_inside = gc.isenabled()
        kept = [{"item": number} for number in range(1000)]
    assert not enabled_inside
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)


def test_later_blocks_of_the_same_kind_neither_pause_nor_freeze(collector: None) -> None:
    gc.enable()
    with long_lived("thing"):
        pass
    gc.unfreeze()
    with long_lived("thing"):
        enabled_inside = gc.isenabled()
        [{"item": number} for number in range(1000)]
    assert enabled_inside
    assert gc.get_freeze_count() == 0


def test_a_collector_already_paused_stays_paused(collector: None) -> None:
    gc.disable()
    with long_lived("thing"):
        pass
    assert not gc.isenabled()


def test_a_failed_block_restores_the_collector_and_is_built_again(collector: None) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), long_lived("thing"):
        raise RuntimeError("import failed")
    assert gc.isenabled()
    with long_lived("thing"):
        paused_again = not gc.isenabled()
    assert paused_again


def test_the_registry_client_imports_mlflow_paused_and_frozen(tmp_path: Path) -> None:
    """In a fresh process, as the CLI meets it: MLflow's import and store end frozen, the collector on."""
    script = (
        "import gc, json, sys\n"
        "from mnist_mlops.registry import client\n"
        "client(sys.argv[1]).search_experiments(max_results=1)\n"
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
    gc.unfreeze()
    counts = list(ordered_results(frozen_in_worker, [(number,) for number in range(4)], workers=2))
    assert min(counts) > 10_000  # this process's modules and test objects, inherited frozen
    assert gc.get_freeze_count() == 0


def test_what_was_frozen_before_the_block_stays_frozen(collector: None) -> None:
    gc.unfreeze()
    with frozen_while_forking():
        inside = gc.get_freeze_count()
    assert inside > 0 and gc.get_freeze_count() == 0
    gc.freeze()
    before = gc.get_freeze_count()
    with frozen_while_forking():
        pass
    assert gc.get_freeze_count() >= before
