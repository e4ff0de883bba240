"""prepare_dataset in datatrove tasks (data/parallel.py, pipeline.py, executors.py, shares.py).

Any number of tasks gives the same documents with the same tokens as one task; the same
number of tasks gives byte-identical rows; a killed prepare resumes its unfinished tasks
only; Slurm runs the same tasks through a stand-in sbatch (tests/data/slurm_stand_in.py);
Ray on a local cluster when the `ray` extra is installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moai_llm.data import load_prepared, prepare_dataset
from moai_llm.data.executors import Executor
from moai_llm.errors import MoaiInputError

from .conftest import EN, KO

STAND_IN = Path(__file__).with_name("slurm_stand_in.py")


def documents_of(folder: Path) -> list[tuple[bytes, bytes]]:
    """Every document (or row-sized piece) of a prepared dataset as (ids, labels) bytes, sorted."""
    out = []
    for row in load_prepared(folder).with_format("numpy"):
        pos, ids, labels = row["position_ids"], row["input_ids"], row["labels"]
        starts = np.flatnonzero(pos == 0).tolist() + [len(pos)]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            if (labels[a:b] != -100).any():  # the padding tail is a segment without loss
                out.append((ids[a:b].astype(np.int32).tobytes(), labels[a:b].astype(np.int32).tobytes()))
    return sorted(out)


def rows_bytes(folder: Path) -> list[bytes]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [(folder / name).read_bytes() for name in manifest["shards"]]


@pytest.fixture
def corpus(tmp_path, write_jsonl) -> list[str]:
    texts = [" ".join([KO[i % 5], EN[(i * 3) % 5], str(i)] * (1 + i % 6)) for i in range(2400)]
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    b = tmp_path / "b.txt"
    b.write_text("\n".join(texts[:400]) + "\n")
    return [str(a), str(b)]


def test_any_task_count_gives_the_same_documents_and_one_count_the_same_rows(tmp_path, tokenizer_dir, corpus):
    kw = dict(weights=[1, 0.5])
    one = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "one", **kw)
    two = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "two", executor=Executor(workers=2), **kw)
    three = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "three", tasks=3, **kw)
    prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "again", executor=Executor(workers=2), **kw)
    assert (one["tasks"], two["tasks"], three["tasks"]) == (1, 2, 3)
    docs = documents_of(tmp_path / "one")
    assert len(docs) >= one["num_documents"] > 2000
    for m, name in ((two, "two"), (three, "three")):
        assert documents_of(tmp_path / name) == docs
        assert [s["documents"] for s in m["sources"]] == [s["documents"] for s in one["sources"]]
        assert m["num_tokens"] == one["num_tokens"]
        # the tasks' tails are packed together: no row lost to the task count (>= 99.5% on the
        # benchmark corpora, benchmarks/bench_prepare_workers.py; this tiny one splits many documents)
        assert m["packing_efficiency"] >= one["packing_efficiency"] - 0.001
    assert 150 < one["sources"][1]["documents"] < 250  # weight 0.5 keeps about half of 400 lines
    assert rows_bytes(tmp_path / "two") == rows_bytes(tmp_path / "again")
    assert rows_bytes(tmp_path / "two") != rows_bytes(tmp_path / "one")  # rows depend on the task count
    assert not list(tmp_path.glob(".*.tasks-*"))  # work folders are removed once merged


def test_tasks_read_the_documents_of_the_one_process_build(tmp_path, tokenizer_dir, corpus):
    """The build before tasks (still preference data's, prepare._build_into) as the reference."""
    from moai_llm.data import prepare as p
    from moai_llm.data.footprint import measure_input
    from moai_llm.data.sources import resolve_sources

    srcs = resolve_sources(corpus, weights=[2, 0.5])
    settings = {"format": p.FORMAT, "seq_len": 64, "mode": "pretrain", "packing": "bfd", "num_bins": None,
                "text_column": None, "mapping": None, "skip_bad_rows": False}
    p._build_into(tmp_path / "before", srcs, tokenizer_dir, settings, p.tokenizer_hash(tokenizer_dir),
                  measure_input(srcs), None, None, False)
    prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "tasks", weights=[2, 0.5], tasks=5)
    assert documents_of(tmp_path / "tasks") == documents_of(tmp_path / "before")


def test_cache_hits_any_task_count_unless_one_is_asked_for(tmp_path, tokenizer_dir, corpus):
    out = tmp_path / "out"
    assert not prepare_dataset(corpus, tokenizer_dir, 64, out, tasks=2)["cache_hit"]
    assert prepare_dataset(corpus, tokenizer_dir, 64, out)["cache_hit"]
    assert prepare_dataset(corpus, tokenizer_dir, 64, out, executor=Executor(workers=2), tasks=2)["cache_hit"]
    rebuilt = prepare_dataset(corpus, tokenizer_dir, 64, out, tasks=3)
    assert not rebuilt["cache_hit"] and rebuilt["tasks"] == 3
    assert prepare_dataset(corpus, tokenizer_dir, 64, out, tasks=3)["cache_hit"]


def test_sft_conversations_keep_their_tokens_and_loss_across_tasks(tmp_path, tokenizer_dir, write_jsonl):
    records = [{"question": f"{EN[i % 5]} {i}?", "answer": " ".join([KO[i % 5]] * (1 + i % 9))} for i in range(300)]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    one = prepare_dataset([str(path)], tokenizer_dir, 128, tmp_path / "one", mode="sft")
    four = prepare_dataset([str(path)], tokenizer_dir, 128, tmp_path / "four", mode="sft", tasks=4)
    assert one["num_documents"] == four["num_documents"] == 300
    assert documents_of(tmp_path / "one") == documents_of(tmp_path / "four")


def test_a_bad_row_read_by_a_later_task_names_its_line_and_leaves_nothing(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": f"{EN[i % 5]} {i}"} for i in range(900)])
    lines = path.read_text().splitlines(keepends=True)
    lines[799] = '{"text": broken\n'
    path.write_text("".join(lines))
    with pytest.raises(MoaiInputError, match=r"a\.jsonl:800: malformed JSON") as info:
        prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "out", tasks=3, executor=Executor(workers=2))
    assert "--skip-bad-rows" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["a.jsonl"]
    m = prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "out", tasks=3, skip_bad_rows=True)
    assert m["skipped_rows"] == 1 and m["first_skipped_row"].split("/")[-1].startswith("a.jsonl:800")


def test_a_script_without_a_main_guard_starts_its_workers_once(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": f"{EN[i % 5]} {i}"} for i in range(300)])
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from moai_llm.data import prepare_dataset\n"
        "from moai_llm.data.executors import Executor\n"
        "print('script body', flush=True)\n"
        f"m = prepare_dataset([{str(path)!r}], {str(tokenizer_dir)!r}, 64, {str(tmp_path / 'out')!r}, tasks=2, "
        "executor=Executor(workers=2))\n"
        "print('tasks', m['tasks'], flush=True)\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:2] == ["script body", "tasks 2"]  # the workers did not run it again


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "moai_cli", "data", "prepare", *args]


@pytest.mark.slow
def test_a_killed_prepare_resumes_only_its_unfinished_tasks(tmp_path, tokenizer_dir, write_jsonl):
    texts = [" ".join([KO[i % 5], EN[i % 5], str(i)] * (2 + i % 5)) for i in range(24000)]
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": t} for t in texts])
    args = ["-i", str(path), "--tokenizer", str(tokenizer_dir), "--seq-len", "64", "--tasks", "6", "-o"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(*args, str(tmp_path / "out")), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, done = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None and not done:
        done = sorted(tmp_path.glob(".out.tasks-*/logs/completions/*"))
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(done) < 6, "the kill must land between the first and the last task"
    assert not (tmp_path / "out").exists()  # complete or absent
    work = next(tmp_path.glob(".out.tasks-*"))
    finished = sorted(p.name for p in (work / "logs" / "completions").iterdir())
    kept = {os.stat(f).st_ino for name in finished for f in (work / "tasks" / name).glob("data-*.arrow")}
    assert kept
    subprocess.run(_cli(*args, str(tmp_path / "out")), env=env, check=True, capture_output=True)
    merged = json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]
    inodes = {os.stat(tmp_path / "out" / name).st_ino for name in merged}
    assert kept <= inodes  # the finished tasks' shards were linked in, not written again
    assert len(inodes - kept) >= 6 - len(finished)  # the others were run this time
    subprocess.run(_cli(*args, str(tmp_path / "whole")), env=env, check=True, capture_output=True)
    assert rows_bytes(tmp_path / "out") == rows_bytes(tmp_path / "whole")


@pytest.fixture
def slurm_stand_in(tmp_path, monkeypatch) -> Path:
    """sbatch, srun, scontrol, squeue and scancel first on PATH, all the stand-in script."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun", "scontrol", "squeue", "scancel"):
        (bin_dir / name).symlink_to(STAND_IN)
    state = tmp_path / "slurm-state"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MOAI_SLURM_STAND_IN", str(state))
    return state


def test_slurm_runs_the_tasks_as_one_job_array(tmp_path, tokenizer_dir, corpus, slurm_stand_in):
    executor = Executor(kind="slurm", partition="cpu", time="00:10:00", mem_per_cpu_gb=3, sbatch_args={"constraint": "x86"})
    m = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "slurm", tasks=3, executor=executor)
    local = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "local", tasks=3)
    assert m["tasks"] == 3 and rows_bytes(tmp_path / "slurm") == rows_bytes(tmp_path / "local")
    scripts = [p.read_text() for p in slurm_stand_in.glob("job-*.sh")]
    assert len(scripts) == 1  # one array, no separate stats job
    for line in ("--array=0-2", "--partition=cpu", "--time=00:10:00", "--cpus-per-task=1", "--mem-per-cpu=3G",
                 "--constraint=x86"):
        assert f"#SBATCH {line}\n" in scripts[0]
    assert m["num_tokens"] == local["num_tokens"]


def test_ray_runs_the_tasks_on_a_local_cluster(tmp_path, tokenizer_dir, corpus):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install ray)")
    try:
        m = prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "ray", tasks=2,
                            executor=Executor(kind="ray", mem_per_cpu_gb=1))
    finally:
        ray.shutdown()
    prepare_dataset(corpus, tokenizer_dir, 64, tmp_path / "local", tasks=2)
    assert m["tasks"] == 2 and rows_bytes(tmp_path / "ray") == rows_bytes(tmp_path / "local")


def _fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file (writes until ENOSPC)."""
    import errno

    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_disk_that_fills_during_the_build_leaves_nothing_and_says_so(tmp_path, tokenizer_dir, write_jsonl):
    """The disk fills after the first task finished (another program takes the space): exit 2, one
    line naming the output and the room it needs, no traceback, nothing of this build left on the
    disk; with room again the same command builds what a build that never met a full disk builds."""
    from faults import small_disk

    texts = [" ".join([KO[i % 5], EN[i % 5], str(i)] * (2 + i % 5)) for i in range(24000)]
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": t} for t in texts])
    args = ["-i", str(path), "--tokenizer", str(tokenizer_dir), "--seq-len", "64", "--tasks", "6", "-o"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with small_disk(tmp_path / "disk", "96m") as disk:
        proc = subprocess.Popen(_cli(*args, str(disk / "out")), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline, done = time.time() + 120, []
        while time.time() < deadline and proc.poll() is None and not done:
            done = sorted(disk.glob(".out.tasks-*/logs/completions/*"))
            time.sleep(0.02)
        assert done and proc.poll() is None, "the disk must fill between the first and the last task"
        filler = _fill(disk)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-2000:]
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(errors) == 1, err[-2000:]
        assert f"{disk / 'out'}: the disk is full" in errors[0] and "needs about" in errors[0], err
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # complete or absent, no work folder
        filler.unlink()
        subprocess.run(_cli(*args, str(disk / "out")), env=env, check=True, capture_output=True)
        subprocess.run(_cli(*args, str(tmp_path / "whole")), env=env, check=True, capture_output=True)
        assert rows_bytes(disk / "out") == rows_bytes(tmp_path / "whole")
