"""Real faults for tests: a full disk (a small tmpfs), a folder the user cannot write to, and a
tokenizer folder whose code must never run.

The first two need privileges some machines do not give: the tests that use them skip with the
reason.

- `small_disk(path)`: `mount -t tmpfs -o size=2m` at `path` (root, or a user namespace allowing
  mounts); writes past 2 MiB fail with ENOSPC exactly as on a full disk.
- `unwritable(path)`: a folder nothing can be created in: `chmod 0555` for a normal user; for
  root, who ignores permissions, the immutable attribute (`chattr +i`, ext4/xfs/btrfs).
- `make_hostile(folder)`: gives a tokenizer folder an `auto_map` naming `evil.py`, which
  writes `MARKER` into that folder when imported: its existence means a folder's code ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with `mount -t tmpfs`, which this machine lacks")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"a full disk is simulated with a small tmpfs, and mounting one is not allowed here "
                    f"({done.stderr.strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root ignores permissions, and chattr (immutable folders) is not installed")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"root ignores permissions, and this file system has no immutable attribute "
                    f"({done.stderr.strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def make_hostile(folder: Path, keep_tokenizer_json: bool = True) -> Path:
    # An absolute path: transformers imports a copy of the module from its own cache folder.
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str((folder / 'MARKER').absolute())!r}).write_text('code ran')\n"
        "from transformers import PreTrainedTokenizerFast\nclass EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(auto_map={"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}, tokenizer_class="EvilTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if not keep_tokenizer_json:
        (folder / "tokenizer.json").unlink()
    return folder
