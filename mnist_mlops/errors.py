"""Errors that mean "the input is wrong": the CLI and components turn them into a message and exit 2."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT_CODE = 2
DISK_FULL_EXIT_CODE = 74
"""A step stopped because its disk is full (sysexits' EX_IOERR): the local runner names the disk."""


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
        where = f" writing {error.filename}" if error.filename else ""
        print(f"error: no space left on device{where}", file=sys.stderr)
        raise SystemExit(DISK_FULL_EXIT_CODE) from None
