"""The project's own voice on the console: progress lines (format, plain and terminal rendering), the
frameworks' logs kept in the node's log (and shown with --verbose), and a real run's console."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_mlops.progress import Event, Progress, clock
from mnist_mlops.runner import stream_node
from tests.datasets import small_splits, write_png_tree

FRAMEWORK_NOISE = (
    "warning",
    "Warning",
    "Mldesigner",
    "Provided args",
    "User Logs",
    "absl",
    "oneDNN",
    "I0000",
)
"""What a newcomer must not be made to ignore: warnings, mldesigner's banners, TensorFlow's start-up."""
MLDESIGNER_BANNER = "[2026-01-01 00:00:00,000][execute][INFO] - Mldesigner parsing input parameters..."
TF_NOTICE = "I0000 00:00:1796616737.393213   31964 port.cc:153] oneDNN custom operations are on."
NODE = textwrap.dedent(
    f"""
    import sys
    print({MLDESIGNER_BANNER!r})
    print({TF_NOTICE!r}, file=sys.stderr)
    print("progress: epoch 1/2 loss 0.5000 ETA 0:01", flush=True)
    print("blessed: accuracy 0.99", flush=True)
    print("progress: epoch 2/2 loss 0.2500", flush=True)
    print("warning: stale data", file=sys.stderr)
    """
)
"""A node's output as it comes: mldesigner on stdout, TensorFlow on stderr, the project's lines between."""


def test_progress_reports_one_line_each_with_rate_and_time_left():
    stream = io.StringIO()
    progress = Progress(3, "epoch", items="img", stream=stream)
    for epoch in (1, 2, 3):
        progress.update(epoch, items=epoch * 100, loss=1 / epoch, step="x")
    first, second, last = stream.getvalue().splitlines()
    assert re.fullmatch(r"progress: epoch 1/3 loss 1\.0000 step x \d+ img/s ETA \d+:\d\d", first), first
    assert Event.parse(second) == Event("epoch", 2, 3, second.split("epoch 2/3 ")[1])
    assert "ETA" not in last and last.startswith("progress: epoch 3/3 loss 0.3333")
    assert Event.parse("epoch 1/3: loss 2.0") is None and Event.parse("progress: epoch one/3") is None


def test_progress_thins_fast_reports_but_always_shows_the_first_and_last():
    stream = io.StringIO()
    progress = Progress(100, "files", every_seconds=3600, eta=False, stream=stream)
    for done in range(1, 101):
        progress.update(done)
    assert stream.getvalue().splitlines() == ["progress: files 1/100", "progress: files 100/100"]


def test_a_bar_makes_room_for_the_figures_on_a_narrow_terminal():
    event = Event("epoch", 1, 4, "loss 2.3622 acc 0.1250 val_acc 0.0000 1830 img/s ETA 0:03")
    wide, narrow = event.bar("train", 120), event.bar("train", 79)
    assert wide == f"[train] epoch 1/4 [#####{'.' * 15}] {event.figures}"
    assert narrow == event.plain("train") and len(narrow) <= 79  # no room for a bar: the figures stay
    assert event.bar("train", 30) == event.plain("train")[:30]


def test_times_left_read_as_a_clock():
    assert [clock(4), clock(750), clock(3723)] == ["0:04", "12:30", "1:02:03"]


def _stream(tmp_path: Path, *, log: bool, verbose: bool = False, script: str = NODE) -> tuple[int, str, str]:
    console, errors = io.StringIO(), io.StringIO()
    code = stream_node(
        [sys.executable, "-c", script],
        dict(os.environ),
        log_path=tmp_path / "node" / "log.txt" if log else None,
        label="train",
        verbose=verbose,
        console=console,
        errors=errors,
    )
    return code, console.getvalue(), errors.getvalue()


def test_a_pipeline_node_shows_its_progress_and_logs_everything(tmp_path):
    code, console, errors = _stream(tmp_path, log=True)
    assert code == 0 and errors == ""
    assert console.splitlines() == [
        "[train] epoch 1/2 loss 0.5000 ETA 0:01",
        "[train] epoch 2/2 loss 0.2500",
    ]
    logged = (tmp_path / "node" / "log.txt").read_text()
    for line in (MLDESIGNER_BANNER, TF_NOTICE, "progress: epoch 2/2 loss 0.2500", "warning: stale data"):
        assert line in logged


def test_a_component_command_shows_the_projects_lines_and_hides_the_frameworks(tmp_path):
    code, console, errors = _stream(tmp_path, log=False)
    assert code == 0
    assert console.splitlines() == [
        "[train] epoch 1/2 loss 0.5000 ETA 0:01",
        "blessed: accuracy 0.99",
        "[train] epoch 2/2 loss 0.2500",
    ]
    assert errors == "warning: stale data\n"


def test_verbose_shows_the_frameworks_logs_too(tmp_path):
    _, console, errors = _stream(tmp_path, log=True, verbose=True)  # one stream, in the order written
    assert f"[train] {MLDESIGNER_BANNER}" in console and f"[train] {TF_NOTICE}" in console
    _, console, errors = _stream(tmp_path, log=False, verbose=True)
    assert MLDESIGNER_BANNER in console.splitlines() and TF_NOTICE in errors.splitlines()


def test_a_failure_stays_visible(tmp_path):
    crash = f"import sys\nprint({TF_NOTICE!r}, file=sys.stderr)\nraise ValueError('bad shape')"
    code, _, errors = _stream(tmp_path, log=False, script=crash)
    assert code == 1
    assert "Traceback (most recent call last):" in errors and "ValueError: bad shape" in errors
    silent = f"import sys\nprint({TF_NOTICE!r}, file=sys.stderr)\nsys.exit(3)"
    code, _, errors = _stream(tmp_path, log=False, script=silent)
    assert code == 3 and errors == TF_NOTICE + "\n"  # no word of its own: its last lines are the clue


def test_a_terminal_gets_one_live_bar_per_node(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "81")
    controller, terminal = pty.openpty()
    with open(terminal, "w") as console:
        code = stream_node(
            [sys.executable, "-c", NODE],
            dict(os.environ),
            log_path=tmp_path / "log.txt",
            label="train",
            console=console,
            errors=io.StringIO(),
        )
    received = b""
    with contextlib.suppress(OSError):  # EIO (Linux) once all that the closed terminal got is read
        while chunk := os.read(controller, 65536):
            received += chunk
    os.close(controller)
    shown = received.decode()
    assert code == 0
    first, second = shown.split("\r\x1b[K")[1:]
    assert first == "[train] epoch 1/2 [##########..........] loss 0.5000 ETA 0:01"
    assert second.rstrip("\r\n") == "[train] epoch 2/2 [####################] loss 0.2500"
    assert shown.endswith("\n")  # the bar's line is ended when the node ends


def test_ingest_reports_its_steps_on_a_large_source(tmp_path, monkeypatch, capsys):
    from mnist_mlops.components.ingest import executor

    monkeypatch.setenv("MNIST_MLOPS_TRACKING", "off")
    data = write_png_tree(tmp_path / "data", small_splits(2, 1))
    executor.run_ingest(str(data), tmp_path / "small", tmp_path / "small.json")
    assert "progress:" not in capsys.readouterr().out
    monkeypatch.setattr(executor, "LARGE_SOURCE_FILES", 30)  # 30 files: "large" for this test
    executor.run_ingest(str(data), tmp_path / "large", tmp_path / "large.json")
    assert capsys.readouterr().out.splitlines() == [
        f"progress: step {number}/4 {step} 30 files"
        for number, step in enumerate(("read", "decoded", "checked", "written"), start=1)
    ]


def test_a_component_command_console_has_no_mldesigner_log_or_azure_ai_ml_warning(tmp_path):
    """mldesigner warns when azure-ai-ml is older than 1.2.0 or missing (a data-only install): an older
    one is declared here, ahead of the real one, so the warning really fires in the node."""
    declared = tmp_path / "site" / "azure_ai_ml-1.0.0.dist-info"
    declared.mkdir(parents=True)
    (declared / "METADATA").write_text("Metadata-Version: 2.1\nName: azure-ai-ml\nVersion: 1.0.0\n")
    data = write_png_tree(tmp_path / "data", small_splits(2, 1))
    environment = os.environ | {"PYTHONPATH": str(declared.parent), "MNIST_MLOPS_TRACKING": "off"}
    command = [str(Path(sys.executable).parent / "mnist-mlops"), "ingest", "--source-uri", str(data)]

    def ingest(*options: str) -> subprocess.CompletedProcess:
        argv = [*command, "--dataset", "dataset", "--data-report", "data_report.json", *options]
        return subprocess.run(argv, cwd=tmp_path, env=environment, capture_output=True, text=True)

    quiet = ingest()
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == (
        "ingest done: dataset dataset, data_report data_report.json\n",
        "",
    )
    verbose = ingest("--verbose")
    assert "Mldesigner requires azure-ai-ml >= 1.2.0" in verbose.stderr
    assert "Mldesigner parsing input parameters" in verbose.stdout and "Provided args" in verbose.stdout
    wrong = subprocess.run(
        [*command[:2], "--source-uri", "nowhere", "--dataset", "d", "--data-report", "r.json"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert (wrong.stdout, wrong.stderr) == ("", "error: source nowhere: no such file or folder\n")


@pytest.mark.slow  # reads the shared small run (conftest `deployed_run`)
def test_a_run_shows_trains_progress_and_nothing_a_newcomer_must_ignore(deployed_run):
    (epochs,) = [arg.split("=")[1] for arg in deployed_run.argv if arg.startswith("train.epochs=")]
    line = rf"^\[train\] epoch (\d+)/{epochs} loss [\d.]+ acc [\d.]+ val_acc [\d.]+ \d+ img/s"
    shown = re.findall(line, deployed_run.stdout, re.MULTILINE)
    assert shown == [str(epoch) for epoch in range(1, int(epochs) + 1)], deployed_run.stdout
    for noise in FRAMEWORK_NOISE:
        assert noise not in deployed_run.stdout + deployed_run.stderr, noise
    assert deployed_run.stderr == ""


class _ClosedConsole(io.StringIO):
    """A terminal that went away (`mnist-mlops run | head` after head exits)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_console_that_goes_away_never_blocks_the_node(tmp_path):
    script = "for n in range(20000): print(f'progress: epoch {n % 9 + 1}/9 loss 0.5', flush=True)"
    errors = io.StringIO()
    code = stream_node(
        [sys.executable, "-c", script],
        dict(os.environ),
        log_path=tmp_path / "log.txt",
        label="train",
        console=_ClosedConsole(),
        errors=errors,
    )
    assert code == 0  # its pipe was drained to the end: more than a pipe's 64 KiB were written
    assert "train's output was not all shown or logged: [Errno 32] Broken pipe" in errors.getvalue()
