"""Errors that mean "the input is wrong": the CLI and components turn them into a message and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT_CODE = 2


class UserInputError(Exception):
    """A file, parameter or request is wrong; the message names what and where."""


class ContractError(UserInputError):
    """An artifact does not satisfy its JSON Schema."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a user error as one clear line and exit non-zero instead of showing a traceback."""
    try:
        yield
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
