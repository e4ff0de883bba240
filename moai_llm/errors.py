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


class FolderInUseError(MoaiInputError):
    """Another live process holds the output folder's lock (`moai_llm.locks.RunLock`).

    `owner` is the lock file's content: pid, host, since, command.
    """

    def __init__(self, message: str, owner: dict, hint: str | None = None):
        super().__init__(message, hint)
        self.owner = owner


class NotEnoughMemoryError(MoaiInputError):
    """A flag asks for more memory than the machine has (`moai_llm.resources.check_memory`).

    `need` and `available` are bytes; `largest` is the largest value of `flag` that fits (None
    when not even the smallest does).
    """

    def __init__(self, message: str, flag: str, value: int, need: int, available: int,
                 largest: int | None, hint: str | None = None):
        super().__init__(message, hint)
        self.flag, self.value, self.need, self.available, self.largest = flag, value, need, available, largest


class DiskFullError(MoaiInputError):
    """The disk filled (or would fill) while writing an output; the partial output was removed.

    `needed` is the estimated size of the whole output in bytes (None when unknown), `free` the
    free space on that disk now.
    """

    def __init__(self, message: str, path: str, needed: int | None, free: int, hint: str | None = None):
        super().__init__(message, hint)
        self.path, self.needed, self.free = path, needed, free
