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

One more way to a hit, declared per component (metadata.yaml's `reuse_when_same_content`): a step
that compares one input with another has nothing new to judge when both hold the same content
(`SameContentRule`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mnist_mlops.atomic import RESTORING, atomic_write_text
from mnist_mlops.hashing import content_sha256
from mnist_mlops.locks import held
from mnist_mlops.snapshot import component_fingerprint

LOCK_FILE = ".lock"
"""In the cache's folder, held by the run using it (`StepCache.held_by`)."""


@cache
def _fingerprint(component: str) -> str:
    return component_fingerprint(component)


def step_key(
    component: str, artifacts: dict[str, str], parameters: dict[str, Any], *, regardless_of: str | None = None
) -> str:
    """The cache key: component fingerprint + input content hashes + parameter values. With
    `regardless_of` (an input left out of `artifacts`), the key of a `SameContentRule`'s standing
    result, which never equals the key of a step run without that input."""
    document = {
        "component": component,
        "fingerprint": _fingerprint(component),
        "artifacts": dict(sorted(artifacts.items())),
        "parameters": dict(sorted(parameters.items())),
    }
    if regardless_of is not None:
        document["regardless_of"] = regardless_of
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class SameContentRule:
    """When `input` (its `part`, a path inside it, if given) holds exactly the content of `same_as`, the
    step would compare `same_as` with itself: nothing new to judge, so the result this component last
    produced for the same `same_as`, every other input and every parameter, judged against anything
    but `same_as` itself, stands.

    For evaluate (input champion, part model, same_as challenger): after run 1 deployed its challenger
    as v1, run 2's champion is that very model; the verdict that made it the champion stands, and
    register's and deploy's records of it are reused as long as the registry still agrees.

    Why this is safe: the standing key keeps everything else that decides the result (code, the
    challenger's content, the data, the thresholds, the parameters), so new data or code misses it; a
    champion with any other content is not the same content and is keyed by its content as always, so
    it is judged again; and a result judged against `same_as` itself (no verdict at all) is never filed
    as the standing one. What `input` brings beside `same_as` (the champion's reference and the traffic
    summary, which decide evaluate's data-shift gates) is left out too: those judge a challenger that is
    not yet production, and this one already is. The standing entry is rewritten by each new verdict,
    so the one that stands is the latest (in a whole run, the one register and deploy acted on).
    Content, not a version number, is what was judged: the same bytes registered again under another
    version are the same model, and whether production should name that version is left to register's
    and deploy's registry policy.
    """

    input: str
    same_as: str
    part: str = ""

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> SameContentRule | None:
        declared = metadata.get("reuse_when_same_content")
        return None if declared is None else cls(**declared)

    def holds(self, inputs: dict[str, Any], artifacts: dict[str, str]) -> bool:
        """Whether `input` (its `part`) holds the content of `same_as`, by content hash, never by path."""
        if inputs.get(self.input) is None or self.same_as not in artifacts:
            return False
        candidate = Path(inputs[self.input]) / self.part
        return candidate.exists() and content_sha256(candidate) == artifacts[self.same_as]

    def standing_key(self, component: str, artifacts: dict[str, str], parameters: dict[str, Any]) -> str:
        """The key of the result that stands whatever `input` holds."""
        others = {port: sha for port, sha in artifacts.items() if port != self.input}
        return step_key(component, others, parameters, regardless_of=self.input)

    def reason(self) -> str:
        return (
            f"{self.input} holds the same content as {self.same_as}: the result for this "
            f"{self.same_as} stands"
        )


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
        self.record(key, recorded)
        return recorded

    def record(self, key: str, recorded: dict[str, dict[str, str]]) -> None:
        """File outputs already recorded (by `store` or a hit) under one more key."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / f"{key}.json", json.dumps({"outputs": recorded}, indent=1))

    @contextmanager
    def held_by(self, run: str, *, recover: Callable[[str], None] | None = None) -> Iterator[None]:
        """The cache's lock for the whole of `run`: a second run on the same runs folder waits, saying
        whose lock it waits for, then finds the first one's steps here (two at once would train the
        same model twice and register it twice). The lock goes with its process, even a killed one;
        `recover` first gets the id of a run that died holding it (`locks.held`)."""

        def recovered(left: str) -> None:
            if recover is not None and left.startswith("run "):  # "run <id> (pid <n>)"
                recover(left.split()[1])

        with held(self.root / LOCK_FILE, holder=f"run {run} (pid {os.getpid()})", recover=recovered):
            yield


def link_copy(source: Path, target: Path) -> None:
    """Place a cached output in a new run: hard links where possible (no bytes copied), else copies;
    staged beside `target` and renamed into place, the staged part removed if it fails (a full disk)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}{RESTORING}")
    _remove(staged)
    try:
        if source.is_dir():
            staged.mkdir()
            for path in sorted(source.rglob("*")):  # a folder before what it holds
                placed = staged / path.relative_to(source)
                placed.mkdir() if path.is_dir() else _link_or_copy(str(path), str(placed))
        else:
            _link_or_copy(str(source), str(staged))
        os.replace(staged, target)
    except BaseException:
        _remove(staged)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
