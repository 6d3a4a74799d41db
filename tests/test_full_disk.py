"""A full disk: a run whose runs folder sits on a small tmpfs that fills up while train writes its model
stops with one line naming the disk and the node, leaves nothing half-written, and a rerun after space
is freed completes with the model the uncrashed run trained. And the disk named is the one the failed
write was on, as the node reported it, when that is not the runs folder's."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_mlops.atomic import STAGING_SUFFIXES
from mnist_mlops.errors import DISK_FULL_LINE, reported_full_file
from mnist_mlops.pipelines.local import _mount_point, _stop_on_full_disk, new_run_record
from mnist_mlops.step_cache import StepCache
from tests.crash_trials import Workspace, model_weights

OTHER_DISK = Path("/dev/shm")

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


@pytest.mark.slow  # trains a model
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
        path for path in small_disk.rglob("*") if any(marker in path.name for marker in STAGING_SUFFIXES)
    ]
    assert staged == []
    assert not (failed / "train" / "model").exists()
    cache = StepCache(workspace.runs / ".cache")
    assert all(cache.lookup(entry.stem) for entry in (workspace.runs / ".cache").glob("*.json"))

    filler.unlink()
    code, rerun, output = workspace.run()
    assert code == 0, output
    assert model_weights(rerun) == model_weights(deployed_run.run_dir)


def test_the_file_a_node_could_not_write_is_read_from_its_last_report():
    output = f"working\n{DISK_FULL_LINE} writing /a/b\nmore\n{DISK_FULL_LINE} writing /c/d.npy\n"
    assert reported_full_file(output) == "/c/d.npy"
    assert reported_full_file(f"{DISK_FULL_LINE}\n") is None
    assert reported_full_file("Traceback: OSError 28\n") is None


def test_the_disk_named_is_the_one_the_write_failed_on_not_always_the_runs_folders(tmp_path, capsys):
    if not OTHER_DISK.is_dir() or _mount_point(OTHER_DISK) == _mount_point(tmp_path):
        pytest.skip(f"{OTHER_DISK} is not a disk of its own here")
    run_dir = tmp_path / "runs" / "20261207-101010-abcdef"
    run_dir.mkdir(parents=True)
    record = new_run_record(run_dir.name)
    elsewhere = OSError(errno.ENOSPC, "No space left on device", str(OTHER_DISK / "gone" / "model.onnx"))
    assert _stop_on_full_disk(run_dir, record, None, "node register", elsewhere) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: node register stopped: no space left on {OTHER_DISK} (")
    assert f"the disk of {OTHER_DISK / 'gone' / 'model.onnx'}; free space and run again" in line

    here = OSError(errno.ENOSPC, "No space left on device", str(run_dir / "train" / "model"))
    _stop_on_full_disk(run_dir, record, None, "node train", here)
    assert f"the disk of the runs folder {run_dir.parent};" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
