"""Several nodes of one run share one folder (launcher/nodes.py): two node ranks on this machine
(`--nnodes 2 --node-rank R --master-addr 127.0.0.1`, one process each, gloo) train into one folder
to the loss of one process with the same global batch; a second, different launch into it is
refused (exit 2); a node in its own UTS and PID namespaces (another host name, other PIDs: another
machine on a shared filesystem, as far as the lock can tell) joins the run; a node SIGKILLed
mid-run stops the other within seconds (gloo sees the lost peer; no node waits
for it); all nodes relaunched with `--resume auto` finish bit-identical to an
uninterrupted run; and a 2-node run resumed on 1 node (and 1 on 2) keeps the data order and the
loss within 1e-4."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fault_runs import leftovers, losses, moai, start, weight_difference

from moai_llm.training.launcher.launch import free_port

STEPS = 4


def _args(workdir, out, *extra):
    return ["pretrain", "--model", "tiny", "--tokenizer", workdir / "tok", "--dataset", workdir / "data",
            "--output-dir", out, "--max-steps", str(STEPS), "--batch-size", "2", "--global-batch", "8",
            "--logging-steps", "1", "--save-steps", "2", "--lr-scheduler", "constant",
            "--warmup-steps", "0", "--learning-rate", "1e-3", *extra]


def _node(rank: int, port: int) -> list[str]:
    return ["--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
            "--master-port", str(port), "--nproc", "1"]


def _finish(proc, log: Path, timeout: float = 300) -> tuple[int, str]:
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return proc.exitcode, log.read_text(errors="replace")


def _two_nodes(workdir, out, *extra, env1=None):
    """Both node ranks of one launch; returns [(code, output)] of node 0 and node 1."""
    port = free_port()
    first = start(_args(workdir, out, *_node(0, port), *extra))
    second = start(_args(workdir, out, *_node(1, port), *extra), env=env1)
    return [_finish(*first), _finish(*second)]


def _close(a, b, tolerance=1e-4):
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, STEPS + 1))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= tolerance, (a, b)


@pytest.fixture(scope="module")
def one(workdir, tmp_path_factory):
    """The uninterrupted one-process run with the same global batch."""
    out = tmp_path_factory.mktemp("nodes") / "one"
    run = moai(_args(workdir, out))
    assert run.code == 0, run.output
    return out


def _wait_for(condition, proc, log, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert proc.is_alive() and time.time() < deadline, log.read_text(errors="replace")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_node_ranks_train_into_one_folder_and_another_launch_is_refused(workdir, tmp_path, one):
    out, port = tmp_path / "two", free_port()
    node0, log0 = start(_args(workdir, out, *_node(0, port)))
    _wait_for(lambda: (out / "run.yaml").is_file(), node0, log0)
    # another launch (another rendezvous; or the same one with other settings) is refused at once
    other = moai(_args(workdir, out, *_node(0, free_port())))
    assert other.code == 2 and "is in use by moai pretrain (pid" in other.output, other.output
    assert "lock file" in other.output and "hint:" in other.output
    changed = moai(_args(workdir, out, *_node(1, port), "--learning-rate", "2e-3"))
    assert changed.code == 2 and "is in use by moai pretrain" in changed.output, changed.output
    node1, log1 = start(_args(workdir, out, *_node(1, port)))
    (code0, text0), (code1, text1) = _finish(node0, log0), _finish(node1, log1)
    assert (code0, code1) == (0, 0), text0 + text1
    _close(losses(one), losses(out))
    # one writer: one metrics line per step, one rng file per rank, nothing left behind
    assert [s for s, _ in losses(out)] == list(range(1, STEPS + 1))
    ckpt = out / "checkpoints" / f"step-{STEPS}"
    assert sorted(p.name for p in ckpt.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
    assert json.loads((out / "final_model" / "training_state.json").read_text())["step"] == STEPS
    assert leftovers(out) == []


def test_a_node_joins_only_a_live_published_lock_of_its_own_run(tmp_path, monkeypatch):
    from moai_llm.errors import FolderInUseError, MoaiRunError
    from moai_llm.locks import RunLock, read_owner
    from moai_llm.training.launcher import nodes
    from moai_llm.training.settings import TrainSettings

    out = tmp_path / "run"
    s0 = TrainSettings(output_dir=str(out), nnodes=2, master_addr="127.0.0.1", master_port=1234)
    key1 = nodes.run_key(dataclasses.replace(s0, node_rank=1))
    other = nodes.run_key(dataclasses.replace(s0, node_rank=1, learning_rate=1e-3))
    assert key1 == nodes.run_key(s0) != other

    def join(key, timeout_s=5.0):
        member = nodes.Member(out, "moai pretrain", key, poll_s=0.05, timeout_s=timeout_s)
        member.acquire()
        return member

    # node 0 of an earlier launch, killed: its lock is never joined
    dead = subprocess.run([sys.executable, "-c", "import os, sys; from moai_llm.locks import RunLock; "
                           f"RunLock(sys.argv[1], command='moai pretrain', key={key1!r}).acquire(); os._exit(0)",
                           str(out)], check=True)
    assert dead.returncode == 0 and read_owner(out)["key"] == key1
    with pytest.raises(MoaiRunError, match="node 0 of this run did not start"):
        join(key1, timeout_s=0.5)
    with RunLock(out, command="moai pretrain", key=nodes.run_key(s0)) as lock:  # taken over
        def write_later():
            time.sleep(0.6)
            out.mkdir()
            (out / "run.yaml").write_text("mode: pretrain\n")
            nodes.publish(lock, out)

        writer = threading.Thread(target=write_later)
        writer.start()
        # node 0 lives but has not written run.yaml yet: waited for, past the join timeout
        assert join(key1, timeout_s=0.2).owner["token"] == lock.token
        writer.join()
        with pytest.raises(FolderInUseError, match=r"is in use by moai pretrain \(pid \d+ on .*; lock file"):
            join(other)  # the same rendezvous, other settings: another launch
        for key in (None, nodes.run_key(s0)):  # a one-node launch; node 0 of the same launch twice
            with pytest.raises(FolderInUseError):
                RunLock(out, command="moai pretrain", key=key).acquire()
    assert read_owner(out) is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert nodes.run_id(s0) == "slurm-4242" and nodes.run_key(s0) != key1


def _moai_bin() -> str:
    return str(Path(sys.executable).parent / "moai")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_a_node_on_another_host_joins_the_run(workdir, tmp_path, one):
    """Node 1 in its own UTS and PID namespaces: another host name, its own PIDs; the folder and
    the network are shared, as on a cluster with a shared filesystem."""
    probe = subprocess.run(["unshare", "--uts", "--pid", "--fork", "--mount-proc", "hostname"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare does not work here: {probe.stderr.decode()[:200]}")
    out, port = tmp_path / "hosts", free_port()
    node0, log0 = start(_args(workdir, out, *_node(0, port)))
    node1_cmd = " ".join(["hostname moai-node-b &&", _moai_bin(),
                          *map(str, _args(workdir, out, *_node(1, port)))])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    node1 = subprocess.run(["unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c", node1_cmd],
                           capture_output=True, text=True, env=env, timeout=600)
    code0, text0 = _finish(node0, log0)
    assert (code0, node1.returncode) == (0, 0), text0 + node1.stdout + node1.stderr
    _close(losses(one), losses(out))
    assert leftovers(out) == []


def _saved(out):
    """True once the step-2 checkpoint is complete: the moment node 1 (its launcher, torchrun and
    worker, which die with it) is SIGKILLed from outside."""
    return lambda: (out / "checkpoints" / "step-2" / "trainer_state.json").is_file()


@pytest.mark.slow
def test_a_killed_node_stops_the_run_and_all_nodes_resume(workdir, tmp_path, one):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert [c for c, _ in _two_nodes(workdir, whole)] == [0, 0]

    # node 0 (the lock's holder) SIGKILLed after the step-2 checkpoint: node 1 stops too, soon
    port = free_port()
    node1, log1 = start(_args(workdir, cut, *_node(1, port)))
    killed = moai(_args(workdir, cut, *_node(0, port)), kill_when=_saved(cut))
    assert killed.killed, killed.output
    t0 = time.time()
    code1, text1 = _finish(node1, log1, timeout=180)
    assert code1 == 1 and time.time() - t0 < 60, text1
    assert "relaunch every node with the same command and --resume auto" in text1
    assert (cut / "checkpoints" / "step-2").is_dir()

    # every node relaunched with --resume auto: bit-identical to the uninterrupted 2-node run
    done = _two_nodes(workdir, cut, "--resume", "auto")
    assert [c for c, _ in done] == [0, 0], done
    assert "resuming from" in done[0][1] and "taking over the lock" in done[0][1], done[0][1]
    same, worst = weight_difference(whole / "final_model" / "model.safetensors",
                                    cut / "final_model" / "model.safetensors")
    assert same, worst
    assert losses(cut)[-1] == losses(whole)[-1]
    assert leftovers(cut) == []
    again = _two_nodes(workdir, cut, "--resume", "auto")  # complete: nothing to do, on every node
    assert [c for c, _ in again] == [0, 0] and all("complete" in text for _, text in again), again
    assert leftovers(cut) == []


@pytest.mark.slow
def test_two_nodes_resumed_on_one_and_one_resumed_on_two(workdir, tmp_path, one):
    two, back = tmp_path / "two", tmp_path / "back"
    port = free_port()
    node0, log0 = start(_args(workdir, two, *_node(0, port)))
    assert moai(_args(workdir, two, *_node(1, port)), kill_when=_saved(two)).killed
    _finish(node0, log0, timeout=180)
    resumed = moai(_args(workdir, two, "--resume", "auto"))  # one node, one process
    assert resumed.code == 0 and "resuming from" in resumed.output, resumed.output
    _close(losses(one), losses(two))

    assert moai(_args(workdir, back), kill_at="checkpoint.after_rename#1").killed
    done = _two_nodes(workdir, back, "--resume", "auto")
    assert [c for c, _ in done] == [0, 0], done
    _close(losses(one), losses(back))
    assert leftovers(back) == []
