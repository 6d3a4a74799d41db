"""All-or-nothing outputs: build in a temporary sibling, then rename into place.

A failed step therefore never leaves a half-written file or folder where a reader (or a cache) would
take it for a finished one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mnist_mlops.errors import UserInputError

STAGED_FILE = ".tmp"
STAGED_FOLDER = ".partial"
RESTORING = ".restoring"
DOWNLOADING = ".download"
REORDERING = ".reordered"
STAGING_SUFFIXES = (STAGED_FILE, STAGED_FOLDER, RESTORING, DOWNLOADING, REORDERING)
"""How what is built beside its final name ends (`.<name>.<random><suffix>` or `.<name><suffix>`): a
file or folder written here, a cached output placed in a run (`step_cache.link_copy`), a registry
download (`registry.download_folder`), an array file rewritten in another order (`npyfiles`). Nothing
so named is ever a finished output."""


def atomic_write_bytes(path: Path, data: bytes, *, private: bool = False, durable: bool = True) -> None:
    """Write `data` to `path` so readers see either the old file or the complete new one; `private`:
    owner-only (0600) from the moment it is created, as a key must be; `durable`: on disk before it is
    renamed into place (without, a power cut may leave it empty, never a killed process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=STAGED_FILE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, private: bool = False, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), private=private, durable=durable)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
"""mkstemp/mkdtemp create private files; outputs get the permissions a plain open() would give."""


def _move_entries(stage: Path, final: Path) -> None:
    """Move the staged entries up into `final`, manifests last so that readers find them last; on a
    failure part-way, take back what was moved so `final` is empty again."""
    entries = sorted(stage.iterdir(), key=lambda entry: entry.name == "manifest.json")
    moved = []
    try:
        for entry in entries:
            os.replace(entry, final / entry.name)
            moved.append(final / entry.name)
    except BaseException:
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        raise
    stage.rmdir()


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success its contents become `final`, on failure it vanishes.

    When `final` does not exist the staging folder is a sibling renamed into place in one step. AML and
    KFP pre-create output folders (often as mount points that cannot be renamed over), so an existing
    empty `final` gets a hidden staging folder inside it whose entries are moved up one rename each.
    Anything else already at `final` is refused rather than overwritten.
    """
    final = Path(final)
    preexisting = final.exists()
    if preexisting and (not final.is_dir() or any(final.iterdir())):
        raise UserInputError(f"output {final} already exists and is not an empty folder; not overwritten")
    parent = final if preexisting else final.parent
    created = [folder for folder in final.parents if not folder.exists()]  # innermost first
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{final.name}.", suffix=STAGED_FOLDER))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_UMASK)
        if preexisting:
            _move_entries(stage, final)
        else:
            os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # a failed stage leaves no empty folders it made either
            with suppress(OSError):  # best effort: the error being raised is the one to see
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
