"""Run a component locally with exactly the command its container runs (the `command:` of spec.yaml).

The command template's `${{inputs.x}}` / `${{outputs.y}}` placeholders are bound to local values and
paths; optional `$[[ ... ]]` blocks are dropped when their input is unbound, as AML does. Parameters
are checked against the spec first, so a bad value fails before anything starts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import check_value, component_dir, load_spec

NODE_OUTPUT = re.compile(r"\$\{\{parent\.jobs\.(?P<node>\w+)\.outputs\.(?P<port>\w+)\}\}")
PARENT_INPUT = re.compile(r"\$\{\{parent\.inputs\.(?P<name>\w+)\}\}")
"""How an Azure ML pipeline job binds a node input to another node's output or a pipeline input."""
OPTIONAL_BLOCK = re.compile(r"\$\[\[(.*?)\]\]")
PLACEHOLDER = re.compile(r"'?\$\{\{(inputs|outputs)\.(\w+)\}\}'?")
"""A spec command's optional `$[[...]]` blocks and its `${{inputs.x}}` / `${{outputs.y}}` placeholders."""


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
) -> subprocess.CompletedProcess:
    """Run component `name` in a child process, in this process's working directory.

    The command is the spec's, with its `--source component.py` pointed at the component's file, so
    relative paths in inputs mean what the caller meant. Output goes to `log_path` when given, else to
    this process's stdout and stderr; `environment` adds variables (its MLflow run, as Azure ML sets
    them). A failed step leaves none of the outputs it was to create.
    """
    spec = load_spec(name)
    argv = render_command(spec, inputs, {port: str(Path(path)) for port, path in outputs.items()})
    if argv[0] == "mldesigner":
        argv[0] = str(Path(sys.executable).parent / "mldesigner")  # this environment's, activated or not
    argv[argv.index("--source") + 1] = str(component_dir(name) / "component.py")
    fresh = [Path(path) for path in outputs.values() if not Path(path).exists()]
    env = {**os.environ, **(environment or {})}
    if log_path is None:
        result = subprocess.run(argv, check=False, env=env)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, text=True, check=False, env=env
            )
    if result.returncode != 0:
        discard(fresh)
    return result


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
