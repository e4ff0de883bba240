"""Errors a user can fix. The CLI prints them as one red line and exits with code 2."""

from __future__ import annotations


class MoaiInputError(Exception):
    """Bad input: a file, flag or setting the user gave is wrong.

    The message names the file, line or flag and what to do, in one line. `hint` is an
    optional second sentence ("pass --text-column ...").
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class MoaiRunError(Exception):
    """A failure while running that is not a bug (e.g. too many NaN steps); exit code 1."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
