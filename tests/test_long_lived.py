"""`long_lived`: the first build of a kind runs with the garbage collector paused and ends frozen."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_mlops import long_lived as module
from mnist_mlops.long_lived import long_lived


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
