"""Read, validate and write the JSON artifacts that cross component boundaries.

Every schema lives in `schemas/<name>.schema.json` (package `mnist_mlops.schemas`); what several share
is written once in `definitions.schema.json`. A violation raises `ContractError` naming the file and the
JSON path of the offending field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator
from referencing import Registry, Resource

from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import ContractError

_MAX_MESSAGE = 200
"""Schema messages quote the offending value; a request body must never be echoed back whole."""


def schema_names() -> list[str]:
    """Names of all artifact schemas shipped with the package."""
    suffix = ".schema.json"
    files = resources.files("mnist_mlops.schemas").iterdir()
    return sorted(f.name[: -len(suffix)] for f in files if f.name.endswith(suffix))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema for artifact `name` (e.g. "dataset_manifest")."""
    path = resources.files("mnist_mlops.schemas") / f"{name}.schema.json"
    if not path.is_file():
        raise KeyError(f"no schema named {name!r}; known: {', '.join(schema_names())}")
    return json.loads(path.read_text())


@cache
def _schemas() -> Registry:
    """Every shipped schema under its `$id`, so `$ref`s between them (definitions.schema.json) resolve
    offline."""
    schemas = (load_schema(name) for name in schema_names())
    return Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in schemas)


@cache
def _validator(name: str) -> Draft202012Validator:
    """A compiled validator per schema and process (the schemas themselves are checked by the tests)."""
    return Draft202012Validator(
        load_schema(name), registry=_schemas(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate(instance: Any, name: str, *, source: str) -> None:
    """Raise ContractError if `instance` violates schema `name`; `source` names the file or request."""
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(instance))
    if error is not None:
        raise ContractError(
            f"{source}: field {error.json_path} does not match the {name} schema: {error.message}"
        )


def read_json(path: str | Path, name: str) -> dict[str, Any]:
    """Load a JSON artifact and validate it against schema `name`."""
    path = Path(path)
    try:
        instance = json.loads(path.read_text())
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found (expected a {name} artifact)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ContractError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise ContractError(f"{path}: cannot be read ({error.strerror})") from None
    validate(instance, name, source=str(path))
    return instance


def write_json(path: str | Path, instance: Any, name: str) -> None:
    """Validate `instance` against schema `name`, then write it atomically."""
    validate(instance, name, source=str(path))
    atomic_write_text(Path(path), json.dumps(instance, indent=2, sort_keys=True) + "\n")
