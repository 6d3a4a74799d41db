"""Endpoint bearer keys: rotated without a restart, the previous key honoured for a grace period.

The key file (``deployments/<endpoint>.key``, owner-only) always holds exactly the current key, so
`$(cat ...)` keeps working. `rotate_key` first writes the key it replaces, with the end of its grace
period, to ``<endpoint>.key.previous`` (owner-only, JSON), then the new key to the key file, each
written whole and renamed into place. The overlap rule: after a rotation a server accepts the new key
and, until `valid_until`, the one before it; a second rotation ends the first key's grace at once (one
previous key at most). A running server notices a rotation on the next request (`KeyRing` compares
the key file's inode, mtime and size on every request, a single stat), so clients may switch to the
new key at once and finish their in-flight requests with the old one. Every offered key is compared
with both keys in constant time (`hmac.compare_digest`, both comparisons always made).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import UserInputError
from mnist_mlops.locks import held

DEFAULT_GRACE_SECONDS = 300.0
MIN_KEY_CHARS = 16


def previous_key_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.previous")


def new_key() -> str:
    return secrets.token_urlsafe(32)


def read_key(path: str | Path) -> str:
    """The key a key file holds; a missing, unreadable or short one is an error naming the file."""
    try:
        key = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"key file {path}: cannot read the key ({error})") from None
    if len(key) < MIN_KEY_CHARS:
        raise UserInputError(f"key file {path}: the key is too short (at least {MIN_KEY_CHARS} characters)")
    return key


def rotate_key(path: Path, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> float:
    """Replace the key in `path` by a new one; the replaced key stays valid for `grace_seconds`.
    Returns when its grace ends (Unix time)."""
    if grace_seconds < 0:
        raise UserInputError(f"grace period {grace_seconds} s: expected 0 or more seconds")
    if not path.is_file():
        raise UserInputError(f"key file {path}: none to rotate (deploy or serve makes it)")
    with held(path.with_name(f".{path.name}.lock")):  # two at once could each keep the same previous key
        current = read_key(path)
        valid_until = time.time() + grace_seconds
        previous = json.dumps({"key": current, "valid_until": valid_until})
        atomic_write_text(previous_key_path(path), previous, private=True)
        atomic_write_text(path, new_key() + "\n", private=True)
    return valid_until


@dataclass(frozen=True)
class _Keys:
    current: bytes
    previous: bytes | None
    previous_until: float


def _compare(token: bytes, keys: _Keys, now: float) -> bool:
    """Constant time in the token and in which key matches: both comparisons are always made."""
    matches_current = hmac.compare_digest(token, keys.current)
    matches_previous = hmac.compare_digest(token, keys.previous or keys.current)
    return matches_current or (matches_previous and keys.previous is not None and now < keys.previous_until)


class FixedKey:
    """One key that never changes (a key given in code rather than in a file)."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def accepts(self, token: bytes) -> bool:
        return hmac.compare_digest(token, self._key)


class KeyRing:
    """The keys a server accepts (see the module docstring), re-read when the key file changes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._keys = self._read()

    def accepts(self, token: bytes) -> bool:
        signature = self._stat()
        if signature != self._signature:
            self._reload(signature)
        return _compare(token, self._keys, self._clock())

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns, found.st_size

    def _reload(self, signature: tuple[int, int, int] | None) -> None:
        with self._lock:
            if signature == self._signature:
                return
            try:
                self._keys = self._read()
            except UserInputError as error:  # keep the keys we have; a broken file must not open the door
                print(f"key file not reloaded, the previous keys stay: {error}", file=sys.stderr, flush=True)
            self._signature = signature

    def _read(self) -> _Keys:
        current = read_key(self.path).encode()
        where = previous_key_path(self.path)
        if not where.exists():
            return _Keys(current, None, 0.0)
        try:
            document = json.loads(where.read_text(encoding="ascii"))
            return _Keys(current, document["key"].encode(), float(document["valid_until"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserInputError(f"previous key file {where}: not a key with its grace period") from None
