"""One process per output folder: a lock file beside the folder that names its owner.

`with RunLock(out, command="moai pretrain"):` claims the folder `out` for this process. The lock
is the file `.NAME.lock` beside `out` (beside, not inside, because prepared datasets and
tokenizers replace their folder whole when they finish), created atomically with O_EXCL (which
holds on NFS too) and holding JSON: pid, host, boot id, PID namespace, the process's start
time, since when (UTC), the command, an optional key and a random token.

A second launch while the owner lives gets FolderInUseError (exit 2), one line naming the
owner. A lock whose owner is gone is taken over, with a message saying whose it was:

- same machine (same host name, boot id and PID namespace): the owner is gone when its PID no
  longer runs, or runs a process started at another time (the PID was reused);
- another machine (a shared filesystem): the owner refreshes the lock file's modification time
  every `HEARTBEAT_S` (30 s) while it holds it; the lock is stale once that is older than
  `STALE_AFTER_S` (15 minutes). Clocks that differ by a few minutes do not matter at that scale;
  a lock from a live owner on another machine is never taken, whatever its age;
- a lock file that cannot be read (empty, cut short) and is older than 10 s is stale (an
  empty one is taken over without a message).

Callers that build the same thing (several processes preparing one dataset) pass a `key`
describing what they build and `wait_same_key=True`: an owner with the same key is waited for,
an owner with another key is refused.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with RunLock(out, command="moai pretrain"):
    ...     RunLock(out, command="moai pretrain").acquire()   # a second launch is refused
    Traceback (most recent call last):
    ...
    moai_llm.errors.FolderInUseError: ... is in use by moai pretrain (pid ... on ..., since ... UTC); ...
    >>> read_owner(out) is None   # released on leaving the block
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from moai_llm.errors import FolderInUseError

HEARTBEAT_S = 30.0
STALE_AFTER_S = 15 * 60.0
UNREADABLE_STALE_S = 10.0
TAKEOVER_STALE_S = 60.0


def real_folder(folder: str | os.PathLike) -> Path:
    """`folder` with symlinks resolved: `ln -s c5 a5` makes `a5` and `c5` one folder, one lock."""
    return Path(folder).expanduser().resolve()


def lock_path(folder: str | os.PathLike) -> Path:
    """Where the lock of `folder` lives: `.NAME.lock` in the parent of its real path."""
    folder = real_folder(folder)
    return folder.parent / f".{folder.name}.lock"


def readers_path(folder: str | os.PathLike) -> Path:
    """Where the shared (read) locks of `folder` live: `.NAME.readers/` beside its real path."""
    folder = real_folder(folder)
    return folder.parent / f".{folder.name}.readers"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return str(int(psutil.boot_time()))


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def is_zombie(pid: int) -> bool:
    """A process killed but not reaped yet (state Z in /proc/PID/stat): it holds nothing any more.
    In a container whose PID 1 does not reap, it stays one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] == "Z"


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _owner_record(command: str | None, key: str | None, token: str) -> bytes:
    me = os.getpid()
    return json.dumps({
        "pid": me, "host": socket.gethostname(), "boot_id": _boot_id(), "pidns": _pid_namespace(),
        "start_time": _start_time(me), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command, "argv": " ".join(sys.argv)[:300], "key": key, "token": token,
    }).encode()


def read_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The lock file's content for `folder`, or None when it is not locked (or unreadable)."""
    try:
        return json.loads(lock_path(folder).read_bytes())
    except (OSError, ValueError):
        return None


def _same_machine(owner: dict[str, Any]) -> bool:
    return (owner.get("host"), owner.get("boot_id"), owner.get("pidns")) == (
        socket.gethostname(), _boot_id(), _pid_namespace())


def owner_alive(owner: dict[str, Any], mtime: float) -> bool:
    """Whether the process named in a lock file still holds it (see the module docstring)."""
    if not _same_machine(owner):
        return time.time() - mtime < STALE_AFTER_S
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    if is_zombie(pid):
        return False
    started = _start_time(pid)
    recorded = owner.get("start_time")
    return started is None or recorded is None or abs(started - float(recorded)) < 1.0


def describe(owner: dict[str, Any]) -> str:
    """'moai pretrain (pid 123 on gpu-3, since 2025-01-02 10:00:00 UTC)'."""
    since = str(owner.get("since", "?")).replace("T", " ").replace("Z", " UTC")
    return f"{owner.get('command') or 'another process'} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {since})"


class RunLock:
    """An exclusive claim on an output folder (see the module docstring).

    `command` names what runs ("moai data prepare"); `key` describes what it builds; with
    `wait_same_key=True` an owner holding the same key is waited for (build once), others are
    refused. `acquire()` raises FolderInUseError; `release()` removes the lock file if it is
    still this lock's. Usable as a context manager.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None, key: str | None = None,
                 wait_same_key: bool = False, poll_s: float = 0.2):
        self.folder = Path(folder).expanduser().absolute()
        self.path = lock_path(self.folder)  # on the real path: every spelling of it meets one lock
        self.command = command
        self.key = key
        self.wait_same_key = wait_same_key
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.held = False
        self.took_over: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._made: list[Path] = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _content(self) -> bytes:
        return _owner_record(self.command, self.key, self.token)

    def _try_create(self) -> bool:
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = self._made or missing  # removed again on release when still empty
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._content())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; refuse (or wait for) a live owner."""
        waited = False
        while not self._try_create():
            try:
                raw, mtime = self.path.read_bytes(), self.path.stat().st_mtime
            except FileNotFoundError:
                continue  # released between our attempt and our look: try again
            try:
                owner = json.loads(raw)
            except ValueError:
                owner = None
            if owner is None:  # being written right now, or cut short by a crash
                if time.time() - mtime < UNREADABLE_STALE_S:
                    time.sleep(self.poll_s)
                    continue
                self._take_over(raw, {} if raw.strip() else None)
                continue
            if not owner_alive(owner, mtime):
                self._take_over(raw, owner)
                continue
            mine = _same_machine(owner) and owner.get("pid") == os.getpid()
            if self.wait_same_key and self.key is not None and owner.get("key") == self.key and not mine:
                if not waited:
                    from moai_llm.progress import info

                    info(f"waiting for {describe(owner)}, which is building {self.folder} the same way")
                    waited = True
                time.sleep(self.poll_s)
                continue
            raise FolderInUseError(
                f"{self.folder} is in use by {describe(owner)}; lock file {self.path}", owner,
                hint="wait for it to finish, or choose another output folder"
                     + ("" if _same_machine(owner) else f" (a lock from another machine counts as stale "
                                                        f"{STALE_AFTER_S / 60:.0f} minutes after its last heartbeat)"))
        self.held = True
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="moai-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _take_over(self, stale: bytes, owner: dict[str, Any] | None) -> None:
        """Remove a stale lock file, unless someone replaced it meanwhile. A guard file makes
        the look-and-remove one step among processes that all found the same stale lock."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    guard.unlink()  # left by a process killed while taking over
            except FileNotFoundError:
                pass
            time.sleep(self.poll_s)
            return
        try:
            try:
                current = self.path.read_bytes()
            except FileNotFoundError:
                return
            if current == stale:
                self.path.unlink()
                self.took_over = owner
                if owner is not None:  # (an empty file is not worth a line: nothing was recorded in it)
                    from moai_llm.progress import info

                    what = describe(owner) if owner else "an unreadable lock file"
                    info(f"{self.folder}: taking over the lock of {what}, which is no longer running")
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def publish(self, **fields: Any) -> None:
        """Add `fields` to the lock file (atomically: readers see the old content or the new),
        e.g. that the run's record is written, for the other nodes of a run (training/launcher/nodes.py)."""
        if not self.held:
            return
        record = {**json.loads(_owner_record(self.command, self.key, self.token)), **fields}
        record["since"] = (read_owner(self.folder) or record).get("since", record["since"])
        tmp = self.path.with_name(f"{self.path.name}.{self.token[:12]}.tmp")
        tmp.write_bytes(json.dumps(record).encode())
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Remove the lock file if it still holds this lock's token (never someone else's)."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        try:
            if json.loads(self.path.read_bytes()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        for folder in self._made:  # deepest first: a refused run leaves no empty parent behind
            try:
                folder.rmdir()
            except OSError:
                break


class ReadLock:
    """A shared claim on a folder others build: a run holds its prepared dataset with it.

    Any number of readers at once, each a file in `.NAME.readers/` beside the folder. A reader
    waits while a build holds the folder's `RunLock`; a build calls `check_no_readers` once it
    holds that lock, before it replaces anything, and is refused while a live reader remains.
    Each side publishes its own file before looking for the other, so one of the two always sees
    the other. Dead readers (same rules as `owner_alive`) are ignored and removed.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None, poll_s: float = 0.5):
        self.folder = Path(folder).expanduser().absolute()
        self.dir = readers_path(self.folder)
        self.command = command
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.path = self.dir / f"{os.getpid()}-{self.token[:12]}.json"
        self.held = False
        self._stop = threading.Event()

    def __enter__(self) -> ReadLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Register as a reader; wait while a build of the folder is under way."""
        live_readers(self.folder)  # clears the files of readers that were killed
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(_owner_record(self.command, None, self.token))
        self.held = True
        waited = False
        while (owner := _live_builder(self.folder)) is not None:
            if not waited:
                from moai_llm.progress import info

                info(f"waiting for {describe(owner)}, which is building {self.folder}")
                waited = True
            time.sleep(self.poll_s)
        self._stop.clear()
        threading.Thread(target=self._beat, name="moai-read-lock-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()  # only when no other reader is left


def _live_builder(folder: Path) -> dict[str, Any] | None:
    """The owner of `folder`'s exclusive lock while it lives (not this process), else None."""
    path = lock_path(folder)
    try:
        owner, mtime = json.loads(path.read_bytes()), path.stat().st_mtime
    except (OSError, ValueError):
        return None
    mine = _same_machine(owner) and owner.get("pid") == os.getpid()
    return owner if owner_alive(owner, mtime) and not mine else None


def live_readers(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The live `ReadLock` owners of `folder` (dead ones' files are removed)."""
    found = []
    folder_dir = readers_path(folder)
    for entry in sorted(folder_dir.glob("*.json")) if folder_dir.is_dir() else []:
        try:
            raw, mtime = entry.read_bytes(), entry.stat().st_mtime
        except OSError:
            continue
        try:
            owner = json.loads(raw)
        except ValueError:  # being written, or cut short by a kill long ago
            if time.time() - mtime > UNREADABLE_STALE_S:
                entry.unlink(missing_ok=True)
            continue
        if owner_alive(owner, mtime):
            found.append(owner)
        else:
            entry.unlink(missing_ok=True)
    return found


def check_no_readers(folder: str | os.PathLike, action: str = "rebuild it") -> None:
    """Refuse (FolderInUseError, exit 2) while a live run reads `folder` (see `ReadLock`)."""
    readers = [r for r in live_readers(folder) if not (_same_machine(r) and r.get("pid") == os.getpid())]
    if readers:
        more = f" and {len(readers) - 1} more" if len(readers) > 1 else ""
        raise FolderInUseError(f"{folder} is in use by {describe(readers[0])}{more}, which reads it; "
                               f"cannot {action} now", readers[0],
                               hint="wait for that run to finish, or write to another --output-dir")
