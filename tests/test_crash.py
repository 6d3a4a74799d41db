"""Crash anywhere and two at once: `mnist-mlops run` killed with SIGKILL inside the nodes that write the
registry, one after the other, then run again; two runs started together on one runs folder and
registry (the reduced CI version of benchmarks/crash.py: the shared small run, conftest's deployed_run,
is the uncrashed reference, and its step cache gives the trial the nodes before register). And the
registry states a kill leaves between two writes, too brief to hit by timing: a move of `production`
recorded but not made, a version created but never checked."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from mnist_mlops.deployments import (
    append_history,
    production_stack,
    production_version,
    read_history,
    record_and_move,
    rollback,
    settle,
)
from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import READY_TAG, client, list_versions
from tests.crash_trials import MNIST_MLOPS, Workspace, check, fingerprint, kill_inside, servers_of
from tests.records import local_deployment

MODEL = "mnist-mlops"


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """An embedded registry with versions 1 and 2 of MODEL, both ready."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client(uri).create_registered_model(MODEL)
    for _ in range(2):
        client(uri).create_model_version(MODEL, "mlflow-artifacts:/0/model", tags={READY_TAG: "ready"})
    return uri


def deployed(version: str, previous: str | None) -> dict:
    return local_deployment(MODEL, version, previous)


def test_a_move_of_production_recorded_but_not_made_is_finished_before_the_next_one(registry):
    record_and_move(registry, deployed("1", None))
    append_history(registry, deployed("2", "1"))  # killed before `production` moved
    assert production_version(registry, MODEL) == "1"

    settle(registry, MODEL)
    assert production_version(registry, MODEL) == "2"
    rolled = rollback(registry, MODEL, endpoint="http://127.0.0.1:5001/score")
    assert (rolled["previous_version"], production_version(registry, MODEL)) == ("2", "1")


def test_the_version_in_production_deployed_again_adds_no_rollback_point(registry):
    record_and_move(registry, deployed("1", None))
    record_and_move(registry, deployed("1", "1"))  # the rerun of a deploy killed after its record
    assert production_stack(read_history(registry, MODEL)) == ["1"]
    with pytest.raises(UserInputError, match="no earlier deployment to roll back to"):
        rollback(registry, MODEL, endpoint="http://127.0.0.1:5001/score")


def test_a_version_a_killed_registration_left_pending_is_deleted_by_the_next(registry):
    from mnist_mlops.components.register.executor import _delete_interrupted

    client(registry).set_model_version_tag(MODEL, "1", READY_TAG, "pending")
    _delete_interrupted(client(registry), MODEL)
    assert [row["version"] for row in list_versions(registry, MODEL)] == ["2"]


@pytest.fixture
def workspace(deployed_run, tmp_path: Path):
    """deployed_run's pipeline on a runs folder and registry of its own; stops any scoring server a kill
    left behind (`check` counts them first)."""
    workspace = Workspace.like(deployed_run.argv, tmp_path / "runs", tmp_path / "registry")
    yield workspace
    for pid in servers_of(workspace):
        os.kill(pid, signal.SIGKILL)


KILL_POINTS = {"register": ("Downloading artifacts", 0.0), "deploy": ("endpoint key: ", 2.0)}
"""Where the runs are killed, in this order: a line each node logs, and how many seconds after it.
Register loading back the version it created, still `pending`; deploy with its validation server
starting (a server in a session of its own, which must stop with the deploy that started it: `check`
counts any left running)."""


@pytest.mark.slow  # registers and serves models
def test_a_run_killed_in_register_and_its_rerun_killed_in_deploy_rerun_to_the_uncrashed_result(
    deployed_run, workspace
):
    """Crashes stacked: the second run finds the version the first left pending, the third a deploy
    cut off while its validation server started."""
    trial = workspace.reset(deployed_run.record, deployed_run.runs / ".cache", "register")
    for node, (line, delay) in KILL_POINTS.items():
        kill = kill_inside(trial, node, delay, after=line)
        assert kill.node == node, kill.output

    code, rerun, output = trial.run()
    assert code == 0, output
    assert check(trial, rerun, fingerprint(deployed_run.run_dir)) == []


@pytest.mark.slow  # registers and serves models
def test_two_runs_at_once_on_one_runs_folder_and_registry_both_finish_one_after_the_other(
    deployed_run, workspace
):
    trial = workspace.reset(deployed_run.record, deployed_run.runs / ".cache", "evaluate")
    started = [
        subprocess.Popen([str(MNIST_MLOPS), *trial.argv], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=900)[0] for process in started]
    assert [process.returncode for process in started] == [0, 0], outputs

    lock = trial.runs / ".cache" / ".lock"
    waited = [output for output in outputs if f"waiting for the lock {lock}, held by " in output]
    assert len(waited) == 1, outputs  # the second waited for the first, naming the lock and its holder
    expected = fingerprint(deployed_run.run_dir)
    for run_dir in trial.run_folders():
        assert check(trial, run_dir, expected) == []
    assert [row["version"] for row in list_versions(trial.uri, "mnist-mlops")] == ["1"]
    assert production_version(trial.uri, "mnist-mlops") == "1"
