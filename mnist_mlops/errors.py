"""Errors that mean "the input is wrong": the CLI and components turn them into a message and exit 2."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT_CODE = 2
DISK_FULL_EXIT_CODE = 74
"""A step stopped because its disk is full (sysexits' EX_IOERR): the local runner names the disk."""
DISK_FULL_LINE = "error: no space left on device"
"""What a step that stops on a full disk prints, then ` writing <path>` when it knows the file."""


class UserInputError(Exception):
    """A file, parameter or request is wrong; the message names what and where."""


class ContractError(UserInputError):
    """An artifact does not satisfy its JSON Schema."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write refused for want of space (a full disk, or a quota)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a user error, or a full disk, as one clear line and exit non-zero instead of showing a
    traceback."""
    try:
        yield
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
    except OSError as error:
        if not is_disk_full(error):
            raise
        report_disk_full(error)
        raise SystemExit(DISK_FULL_EXIT_CODE) from None


def report_disk_full(error: OSError) -> None:
    """The line a step prints before it exits with DISK_FULL_EXIT_CODE: what it could not write."""
    print(f"{DISK_FULL_LINE}{f' writing {error.filename}' if error.filename else ''}", file=sys.stderr)


def reported_full_file(output: str) -> str | None:
    """The file a step's `output` says it could not write for want of space (its last DISK_FULL_LINE),
    None when it says none."""
    for line in reversed(output.splitlines()):
        if line.startswith(DISK_FULL_LINE):
            return line.removeprefix(DISK_FULL_LINE).removeprefix(" writing ").strip() or None
    return None
