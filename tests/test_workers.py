"""The fork pool of ingest and preprocess: results in job order, and a failure on either side (a worker
killed, the consumer raising) ends the pool at once, instead of hanging or leaving processes behind."""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

from mnist_mlops import archives, workers
from mnist_mlops.components.ingest import streaming
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess import executor as preprocess
from mnist_mlops.sources import iter_files
from mnist_mlops.workers import ordered_results
from tests.datasets import small_splits, write_png_tree
from tests.processes import deadline, open_files

DEADLINE_SECONDS = 60
"""Far more than these tests take (a few seconds), far less than forever: how long the caller of a
`multiprocessing.Pool` whose worker was killed waited."""

DIED = r"worker process running .*killed died"
"""How the caller words a worker that died."""

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="the pool forks; in-process otherwise"
)


def square(value: int) -> int:
    return value * value


def killed(*job: object) -> None:
    """A job whose worker dies, as an out-of-memory kill would end it."""
    assert multiprocessing.parent_process() is not None, "ran in the test process, not in a worker"
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers whatever this machine's CPUs, so the pool (not the in-process loop) runs the jobs."""
    monkeypatch.setattr(workers, "worker_count", lambda: 2)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_png_tree(tmp_path / "source", small_splits())


def test_results_come_in_job_order():
    assert list(ordered_results(square, [(value,) for value in range(50)], workers=2)) == [
        value * value for value in range(50)
    ]
    assert not multiprocessing.active_children()


def test_a_killed_worker_fails_the_caller_within_seconds():
    with deadline(DEADLINE_SECONDS), pytest.raises(RuntimeError, match=DIED):
        list(ordered_results(killed, [(value,) for value in range(6)], workers=2))
    assert not multiprocessing.active_children()


def test_a_consumer_that_stops_early_stops_the_workers():
    results = ordered_results(square, ((value,) for value in range(1000)), workers=2)
    with closing(results), pytest.raises(ValueError):
        for value in results:
            if value > 10:
                raise ValueError("consumer failed")
    assert not multiprocessing.active_children()


def test_a_killed_decoder_fails_ingest_within_seconds(tmp_path, source, monkeypatch, two_workers):
    monkeypatch.setattr(streaming, "decode_rows", killed)
    with deadline(DEADLINE_SECONDS), pytest.raises(RuntimeError, match=DIED):
        run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    assert not (tmp_path / "dataset").exists()
    assert not multiprocessing.active_children()


def test_a_killed_copier_fails_preprocess_within_seconds(tmp_path, source, monkeypatch, two_workers):
    run_ingest(str(source), tmp_path / "dataset", tmp_path / "data_report.json")
    monkeypatch.setattr(preprocess, "_copy_rows", killed)
    with deadline(DEADLINE_SECONDS), pytest.raises(RuntimeError, match=DIED):
        preprocess.run_preprocess(tmp_path / "dataset", tmp_path / "preprocessed")
    assert not (tmp_path / "preprocessed").exists()
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through /proc")
def test_a_failing_write_releases_the_workers_and_the_tarball(tmp_path, source, monkeypatch, two_workers):
    """The error's traceback still holds the streaming frames: nothing may wait for them to be collected."""
    tarball = tmp_path / "source.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(source / "mnist_png", arcname="mnist_png")
        padding = tarfile.TarInfo("mnist_png/padding.bin")  # incompressible: the archive is still being read
        padding.size = 4 << 20
        archive.addfile(padding, io.BytesIO(random.Random(0).randbytes(padding.size)))
    monkeypatch.setattr(archives, "WINDOW_BYTES", 4096)  # entries come while the archive is read

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(streaming.NpyWriter, "append", full_disk)
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(OSError, match="No space left") as raised:
        streaming.stream_png_folders(iter_files(tarball), stage, batch_images=5)
    assert raised.traceback  # kept alive up to here, as a caller's handler would
    assert not multiprocessing.active_children()
    assert tarball.resolve() not in open_files()
    assert not any(stage.iterdir())
