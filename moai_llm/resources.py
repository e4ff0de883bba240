"""Memory and disk: what this machine has, and refusing a request that cannot fit.

A command that allocates in proportion to a flag (`--seq-len`, `--vocab-size`, the micro batch)
predicts the bytes it will add, compares them with `available_memory()` before allocating, and
refuses with one line: the prediction, what is available, and the largest value of the flag
that fits. A write that fills the disk becomes a `DiskFullError` that says how much the output
needs and how much is free, after the partial output was removed.

Available memory is the smallest of: the RAM the kernel can hand out (psutil `available`), the
room left under a cgroup memory limit (containers, SLURM), the room left under `ulimit -v`, and
`MOAI_MEMORY_LIMIT` (e.g. `8GiB`: a budget for the whole process, to leave room for others on a
shared machine). Predictions are extra bytes beyond what the process holds when it checks.

    >>> avail = available_memory()
    >>> avail.bytes > 0 and avail.source in ("RAM", "cgroup limit", "ulimit -v", "MOAI_MEMORY_LIMIT")
    True
    >>> human_bytes(3 * 2**30), parse_bytes("512MiB")
    ('3.0 GiB', 536870912)
    >>> need = lambda seq_len: 100 * seq_len            # bytes a request of `seq_len` adds
    >>> check_memory("--seq-len", 10, need, available=Memory(2_000, "RAM"))  # fits: the need
    1000
    >>> largest_fitting(need, 2_000, low=1, high=10**9)
    20
    >>> check_memory("--seq-len", 10**9, need, available=Memory(2_000, "RAM"))
    Traceback (most recent call last):
    ...
    moai_llm.errors.NotEnoughMemoryError: --seq-len 1000000000: needs about 93.1 GiB of memory, but 2.0 KB is available (RAM); the largest --seq-len that fits is 20
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moai_llm.errors import DiskFullError, NotEnoughMemoryError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class Memory:
    """Bytes that can still be allocated, and which limit decided it."""

    bytes: int
    source: str


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal below a MiB, binary above: what `free -h` and `df -h` show);
    never more than a few digits, however large `n` is.

    >>> human_bytes(1536), human_bytes(3 * 2**40), human_bytes(1e308), human_bytes(float("inf"))
    ('1.5 KB', '3.0 TiB', '8.7e+289 EiB', 'an unbounded amount')
    """
    if n != n or n == float("inf"):
        return "an unbounded amount"
    if isinstance(n, int) and n.bit_length() > 1000:  # beyond a float
        return f"10^{len(str(n // 2**60)) - 1} EiB"
    if n < 2**20:
        return f"{n / 1000:.1f} KB" if n >= 1000 else f"{int(n)} B"
    if n >= 2**70:
        return f"{n / 2**60:.2g} EiB"
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def parse_bytes(text: str) -> int:
    """'8GiB', '500MB', '123' -> bytes. Raises ValueError for anything else."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 8GiB, 500MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Bytes left under the tightest cgroup memory limit of this process (v2, then v1)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # cgroup v2: check the group and every parent (the tightest wins)
            group = Path("/sys/fs/cgroup") / rel.lstrip("/")
            while True:
                limit, used = _read_int(group / "memory.max"), _read_int(group / "memory.current")
                if limit is not None and used is not None:
                    rooms.append(limit - used + _reclaimable(group / "memory.stat"))
                if group == Path("/sys/fs/cgroup") or not str(group).startswith("/sys/fs/cgroup"):
                    break
                group = group.parent
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory")
            limit = _read_int(base / "memory.limit_in_bytes")
            used = _read_int(base / "memory.usage_in_bytes")
            if limit is not None and used is not None and limit < 2**60:
                rooms.append(limit - used + _reclaimable(base / "memory.stat"))
    return min(rooms) if rooms else None


def _reclaimable(stat: Path) -> int:
    """Page cache the kernel drops before it kills (inactive file pages)."""
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def available_memory() -> Memory:
    """Memory this process can still allocate: the tightest of RAM, cgroup, ulimit -v and
    MOAI_MEMORY_LIMIT (a whole-process budget)."""
    import psutil

    me = psutil.Process()
    candidates = [Memory(int(psutil.virtual_memory().available), "RAM")]
    room = _cgroup_room()
    if room is not None:
        candidates.append(Memory(max(0, room), "cgroup limit"))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            candidates.append(Memory(max(0, soft - me.memory_info().vms), "ulimit -v"))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Linux/macOS
        pass
    budget = os.environ.get("MOAI_MEMORY_LIMIT", "").strip()
    if budget:
        candidates.append(Memory(max(0, parse_bytes(budget) - me.memory_info().rss), "MOAI_MEMORY_LIMIT"))
    return min(candidates, key=lambda m: m.bytes)


def largest_fitting(need: Callable[[int], int], budget: int, low: int, high: int, step: int = 1) -> int | None:
    """The largest value in [low, high] (a multiple of `step` when above it) whose `need` fits in
    `budget`, by bisection (`need` must grow with the value); None when not even `low` fits."""
    if need(low) > budget:
        return None
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo - lo % step if lo >= step > 1 else lo


def check_memory(flag: str, value: int, need: Callable[[int], int], *, low: int = 1, high: int | None = None,
                 step: int = 1, available: Memory | None = None, what: str = "") -> int:
    """Refuse `flag value` when `need(value)` bytes exceed the memory available; return the need.

    The refusal (NotEnoughMemoryError, exit 2) names the prediction, the available memory and
    its source, and the largest value of `flag` in [low, min(value, high)] that fits (`high`: the
    largest value allowed at all). `what` is an optional
    explanation of the prediction (", for 512 rows being written").
    """
    available = available or available_memory()
    predicted = int(need(value))
    if predicted <= available.bytes:
        return predicted
    best = largest_fitting(need, available.bytes, low, min(value, high or value), step)
    fits = (f"the largest {flag} that fits is {best}" if best is not None
            else f"not even {flag} {low} fits")
    raise NotEnoughMemoryError(
        f"{flag} {value}: needs about {human_bytes(predicted)} of memory{what}, but "
        f"{human_bytes(available.bytes)} is available ({available.source}); {fits}",
        flag, value, predicted, available.bytes, best,
        hint="lower it, or free memory (MOAI_MEMORY_LIMIT=SIZE sets the budget moai plans with)",
    )


# ---------------------------------------------------------------- disk


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing parent)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def is_disk_full(exc: BaseException) -> bool:
    """True for 'no space left' / 'quota exceeded' errors, from Python, Arrow or Rust writers."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under `path` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def disk_full_error(out: str | os.PathLike, needed: int | None, written: int | None = None) -> DiskFullError:
    """The one-line error for a full disk while writing `out` (call it after removing the partial
    output, so that `free` is what the user has now)."""
    free = free_disk(out)
    parts = [f"{out}: the disk is full (the partial output was removed)"]
    if needed:
        parts.append(f"it needs about {human_bytes(needed)} and {human_bytes(free)} is free")
    else:
        parts.append(f"{human_bytes(free)} is free" + (f"; {human_bytes(written)} were written before it filled"
                                                       if written else ""))
    return DiskFullError("; ".join(parts), str(out), needed, free,
                         hint="free space on that disk, or write to another folder")


def check_disk(out: str | os.PathLike, needed: int, what: str = "the output") -> None:
    """Refuse before writing when `needed` bytes will not fit on the disk that holds `out`."""
    free = free_disk(out)
    if needed > free:
        raise DiskFullError(f"{out}: {what} needs about {human_bytes(needed)} but only {human_bytes(free)} is free",
                            str(out), needed, free, hint="free space on that disk, or write to another folder")
