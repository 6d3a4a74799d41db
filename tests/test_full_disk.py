"""A full disk: a run whose runs folder sits on a small tmpfs that fills up while train writes its model
stops with one line naming the disk and the node, leaves nothing half-written, and a rerun after space
is freed completes with the model the uncrashed run trained."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_mlops.step_cache import StepCache
from tests.crash_trials import STAGING_MARKERS, Workspace, model_weights

pytestmark = pytest.mark.slow  # trains a model

DISK_SIZE = "4m"
FREE_AT_START = 700 * 1024
"""Room for the cached data steps' copies (about 360 KiB) and the logs, not for train's model (1 MiB)."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted for the test (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_after_freeing_space_completes(
    deployed_run, small_disk: Path, tmp_path: Path
):
    workspace = Workspace.like(
        (*deployed_run.argv, "--until", "train"), small_disk / "runs", tmp_path / "registry"
    ).reset(deployed_run.record, deployed_run.runs / ".cache", "resolve_champion")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - FREE_AT_START))

    code, failed, output = workspace.run()
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert errors[0].startswith(f"error: node train stopped: no space left on {small_disk} ("), output
    staged = [
        path for path in small_disk.rglob("*") if any(marker in path.name for marker in STAGING_MARKERS)
    ]
    assert staged == []
    assert not (failed / "train" / "model").exists()
    cache = StepCache(workspace.runs / ".cache")
    assert all(cache.lookup(entry.stem) for entry in (workspace.runs / ".cache").glob("*.json"))

    filler.unlink()
    code, rerun, output = workspace.run()
    assert code == 0, output
    assert model_weights(rerun) == model_weights(deployed_run.run_dir)
