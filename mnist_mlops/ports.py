"""Component specs (the checked-in `spec.yaml`) as data, and checks of parameter values against them.

azure-ai-ml's own validation does not enforce `min`, `max` or `enum`, and `mldesigner execute` passes
values through unchecked. So each executor's `run_<stage>` is `checked` against its spec: whoever calls
it (the component body under mldesigner, Azure ML or Kubeflow, the CLI, the local runner, a Python
caller) passes through the same checks, in one place.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from mnist_mlops.errors import UserInputError

Executor = TypeVar("Executor", bound=Callable[..., Any])
PRIMITIVE_TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool}


@cache
def components_root() -> Path:
    """The folder of `mnist_mlops.components` (components/ in a checkout), found without importing it:
    the runtime sits below the components and must not run them to find their files."""
    spec = importlib.util.find_spec("mnist_mlops.components")
    return Path(spec.submodule_search_locations[0])


def component_names() -> list[str]:
    """Stage folders under components/ that hold a component, sorted by name."""
    return sorted(p.parent.name for p in components_root().glob("*/component.py"))


def component_dir(name: str) -> Path:
    folder = components_root() / name
    if not (folder / "component.py").is_file():
        raise UserInputError(f"no component named {name!r}; known: {', '.join(component_names())}")
    return folder


@cache
def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def load_spec(name_or_path: str | Path) -> dict[str, Any]:
    """The compiled AML spec of a component, by stage name or by any file in its folder."""
    path = Path(name_or_path)
    folder = path.parent if path.suffix in (".py", ".yaml") else component_dir(str(name_or_path))
    return _load((folder / "spec.yaml").resolve())


class _DatesAsText(yaml.SafeLoader):
    """YAML reads an unquoted 2026-12-06 as a date (and fails outright on 2026-13-01); metadata keeps it
    as the text it is, so the schema judges `last_verified` and names the field when it is wrong."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


@cache
def _load_metadata_file(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_DatesAsText)


def load_metadata(name: str) -> dict[str, Any]:
    """A component's metadata.yaml (schema `component_metadata`): the catalog fields that the spec's tags
    and the README carry, and the local runner's policy. Name, version and environment are the spec's."""
    from mnist_mlops import contracts

    path = (component_dir(name) / "metadata.yaml").resolve()
    document = _load_metadata_file(path)
    contracts.validate(document, "component_metadata", source=str(path))
    return document


def check_parameters(component: str | Path, values: dict[str, Any]) -> None:
    """Raise UserInputError naming the component and parameter for any value outside its port's contract."""
    spec = load_spec(component)
    for port, definition in spec["inputs"].items():
        if port not in values:
            continue
        check_value(spec["name"], port, definition, values[port])


def checked(stage: str) -> Callable[[Executor], Executor]:
    """Check an executor's arguments named as `stage`'s primitive ports (type, min/max, enum) on
    every call, defaults included, before it runs."""

    def decorate(function: Executor) -> Executor:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run_checked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check_parameters(stage, bound.arguments)
            return function(*args, **kwargs)

        return run_checked  # type: ignore[return-value]

    return decorate


def check_value(component: str, port: str, definition: dict[str, Any], value: Any) -> None:
    """Check one primitive value against type, min/max and enum of its port definition."""
    kind = definition["type"]
    if kind not in PRIMITIVE_TYPES:
        return
    where = f"{component}: parameter {port}"
    if value is None:
        if not definition.get("optional") and "default" not in definition:
            raise UserInputError(f"{where} is required")
        return
    expected = PRIMITIVE_TYPES[kind]
    if (isinstance(value, bool) and kind != "boolean") or not isinstance(value, expected):
        raise UserInputError(f"{where}={value!r}: must be of type {kind}")
    if kind == "number" and not math.isfinite(value):
        raise UserInputError(f"{where}={value!r}: must be a finite number")
    if "min" in definition and value < definition["min"]:
        raise UserInputError(f"{where}={value!r}: below the minimum {definition['min']}")
    if "max" in definition and value > definition["max"]:
        raise UserInputError(f"{where}={value!r}: above the maximum {definition['max']}")
    if "enum" in definition and value not in definition["enum"]:
        raise UserInputError(f"{where}={value!r}: must be one of {', '.join(map(str, definition['enum']))}")


def parse_value(definition: dict[str, Any], text: str) -> Any:
    """Convert a command-line string to the port's primitive type (for --set and the CLI)."""
    kind = definition["type"]
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise UserInputError(f"{text!r} is not a valid {kind}") from None
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise UserInputError(f"{text!r} is not a valid boolean (true or false)")
        return text.lower() == "true"
    return text
