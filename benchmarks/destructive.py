"""The destructive cases of bench_faults.py (`--part destructive`): what a user's folders look
like when moai is pointed at them by mistake, and whether anything of theirs survives.

Each case builds a folder of files the user cares about (a web app with a manifest.json, a model
folder, a finished run, a prepared dataset with notes in it, ...), runs one real `moai` command
at it in a forked process (tests/training/fault_runs.py, a 120 s limit), and counts:

- refused: exit 2 with one `error:` line (or, where moai may go on, the exit the case expects:
  `--resume auto` past a damaged checkpoint, a zombie's lock);
- tracebacks: "Traceback" anywhere in the output;
- hangs: still running at the limit (killed);
- files lost: every file that was there before, compared byte for byte afterwards (a missing or
  changed file is one lost), plus anything written outside the case's folder.

Findings 1-6, 10 and 11 of issue 22 are here, each as the user met it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fault_runs import moai, start, wait_stopped

LIMIT_S = 120
DOCS = "".join(json.dumps({"text": f"hello world {i} the quick brown fox"}) + "\n" for i in range(60))


@dataclass
class Case:
    name: str
    finding: str
    args: Callable[[Path, Inputs], list]  # (case folder, inputs) -> moai arguments
    setup: Callable[[Path, Inputs], None]
    expect: int = 2
    may_change: tuple[str, ...] = ()  # paths (prefixes) moai may rewrite: its own, in fallback cases
    env: Callable[[Path], dict] = field(default=lambda w: {})
    during: Callable[[Path, Inputs], object] | None = None  # a live run the case runs beside


@dataclass
class Inputs:
    tok: Path
    data: Path
    run: Path  # a finished moai run: checkpoints/step-2, step-4 and final_model/


def snapshot(root: Path) -> dict[str, bytes | None]:
    skip = (".lock", ".readers", ".takeover")
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))
            if not any(part.endswith(skip) for part in p.relative_to(root).parts)}


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)


def pretrain(w: Path, i: Inputs, out, *extra, data=None, steps=4) -> list:
    return ["pretrain", "--model", "tiny", "--tokenizer", i.tok, "--dataset", data or i.data, "--output-dir", out,
            "--max-steps", str(steps), "--batch-size", "2", "--gradient-accumulation-steps", "1",
            "--logging-steps", "1", "--save-steps", "2", *extra]


def prepare(i: Inputs, src, out, *extra) -> list:
    return ["data", "prepare", "-i", src, "--tokenizer", i.tok, "--seq-len", "64", "-o", out, *extra]


def app_folder(w: Path, i: Inputs) -> None:
    write(w, {"d.jsonl": DOCS, "app/manifest.json": '{"name": "my-app", "version": "1.0.0"}',
              "app/src/main.js": "console.log('mine')\n", "app/NOTES.txt": "my notes\n"})


def copy_run(w: Path, i: Inputs, without: str | None = None) -> None:
    shutil.copytree(i.run, w / "RUN", symlinks=True)
    if without:
        shutil.rmtree(w / "RUN" / without)
    write(w, {"c.txt": "hello world\n" * 50})


def users_run_folder(w: Path, i: Inputs) -> None:
    write(w, {"mine/run.yaml": "experiment: mine\n", "mine/metrics.jsonl": '{"mine": 1}\n',
              "mine/final_model/model.safetensors": b"my weights", "mine/tb/events.out.tfevents.1": b"\x00tb"})


def dataset_copy(w: Path, i: Inputs) -> None:
    shutil.copytree(i.data, w / "DS3")
    write(w, {"d.jsonl": DOCS})


def dataset_with_notes(w: Path, i: Inputs) -> None:
    shutil.copytree(i.data, w / "DS3")
    write(w, {"DS3/NOTES.txt": "what I found in this data\n", "d.jsonl": DOCS})


def manifest(change: dict, extra: dict | None = None) -> Callable[[Path, Inputs], None]:
    def setup(w: Path, i: Inputs) -> None:
        shutil.copytree(i.data, w / "DS")
        found = json.loads((w / "DS" / "manifest.json").read_text())
        (w / "DS" / "manifest.json").write_text(json.dumps({**found, **change}))
        write(w, extra or {})
    return setup


def quickstart_project(w: Path, i: Inputs) -> None:
    shutil.copytree(i.run, w / "proj" / "pretrain")  # an earlier run of the user's
    write(w, {"proj/tokenizer/NOTES.md": "my tokenizer notes\n", "proj/corpus.jsonl": '{"text": "my corpus"}\n'})


def damaged(how: str) -> Callable[[Path, Inputs], None]:
    def setup(w: Path, i: Inputs) -> None:
        copy_run(w, i)
        shutil.rmtree(w / "RUN" / "final_model")  # killed before its final save
        newest = w / "RUN" / "checkpoints" / "step-4"
        if how == "truncated":
            weights = newest / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif how == "empty optimizer":
            (newest / "optimizer.pt").write_bytes(b"")
        else:
            state = json.loads((newest / "trainer_state.json").read_text())
            (newest / "trainer_state.json").write_text(json.dumps({**state, "step": "six"}))
    return setup


def zombie_lock(w: Path, i: Inputs) -> None:
    """A run killed with SIGKILL and not reaped (a container whose PID 1 does not reap) still
    named in the run folder's lock."""
    import socket

    from moai_llm import locks

    copy_run(w, i)
    shutil.rmtree(w / "RUN" / "final_model")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    os.kill(proc.pid, signal.SIGKILL)
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z":
        time.sleep(0.01)
    record = {"pid": proc.pid, "host": socket.gethostname(), "boot_id": locks._boot_id(),
              "pidns": locks._pid_namespace(), "start_time": None, "since": "2026-01-01T00:00:00Z",
              "command": "moai pretrain", "key": None, "token": "zombie"}
    (w / ".RUN.lock").write_text(json.dumps(record))
    ZOMBIES.append(proc)


ZOMBIES: list = []


def stopped_run(out_name: str, data: Callable[[Path, Inputs], Path] | None = None):
    """A live run into w/out_name, stopped (SIGSTOP) after its first checkpoint."""
    def during(w: Path, i: Inputs):
        proc, _ = start([str(a) for a in pretrain(w, i, w / out_name, data=data(w, i) if data else None, steps=6)],
                        env={"MOAI_FAULT_STOP_AT": "checkpoint.after_rename#1"})
        wait_stopped(proc)
        return proc
    return during


CASES = [
    Case("prepare into a web app holding manifest.json", "1", lambda w, i: prepare(i, w / "d.jsonl", w / "app"), app_folder),
    Case("... the same with --force", "1", lambda w, i: prepare(i, w / "d.jsonl", w / "app", "--force"), app_folder),
    Case("tokenizer train -o RUN/final_model", "2", lambda w, i: ["tokenizer", "train", "-i", w / "c.txt",
         "--vocab-size", "600", "-o", w / "RUN" / "final_model"], copy_run),
    Case("tokenizer extend -o RUN/checkpoints/step-4", "2", lambda w, i: ["tokenizer", "extend", "--base-tokenizer",
         i.tok, "-i", w / "c.txt", "--vocab-size", "700", "-o", w / "RUN" / "checkpoints" / "step-4"], copy_run),
    Case("tokenizer train -o a prepared dataset", "2", lambda w, i: ["tokenizer", "train", "-i", w / "d.jsonl",
         "--vocab-size", "600", "-o", w / "DS3"], dataset_with_notes),
    Case("quickstart -o a user's project", "3", lambda w, i: ["quickstart", "--tiny", "-o", w / "proj"],
         quickstart_project),
    Case("fresh pretrain into a finished run without checkpoints/", "4", lambda w, i: pretrain(w, i, w / "RUN"),
         lambda w, i: copy_run(w, i, without="checkpoints")),
    Case("fresh pretrain into a finished run with checkpoints/", "4", lambda w, i: pretrain(w, i, w / "RUN"), copy_run),
    Case("fresh pretrain into a user's folder (run.yaml, metrics, final_model/, tb/)", "4",
         lambda w, i: pretrain(w, i, w / "mine"), users_run_folder),
    Case("pretrain --resume auto into a user's folder", "4",
         lambda w, i: pretrain(w, i, w / "mine", "--resume", "auto"), users_run_folder),
    Case("pretrain -o .", "4", lambda w, i: pretrain(w, i, "."), users_run_folder),
    Case("pretrain -o ~ (HOME a user's folder)", "4", lambda w, i: pretrain(w, i, "~"), users_run_folder,
         env=lambda w: {"HOME": str(w / "mine")}),
    Case("pretrain -o /", "4", lambda w, i: pretrain(w, i, "/"), lambda w, i: None),
    Case("ln -s c5 a5: a5 --resume auto while c5 trains", "5",
         lambda w, i: pretrain(w, i, w / "a5", "--resume", "auto", steps=6),
         lambda w, i: (w / "a5").symlink_to("c5"), during=stopped_run("c5")),
    Case("prepare --force a dataset a run is training on", "6",
         lambda w, i: prepare(i, w / "d.jsonl", w / "DS3", "--force", "--seq-len", "128"), dataset_copy,
         during=stopped_run("R", lambda w, i: w / "DS3")),
    Case("prepare a changed dataset holding a user's notes", "6",
         lambda w, i: prepare(i, w / "d.jsonl", w / "DS3", "--seq-len", "128"), dataset_with_notes),
    Case("prepare -i src -o src/prep", "out-in-in",
         lambda w, i: prepare(i, w / "src", w / "src" / "prep"), lambda w, i: write(w, {"src/d.jsonl": DOCS})),
    Case("pretrain --dataset src -o src/run", "out-in-in",
         lambda w, i: pretrain(w, i, w / "src" / "run", data=w / "src"), lambda w, i: write(w, {"src/d.jsonl": DOCS})),
    Case("manifest shard ../elsewhere.arrow", "10", lambda w, i: pretrain(w, i, w / "out", data=w / "DS"),
         manifest({"shards": ["../elsewhere.arrow"]}, {"elsewhere.arrow": b"mine"})),
    Case("manifest shard /etc/passwd", "10", lambda w, i: pretrain(w, i, w / "out", data=w / "DS"),
         manifest({"shards": ["/etc/passwd"]})),
    Case("manifest num_rows 10^15", "10", lambda w, i: pretrain(w, i, w / "out", data=w / "DS"),
         manifest({"num_rows": 10**15})),
    Case("manifest seq_len 32 over rows of 64", "10", lambda w, i: pretrain(w, i, w / "out", data=w / "DS"),
         manifest({"seq_len": 32})),
    Case("--model-prefix ../../x", "10", lambda w, i: ["tokenizer", "train", "-i", w / "c.txt", "--vocab-size", "600",
         "-o", w / "a" / "b", "--model-prefix", "../../x"], lambda w, i: write(w, {"c.txt": "hi\n" * 50, "a/b/k": "x"})),
    Case("--resume auto, newest checkpoint's weights cut short", "11",
         lambda w, i: pretrain(w, i, w / "RUN", "--resume", "auto"), damaged("truncated"), expect=0,
         may_change=("RUN/",)),
    Case("--resume auto, newest optimizer.pt empty", "11", lambda w, i: pretrain(w, i, w / "RUN", "--resume", "auto"),
         damaged("empty optimizer"), expect=0, may_change=("RUN/",)),
    Case('--resume auto, newest trainer_state "step": "six"', "11",
         lambda w, i: pretrain(w, i, w / "RUN", "--resume", "auto"), damaged("six"), expect=0, may_change=("RUN/",)),
    Case("--resume auto over a zombie's lock", "zombie", lambda w, i: pretrain(w, i, w / "RUN", "--resume", "auto"),
         zombie_lock, expect=0, may_change=("RUN/",)),
]


def run_case(case: Case, w: Path, inputs: Inputs) -> dict:
    """Set the case up in `w`, run it (beside a live run when the case has one), and count."""
    w.mkdir(parents=True)
    case.setup(w, inputs)
    beside = case.during(w, inputs) if case.during else None
    before, root_before = snapshot(w), set(os.listdir("/"))
    cwd = os.getcwd()
    os.chdir(w / "mine" if (w / "mine").is_dir() else w)  # `-o .` names the user's folder
    try:
        result = moai([str(a) for a in case.args(w, inputs)], env=case.env(w), timeout=LIMIT_S)
    finally:
        os.chdir(cwd)
    after = snapshot(w)
    if beside is not None:
        os.kill(beside.pid, signal.SIGCONT)
        beside.join(LIMIT_S)
    lost = [p for p, data in before.items() if not p.startswith(case.may_change) and after.get(p, b"<gone>") != data]
    lost += [f"/{name} (written to /)" for name in set(os.listdir("/")) - root_before]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return {"name": case.name, "finding": case.finding, "code": result.code, "expect": case.expect,
            "refused": result.code == 2 and len(errors) == 1, "as_expected": result.code == case.expect,
            "traceback": "Traceback" in result.output, "hang": result.code == -signal.SIGKILL,
            "lost": lost, "said": (errors or result.output.strip().splitlines()[-1:] or [""])[0][:160],
            "beside_ok": beside is None or beside.exitcode == 0}


def run_all(root: Path, inputs: Inputs, exclude: list[str] | None = None) -> list[dict]:
    results = []
    for n, case in enumerate(CASES):
        if any(text in case.name for text in exclude or []):
            continue
        r = run_case(case, root / f"case-{n:02d}", inputs)
        results.append(r)
        flag = "ok" if r["as_expected"] and not (r["traceback"] or r["hang"] or r["lost"]) else "PROBLEM"
        print(f"[{flag}] finding {r['finding']}: {r['name']}: exit {r['code']}, {len(r['lost'])} files lost; "
              f"{r['said']}", flush=True)
    for proc in ZOMBIES:
        proc.wait()
    return results


def report(results: list[dict]) -> None:
    n = len(results)
    refused = sum(r["refused"] for r in results)
    expected_0 = [r for r in results if r["expect"] == 0]
    print(f"\ndestructive cases tried: {n}; refused with exit 2: {refused} of {n - len(expected_0)} meant to be "
          f"refused; went on as they should (exit 0): {sum(r['as_expected'] for r in expected_0)} of "
          f"{len(expected_0)}; tracebacks: {sum(r['traceback'] for r in results)}; hangs: "
          f"{sum(r['hang'] for r in results)}; files lost: {sum(len(r['lost']) for r in results)}; live runs "
          f"beside a case that did not finish: {sum(not r['beside_ok'] for r in results)}")
    for r in results:
        for path in r["lost"]:
            print(f"  lost in '{r['name']}': {path}")
