"""Run a component locally with exactly the command its container runs (the `command:` of spec.yaml).

The command template's `${{inputs.x}}` / `${{outputs.y}}` placeholders are bound to local values and
paths; optional `$[[ ... ]]` blocks are dropped when their input is unbound, as AML does. Parameters
are checked against the spec first, so a bad value fails before anything starts.

The node's output is teed (`stream_node`): all of it to its log file, and to the console only what is
the project's to say. The frameworks' own logs stay off the console unless asked for (`verbose`):
mldesigner's banners ("Mldesigner parsing input parameters...", "Provided args", "User Logs"), its
azure-ai-ml warning (the project only decorates and executes components, which work without it, and the
same command must keep running on Azure ML, so the line is left alone and kept out of sight here), and
TensorFlow's C++/absl start-up notices.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any, TextIO

from mnist_mlops.errors import UserInputError, is_disk_full
from mnist_mlops.ports import check_value, component_dir, load_spec
from mnist_mlops.progress import Event
from mnist_mlops.uris import scrub

NODE_OUTPUT = re.compile(r"\$\{\{parent\.jobs\.(?P<node>\w+)\.outputs\.(?P<port>\w+)\}\}")
PARENT_INPUT = re.compile(r"\$\{\{parent\.inputs\.(?P<name>\w+)\}\}")
"""How an Azure ML pipeline job binds a node input to another node's output or a pipeline input."""
OPTIONAL_BLOCK = re.compile(r"\$\[\[(.*?)\]\]")
PLACEHOLDER = re.compile(r"'?\$\{\{(inputs|outputs)\.(\w+)\}\}'?")
"""A spec command's optional `$[[...]]` blocks and its `${{inputs.x}}` / `${{outputs.y}}` placeholders."""
MLDESIGNER_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[\w+\]\[[A-Z]+\] - ")
"""mldesigner's log format (`_LoggerFactory`): its banners and its azure-ai-ml warning."""
PROJECT_STDERR = ("error: ", "warning: ")
"""How the project's own lines on stderr begin (`errors.exit_on_user_error`, the components' warnings)."""
TRACEBACK = "Traceback (most recent call last):"
HELD_LINES = 20
"""The last hidden stderr lines, shown when a node fails without a word of its own."""


def render_command(spec: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, str]) -> list[str]:
    """The argv of `spec`'s command with inputs (values or paths) and outputs (paths) bound."""
    for port in inputs:
        if port not in spec["inputs"]:
            raise UserInputError(
                f"{spec['name']}: no input named {port!r}; inputs: {', '.join(spec['inputs'])}"
            )
    for port, definition in spec["inputs"].items():
        value = inputs.get(port, definition.get("default"))
        if value is None and not definition.get("optional"):
            raise UserInputError(f"{spec['name']}: input {port} is required")
        check_value(spec["name"], port, definition, value)
    missing = set(spec["outputs"]) - set(outputs)
    if missing:
        raise UserInputError(f"{spec['name']}: no path given for output(s) {', '.join(sorted(missing))}")
    bound = {
        ("inputs", port): inputs.get(port, spec["inputs"][port].get("default")) for port in spec["inputs"]
    }
    bound |= {("outputs", port): path for port, path in outputs.items()}

    def keep_block(match: re.Match) -> str:
        names = PLACEHOLDER.findall(match.group(1))
        return match.group(1) if all(bound.get(name) is not None for name in names) else ""

    def substitute(match: re.Match) -> str:
        return shlex.quote(str(bound[(match.group(1), match.group(2))]))

    command = PLACEHOLDER.sub(substitute, OPTIONAL_BLOCK.sub(keep_block, spec["command"]))
    return shlex.split(command)


def run_component(
    name: str,
    inputs: dict[str, Any],
    outputs: dict[str, str | Path],
    *,
    log_path: Path | None = None,
    environment: dict[str, str] | None = None,
    label: str | None = None,
    verbose: bool = False,
) -> subprocess.CompletedProcess:
    """Run component `name` in a child process, in this process's working directory.

    The command is the spec's, with its `--source component.py` pointed at the component's file, so
    relative paths in inputs mean what the caller meant. Output goes to `log_path` when given (a pipeline
    node: the console gets its progress as `[label] ...` lines), else to this process's console without
    the frameworks' logs; `verbose` puts those on the console too. `environment` adds variables (its
    MLflow run, as Azure ML sets them). A failed step leaves none of the outputs it was to create.
    """
    spec = load_spec(name)
    argv = render_command(spec, inputs, {port: str(Path(path)) for port, path in outputs.items()})
    if argv[0] == "mldesigner":
        argv[0] = str(Path(sys.executable).parent / "mldesigner")  # this environment's, activated or not
    argv[argv.index("--source") + 1] = str(component_dir(name) / "component.py")
    fresh = [Path(path) for path in outputs.values() if not Path(path).exists()]
    env = {**os.environ, **(environment or {})}
    code = stream_node(argv, env, log_path=log_path, label=label or name, verbose=verbose)
    if code != 0:
        discard(fresh)
    return subprocess.CompletedProcess(argv, code)


def stream_node(
    argv: list[str],
    env: dict[str, str],
    *,
    log_path: Path | None,
    label: str,
    verbose: bool = False,
    console: TextIO | None = None,
    errors: TextIO | None = None,
) -> int:
    """Run `argv`, teeing its output: every line to `log_path` (when given), progress events to `console`
    as `[label]` lines (one live bar on a terminal), and the other lines as `console_shows` decides.
    Returns the exit code."""
    console, errors = console or sys.stdout, errors or sys.stderr
    view = ConsoleView(label, console)
    pipeline = log_path is not None
    if pipeline:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    held: deque[str] = deque(maxlen=HELD_LINES)
    failing = threading.Event()  # a command's traceback began: the rest of its stderr is the error
    said = threading.Event()  # the node put a line of its own on stderr

    broken: list[OSError] = []  # a console or log that cannot be written: drain on, report at the end

    def pump(stream: IO[str], from_stderr: bool) -> None:
        for line in stream:
            with lock:
                if broken:
                    continue  # still read: a node whose pipe is not drained blocks for ever
                try:
                    tee(line, from_stderr)
                except OSError as error:  # a closed terminal, `| head`, a full disk
                    broken.append(error)

    def tee(line: str, from_stderr: bool) -> None:
        line = scrub(line)  # a node may print its arguments (mldesigner does), a SAS URL among them
        if log is not None:
            log.write(line)
            log.flush()
        if (event := Event.parse(line)) is not None:
            view.progress(event)
            return
        if from_stderr and not pipeline and line.startswith(TRACEBACK):
            failing.set()
        shown = verbose or console_shows(line, from_stderr, pipeline=pipeline)
        shown = shown or (from_stderr and failing.is_set())
        if shown:
            view.echo(line, errors if from_stderr else console, prefixed=pipeline)
        if from_stderr and shown:
            said.set()
        elif from_stderr:
            held.append(line)

    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "w")) if pipeline else None
        process = stack.enter_context(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if pipeline else subprocess.PIPE,  # a log in the order written
                text=True,
                errors="replace",
                env=env | {"PYTHONUNBUFFERED": "1"},  # progress as it happens, not when a buffer fills
            )
        )
        pumps = [threading.Thread(target=pump, args=(process.stdout, False), daemon=True)]
        if not pipeline:
            pumps.append(threading.Thread(target=pump, args=(process.stderr, True), daemon=True))
        for thread in pumps:
            thread.start()
        code = process.wait()
        for thread in pumps:
            thread.join()
    with contextlib.suppress(OSError):
        view.close()
        if broken and not (pipeline and is_disk_full(broken[0])):  # the runner names the full disk
            print(f"warning: {label}'s output was not all shown or logged: {broken[0]}", file=errors)
        if not pipeline and code != 0 and not said.is_set():
            errors.writelines(held)  # a crash with no word of its own: its last lines are the clue
            if not held:
                print(f"error: {label} exited with code {code}", file=errors)
    return code


def console_shows(line: str, from_stderr: bool, *, pipeline: bool) -> bool:
    """Whether a node's output line (not a progress event) is the project's to show by default.

    A pipeline node's console is its progress only (the rest is in its log). A component command shows
    what the component prints on stdout, less mldesigner's log lines, and on stderr the project's
    `error:` / `warning:` lines; the frameworks' stderr (TensorFlow, absl, library warnings) is hidden.
    """
    if pipeline:
        return False
    if from_stderr:
        return line.startswith(PROJECT_STDERR)
    return MLDESIGNER_LOG.match(line) is None


class ConsoleView:
    """What a console shows of one node: progress as plain lines, or on a terminal as one bar rewritten
    in place (ended with a newline before any other line, and when the node ends)."""

    def __init__(self, label: str, console: TextIO) -> None:
        self.label, self.console = label, console
        self.terminal = console.isatty()
        self.live = False

    def progress(self, event: Event) -> None:
        if not self.terminal:
            self.console.write(event.plain(self.label) + "\n")
        else:
            width = shutil.get_terminal_size().columns - 1  # the last column would wrap the line
            self.console.write("\r\x1b[K" + event.bar(self.label, width))
            self.live = True
        self.console.flush()

    def echo(self, line: str, stream: TextIO, *, prefixed: bool) -> None:
        self.close()
        stream.write(f"[{self.label}] {line}" if prefixed else line)
        stream.flush()

    def close(self) -> None:
        if self.live:
            self.console.write("\n")
            self.console.flush()
            self.live = False


def discard(paths: list[Path]) -> None:
    """Remove the outputs a failed step created, complete-looking or not: only all-or-nothing counts."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def is_artifact(definition: dict[str, Any]) -> bool:
    """Ports that carry files (bound to paths) rather than values."""
    return definition["type"].startswith(("uri_", "mlflow_", "custom_"))
