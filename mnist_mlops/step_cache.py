"""Content-addressed step cache for local pipeline runs.

A step's key is a SHA-256 over what decides its result: the component's fingerprint (spec.yaml, its
environment, its own sources, the shared library and the schemas: `snapshot.component_fingerprint`,
also publish's version hash) and, per input, either the
content hash of the artifact (file bytes, or every file of a folder with its relative path) or the
parameter's value. Paths never enter the key, so a changed data file is never served from cache (the
reuse bug users of path-keyed caches keep reporting).

An entry is written only after the step succeeded and its outputs were moved into place, and it
records each output's content hash; a hit re-verifies those hashes before hard-linking the outputs
into the new run, so an interrupted step or an edited output is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.hashing import content_sha256
from mnist_mlops.snapshot import component_fingerprint


@cache
def _fingerprint(component: str) -> str:
    return component_fingerprint(component)


def step_key(component: str, artifacts: dict[str, str], parameters: dict[str, Any]) -> str:
    """The cache key: component fingerprint + input content hashes + parameter values."""
    document = {
        "component": component,
        "fingerprint": _fingerprint(component),
        "artifacts": dict(sorted(artifacts.items())),
        "parameters": dict(sorted(parameters.items())),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    """Entries under ``<root>/<key>.json`` pointing at the outputs of the run that produced them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, key: str) -> dict[str, dict[str, str]] | None:
        """The entry's outputs ({port: {path, sha256}}) if every one still exists unchanged."""
        entry_path = self.root / f"{key}.json"
        if not entry_path.is_file():
            return None
        try:
            outputs = json.loads(entry_path.read_text())["outputs"]
        except (ValueError, KeyError):
            return None
        for output in outputs.values():
            path = Path(output["path"])
            if not path.exists() or content_sha256(path) != output["sha256"]:
                return None
        return outputs

    def store(self, key: str, outputs: dict[str, Path]) -> dict[str, dict[str, str]]:
        recorded = {
            port: {"path": str(Path(path).resolve()), "sha256": content_sha256(Path(path))}
            for port, path in outputs.items()
        }
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / f"{key}.json", json.dumps({"outputs": recorded}, indent=1))
        return recorded


def link_copy(source: Path, target: Path) -> None:
    """Place a cached output in a new run: hard links where possible (no bytes copied), else copies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restoring")
    if staged.exists():
        shutil.rmtree(staged) if staged.is_dir() else staged.unlink()
    if source.is_dir():
        shutil.copytree(source, staged, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(staged))
    os.replace(staged, target)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
