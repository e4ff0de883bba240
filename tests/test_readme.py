"""The first hour, as the README tells it: its commands run as written in a clean copy of the
repository, and every figure the README states about the quickstart (the eval table, the counts
of held-out text and questions, the chat transcript) is the figure those commands produce.

The README's figures sit between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->`; this test
writes what the run produced in the same form and compares. After a change that moves the
figures (a new tokenizer split, a new recipe), regenerate them from a real run:

    MOAI_UPDATE_README=1 python -m pytest tests/test_readme.py -k figures

`bash scripts/setup.sh` itself is not rerun here: CI ran it to make the environment the test
runs in; everything after `. .venv/bin/activate` is run as written.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUESTIONS = ["복리란 무엇인가요?", "What is a grace period on a credit card?"]


# ---------------------------------------------------------------- the README's text


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def block(text: str, name: str) -> str:
    match = re.search(rf"<!-- figures:{name} -->\n(.*?)<!-- /figures:{name} -->", text, flags=re.S)
    assert match, f"README has no figures:{name} block"
    return match.group(1)


def replace_block(text: str, name: str, content: str) -> str:
    block(text, name)
    return re.sub(rf"(<!-- figures:{name} -->\n).*?(<!-- /figures:{name} -->)",
                  lambda m: m.group(1) + content + m.group(2), text, flags=re.S)


def _bold(value: str, best: bool) -> str:
    return f"**{value}**" if best else value


def quickstart_block(f: dict) -> str:
    """The eval table of the quickstart's models, and the sentence of counts before it."""
    bpb_u, bpb_p, bpb_s = f["bpb"]
    (acc_p, acc_s), (norm_p, norm_s) = f["acc"], f["acc_norm"]

    def value(cell: str) -> float:
        return float(cell.split(" ± ")[0])

    return (
        "The quickstart's models (`moai quickstart`, 500 + 250 steps), measured with `moai eval`: bits\n"
        "per byte on the embedded corpora's held-out ko/en/ja/zh documents (`heldout_text.jsonl`:\n"
        f"{f['documents']} documents, {f['bytes']:,} bytes, never trained on) and the finance Q&A's "
        f"{f['questions']} held-out questions as a\n"
        "4-choice local task (`finance_mc.jsonl`; chance 0.25; the base model without and the SFT\n"
        "model through the chat template, as `moai eval` chooses from run.yaml):\n\n"
        "| | untrained (step 0 of the run) | pretrain | sft |\n"
        "|---|---:|---:|---:|\n"
        f"| bits per byte, held-out text | {bpb_u} | {_bold(bpb_p, float(bpb_p) <= float(bpb_s))} | "
        f"{_bold(bpb_s, float(bpb_s) < float(bpb_p))} |\n"
        f"| finance multiple choice, acc | | {_bold(acc_p, value(acc_p) > value(acc_s))} | "
        f"{_bold(acc_s, value(acc_s) >= value(acc_p))} |\n"
        f"| finance multiple choice, acc_norm | | {_bold(norm_p, value(norm_p) > value(norm_s))} | "
        f"{_bold(norm_s, value(norm_s) >= value(norm_p))} |\n\n"
        "Fine-tuning on finance Q&A alone raises the finance score above chance and costs general text\n"
        f"(bits per byte {bpb_p} → {bpb_s}).\n"
    )


def transcript_block(f: dict) -> str:
    """The greedy chat session with the quickstart's SFT model (speeds are this run's)."""
    lines = ["```text", "$ moai chat moai-quickstart/sft --temperature 0 --max-new-tokens 40",
             "loading moai-quickstart/sft/final_model (the run's final model)",
             f"moai chat · moai-quickstart/sft/final_model · {f['parameters']:,} parameters · cpu float32 · "
             "/help for commands, Ctrl-D to leave"]
    for question, answer, stats in zip(QUESTIONS, f["answers"], f["stats"], strict=True):
        lines += [f"you> {question}", answer, stats]
    lines += ["you> /reset", "conversation reset", "you> ^D", "```"]
    return "\n".join(lines) + "\n"


def _comparable(text: str) -> str:
    """Speeds and time to first token change from run to run; every other figure must not."""
    return re.sub(r"[\d.]+ tok/s · TTFT [\d.]+ s", "N tok/s · TTFT N s", text)


# ---------------------------------------------------------------- running it


def clean_copy(dest: Path) -> Path:
    """The repository's tracked files (as they are in the working tree) in a fresh git repository,
    so that `git status` afterwards shows anything the commands left outside .gitignore."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
        elif src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(dest)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], check=True)
    return dest


def user_env(copy: Path) -> dict[str, str]:
    """What a person's shell has after `. .venv/bin/activate` in `copy`: moai on PATH (its code
    read from the copy), no test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_NUM_THREADS", "PYTEST", "MOAI_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(copy)
    env["HF_HUB_OFFLINE"] = "1"  # the README's paths are offline; a reachable hub must not change them
    return env


def run(command: str, cwd: Path, stdin: str = "", timeout: int = 3600) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=user_env(cwd), input=stdin,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118


def quickstart_figures(copy: Path, stdout: str) -> dict:
    """What `moai quickstart` printed, what `moai eval` says of its SFT model, and the chat
    session of the README, all from the run in `copy`."""
    qs = copy / "moai-quickstart"
    before, after = re.search(r"held-out text\s+([\d.]+) → ([\d.]+) bits per byte", stdout).groups()
    rows = {m[0]: m[1:] for m in re.findall(
        r"local_finance_mc (acc|acc_norm), 0-shot\s+([\d.]+ ± [\d.]+)\s+([\d.]+ ± [\d.]+)", stdout)}
    table = json.loads(run("moai eval moai-quickstart/pretrain moai-quickstart/sft --text "
                           "moai-quickstart/eval_files/heldout_text.jsonl --json", copy).stdout)["table"]
    bpb_row = next(r for r in table["rows"] if r[0] == "bits per byte")
    assert bpb_row[1] == after  # moai eval and the run's own last eval_bpb agree
    session = run("moai chat moai-quickstart/sft --temperature 0 --max-new-tokens 40", copy,
                  stdin="\n".join([*QUESTIONS, "/reset"]) + "\n")
    texts = [json.loads(x)["text"] for x in (qs / "eval_files" / "heldout_text.jsonl").read_text().splitlines()]
    return {
        "bpb": [before, after, bpb_row[2]], "acc": list(rows["acc"]), "acc_norm": list(rows["acc_norm"]),
        "documents": len(texts), "bytes": sum(len(t.encode()) for t in texts),
        "questions": sum(1 for _ in (qs / "eval_files" / "finance_mc.jsonl").open()),
        "parameters": parameters(qs / "sft" / "final_model"),
        "answers": session.stdout.rstrip("\n").split("\n"),
        "stats": [x for x in session.stderr.splitlines() if " tokens · " in x],
    }


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory) -> tuple[Path, dict]:
    """One clean copy; the README's install-and-run command, then its whole path and its Eval
    section as written (the lines that need the hub left out)."""
    copy = clean_copy(tmp_path_factory.mktemp("readme") / "moai")
    text = README.read_text(encoding="utf-8")
    install = bash_blocks(section(text, "Install and run"))[0].strip()
    assert install == "bash scripts/setup.sh && . .venv/bin/activate && moai quickstart"
    quickstart = run(install.split(" && ")[-1], copy)
    figures = quickstart_figures(copy, quickstart.stdout)
    run(bash_blocks(section(text, "The whole path"))[0], copy, stdin="What is an ETF?\n")
    eval_lines = [line for line in bash_blocks(section(text, "Eval"))[0].splitlines() if "(hub" not in line]
    run("\n".join(eval_lines), copy)
    return copy, figures


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the full quickstart, then the whole path: minutes idle, more on a busy machine
def test_readme_figures_are_what_the_commands_produce(first_hour):
    _, figures = first_hour
    text = README.read_text(encoding="utf-8")
    want = {"quickstart": quickstart_block(figures), "transcript": transcript_block(figures)}
    if os.environ.get("MOAI_UPDATE_README"):
        for name, content in want.items():
            text = replace_block(text, name, content)
        README.write_text(text, encoding="utf-8")
    for name, content in want.items():
        assert _comparable(block(text, name)) == _comparable(content), f"README figures:{name} drifted"
    # what the prose around the table says must stay true
    bpb = [float(x) for x in figures["bpb"]]
    assert bpb[1] < bpb[0] and bpb[2] > bpb[1]
    assert float(figures["acc"][1].split(" ± ")[0]) > 0.25


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_whole_path_leaves_nothing_untracked_and_trains_on_no_held_out_text(first_hour):
    copy, _ = first_hour
    status = subprocess.run(["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"files the README's commands left outside .gitignore:\n{status.stdout}"
    trained = {json.loads(x)["text"] for lang in ("ko", "en", "ja", "zh")
               for x in (copy / "data" / "corpora" / f"{lang}.jsonl").read_text().splitlines()}
    held = {json.loads(x)["text"] for x in (copy / "data" / "evalsets" / "heldout_text.jsonl").read_text().splitlines()}
    assert held and not trained & held


def test_the_seed_lines_fail_only_for_want_of_the_hub(tmp_path):
    """The README's seed lines, offline: the tokenizer trains on the embedded corpora, and the
    pretraining line stops at the hub dataset (not for want of a tokenizer)."""
    text = section(README.read_text(encoding="utf-8"), "The whole path")
    seed = next(b for b in bash_blocks(text) if "--mode pretrain" in b).splitlines()
    subprocess.run(["bash", "-c", seed[0]], cwd=tmp_path, env=user_env(ROOT), check=True, capture_output=True,
                   timeout=600)
    pretrain = subprocess.run(["bash", "-c", seed[1]], cwd=tmp_path, env=user_env(ROOT), capture_output=True,
                              text=True, timeout=600)
    assert pretrain.returncode == 2, pretrain.stderr[-2000:]
    assert "no tokenizer" not in pretrain.stderr and "wikitext" in pretrain.stderr
