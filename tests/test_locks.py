"""moai_llm.locks: one live process per output folder; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from moai_llm import locks
from moai_llm.errors import FolderInUseError
from moai_llm.locks import RunLock, lock_path, read_owner

HOLD = """
import sys, time
from moai_llm.locks import RunLock
lock = RunLock(sys.argv[1], command="moai pretrain", key=sys.argv[2] or None)
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
"""


def hold_in_child(folder, seconds=30.0, key=""):
    """A real second process that takes the lock and keeps it for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), key, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder, **fields):
    me = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": locks._boot_id(),
          "pidns": locks._pid_namespace(), "start_time": None, "since": "2025-01-02T03:04:05Z",
          "command": "moai sft", "key": None, "token": "theirs"}
    lock_path(folder).write_text(json.dumps({**me, **fields}))


def test_second_launch_is_refused_with_the_owner_named(tmp_path):
    out = tmp_path / "run"
    child = hold_in_child(out)
    try:
        with pytest.raises(FolderInUseError) as err:
            RunLock(out, command="moai pretrain").acquire()
        message = str(err.value)
        assert f"pid {child.pid} on {socket.gethostname()}" in message and "since 20" in message
        assert "moai pretrain" in message and str(out) in message
        assert err.value.owner["pid"] == child.pid
    finally:
        child.kill()
        child.wait()
    # killed with SIGKILL: no release ran, the file stays, and the next launch takes it over
    assert read_owner(out)["pid"] == child.pid
    lock = RunLock(out, command="moai pretrain")
    lock.acquire()
    assert lock.took_over["pid"] == child.pid and read_owner(out)["pid"] == os.getpid()
    lock.release()
    assert not lock_path(out).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, capsys):
    out = tmp_path / "prepared"
    write_lock(out, pid=dead_pid())
    with RunLock(out, command="moai data prepare") as lock:
        assert lock.took_over["command"] == "moai sft"
    assert "taking over the lock of moai sft" in capsys.readouterr().err


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    out = tmp_path / "run"
    write_lock(out, pid=os.getppid(), start_time=12345.0)  # alive, but started at another time
    with RunLock(out) as lock:
        assert lock.took_over is not None


def test_live_lock_of_this_machine_is_respected_whatever_its_age(tmp_path):
    out = tmp_path / "run"
    write_lock(out, pid=os.getppid(), start_time=locks._start_time(os.getppid()))
    old = time.time() - 10 * locks.STALE_AFTER_S
    os.utime(lock_path(out), (old, old))
    with pytest.raises(FolderInUseError):
        RunLock(out).acquire()


def test_another_machine_is_trusted_until_its_heartbeat_is_stale(tmp_path):
    out = tmp_path / "run"
    write_lock(out, host="gpu-node-7", boot_id="elsewhere", pid=4242)
    with pytest.raises(FolderInUseError, match="pid 4242 on gpu-node-7") as err:
        RunLock(out).acquire()
    assert "15 minutes after its last heartbeat" in err.value.hint
    old = time.time() - locks.STALE_AFTER_S - 5
    os.utime(lock_path(out), (old, old))
    with RunLock(out) as lock:
        assert lock.took_over["host"] == "gpu-node-7"


def test_the_owner_keeps_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    out = tmp_path / "run"
    with RunLock(out):
        old = time.time() - 3600
        os.utime(lock_path(out), (old, old))
        time.sleep(0.3)
        assert time.time() - lock_path(out).stat().st_mtime < 5


def test_an_empty_old_lock_file_is_taken_silently(tmp_path, capsys):
    out = tmp_path / "prepared"
    lock_path(out).write_bytes(b"")  # what filelock leaves behind
    old = time.time() - 60
    os.utime(lock_path(out), (old, old))
    with RunLock(out):
        pass
    assert "taking over" not in capsys.readouterr().err


def test_release_never_removes_someone_elses_lock(tmp_path):
    out = tmp_path / "run"
    lock = RunLock(out)
    lock.acquire()
    write_lock(out, token="someone else")  # e.g. it was taken over while this process hung
    lock.release()
    assert read_owner(out)["token"] == "someone else"


def test_same_key_waits_and_another_key_is_refused(tmp_path):
    out = tmp_path / "prepared"
    child = hold_in_child(out, seconds=1.0, key="settings-A")
    try:
        with pytest.raises(FolderInUseError, match="in use by moai pretrain"):
            RunLock(out, key="settings-B", wait_same_key=True).acquire()
        started = time.time()
        with RunLock(out, key="settings-A", wait_same_key=True, poll_s=0.02):
            assert time.time() - started > 0.3  # it waited for the child to finish
    finally:
        child.kill()
        child.wait()


RACE = """
import sys, time, os
from moai_llm.locks import RunLock
folder, log = sys.argv[1], sys.argv[2]
with RunLock(folder, key="same", wait_same_key=True, poll_s=0.01):
    with open(log, "a") as f:
        f.write(f"in {os.getpid()}\\n"); f.flush()
        time.sleep(0.2)
        f.write(f"out {os.getpid()}\\n")
"""


def test_processes_racing_for_a_stale_lock_hold_it_one_at_a_time(tmp_path):
    out, log = tmp_path / "prepared", tmp_path / "log"
    write_lock(out, pid=dead_pid())
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(out), str(log)], stderr=subprocess.DEVNULL)
             for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(events) == 8
    for enter, leave in zip(events[::2], events[1::2], strict=True):  # in A, out A, in B, out B, ...
        assert enter[0] == "in" and leave[0] == "out" and enter[1] == leave[1]
    assert not lock_path(out).exists()


def test_parents_made_for_the_lock_go_when_they_stay_empty(tmp_path):
    with RunLock(tmp_path / "new" / "deeper" / "run"):
        assert (tmp_path / "new" / "deeper").is_dir()
    assert list(tmp_path.iterdir()) == []
    with RunLock(tmp_path / "kept" / "run"):
        (tmp_path / "kept" / "run").mkdir()  # the run wrote its folder: the parent stays
    assert (tmp_path / "kept" / "run").is_dir()


def zombie_pid():
    """A child killed and not reaped: state Z until its parent waits for it."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while not locks.is_zombie(proc.pid) and time.time() < deadline:
        time.sleep(0.02)
    return proc


def test_a_killed_owner_not_yet_reaped_is_dead(tmp_path, capsys):
    """Where PID 1 does not reap, a SIGKILLed run stays a zombie; its lock must not block
    `--resume auto` with "wait for it to finish"."""
    proc = zombie_pid()
    try:
        assert locks.is_zombie(proc.pid)
        write_lock(tmp_path / "run", pid=proc.pid, start_time=None)
        with RunLock(tmp_path / "run", command="moai pretrain --resume auto") as lock:
            assert lock.took_over["pid"] == proc.pid
    finally:
        proc.wait()
    assert not locks.is_zombie(os.getpid())


def test_a_symlink_and_its_target_meet_one_lock(tmp_path):
    """`ln -s c5 a5`: a run into c5 and one into a5 are one folder, so one lock."""
    (tmp_path / "c5").mkdir()
    (tmp_path / "a5").symlink_to("c5")
    assert lock_path(tmp_path / "a5") == lock_path(tmp_path / "c5")
    child = hold_in_child(tmp_path / "c5")
    try:
        with pytest.raises(FolderInUseError, match=f"pid {child.pid}"):
            RunLock(tmp_path / "a5", command="moai pretrain").acquire()
    finally:
        child.kill()
        child.wait()


READ = """
import sys, time
from moai_llm.locks import ReadLock
lock = ReadLock(sys.argv[1], command="moai pretrain")
lock.acquire()
print("reading", flush=True)
time.sleep(30)
"""


def test_a_build_is_refused_while_a_run_reads_the_folder(tmp_path):
    data = tmp_path / "DS3"
    data.mkdir()
    reader = subprocess.Popen([sys.executable, "-c", READ, str(data)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        assert [r["pid"] for r in locks.live_readers(data)] == [reader.pid]
        with RunLock(data, command="moai data prepare"), \
                pytest.raises(FolderInUseError, match=f"in use by moai pretrain \\(pid {reader.pid}.*which reads it"):
            locks.check_no_readers(data)
    finally:
        reader.kill()
        reader.wait()
    # a reader killed (and reaped) no longer counts, and its file is cleared away
    assert locks.live_readers(data) == []
    with RunLock(data, command="moai data prepare"):
        locks.check_no_readers(data)


def test_a_reader_waits_for_a_build_under_way(tmp_path):
    data = tmp_path / "DS3"
    builder = hold_in_child(data, seconds=1.5)
    try:
        started = time.time()
        with locks.ReadLock(data, command="moai pretrain", poll_s=0.05):
            assert builder.poll() is not None or read_owner(data) is None
            assert time.time() - started > 0.5
        assert not locks.readers_path(data).exists()  # the last reader removes the folder
    finally:
        builder.kill()
        builder.wait()


def test_a_killed_readers_file_is_cleared_by_the_next_reader(tmp_path):
    data = tmp_path / "DS3"
    data.mkdir()
    reader = subprocess.Popen([sys.executable, "-c", READ, str(data)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "reading"
    reader.kill()
    reader.wait()
    assert len(list(locks.readers_path(data).iterdir())) == 1  # SIGKILL ran no cleanup
    with locks.ReadLock(data, command="moai pretrain"):
        assert len(list(locks.readers_path(data).iterdir())) == 1  # this one's own
    assert not locks.readers_path(data).exists()
