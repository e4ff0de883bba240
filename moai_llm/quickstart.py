"""`moai quickstart`: the whole path on this machine, offline (minutes: it says how many first).

1. train a byte-level BPE tokenizer (~8k) on the embedded ko/en/ja/zh corpora,
2. prepare them as packed rows,
3. pretrain the `small` preset until the loss has clearly fallen,
4. fine-tune it on the embedded finance Q&A (loss on answers only),
5. answer one held-out question through the chat code path (moai_llm.inference),
6. report what was learned: bits per byte of held-out text (the corpora's held-out split,
   never trained on) before and after pretraining, measured by the pretraining run itself
   (`--eval-text`), and a finance multiple-choice table (held-out questions, lm-eval's
   log-likelihood scoring through `moai eval`'s code) for the base and the SFT model,
then say where everything went and what to run next. It writes into a new folder or one an
earlier quickstart made (moai_llm.ownership), never into a user's. Every stage goes through the same code
as `moai tokenizer train`, `moai pretrain`, `moai sft`, `moai chat` and `moai eval`. Without
lm-evaluation-harness only the task table is skipped, with a message.

The full run is `run_quickstart("moai-quickstart")`; how long it takes depends on the CPU cores
free for it (see `MEASURED`), and it says so before it starts, from the rate of a few training
steps timed on the machine (`estimate_seconds`). `tiny=True` is the seconds-long version the
tests use, here cut to two steps per stage:

    >>> import pathlib, tempfile
    >>> from moai_llm.progress import set_quiet
    >>> set_quiet(True)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "qs"
    >>> report = run_quickstart(out, tiny=True, pretrain_steps=2, sft_steps=2)  # doctest: +ELLIPSIS
    ...
    >>> pathlib.Path(report["final_model"]).is_dir(), sorted(report["timings"])[-1]
    (True, 'total_s')
    >>> set_quiet(False)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_jsonl_atomic
from moai_llm.progress import console, info


@dataclass(frozen=True)
class QuickstartSizes:
    """How big each stage is (the full run's measured times: `MEASURED`)."""

    model: str = "small"
    vocab_size: int = 8000
    seq_len: int = 256
    micro_batch_size: int = 4
    pretrain_steps: int = 500
    pretrain_lr: float = 3e-3
    pretrain_min_lr_ratio: float = 0.1  # part of the measured recipe (benchmarks/results/training.md)
    sft_steps: int = 250
    sft_lr: float = 1e-3
    answer_tokens: int = 48


TINY = QuickstartSizes(model="tiny", vocab_size=600, seq_len=64, micro_batch_size=2, pretrain_steps=8,
                       sft_steps=4, answer_tokens=8)


STAGES = 6

# Whole runs of the full quickstart on the project's 2-core CPU (wall seconds), idle and shared
# with other work. The estimate for this machine scales its steps by the rate timed here.
MEASURED = {"idle_2core_s": 210, "loaded_2core_s": 1500}
PROBE_TO_RUN = 1.0  # a loop step of the run / a step of the probe (its data, logging, loss chunks)


def estimate_seconds(sizes: QuickstartSizes, probe_steps: int = 3) -> tuple[float, float]:
    """(seconds per training step timed here, whole-run seconds expected): a few steps of the
    preset at the run's batch shape, scaled to the run's pretraining and SFT steps."""
    import torch

    from moai_llm.config import MoaiConfig
    from moai_llm.modeling import MoaiForCausalLM

    config = MoaiConfig.from_preset(sizes.model)
    config.vocab_size = sizes.vocab_size
    torch.manual_seed(0)
    model = MoaiForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, sizes.vocab_size, (sizes.micro_batch_size, sizes.seq_len))
    times: list[float] = []
    # The first step warms up allocations and is not timed, unless it alone took a second: a
    # machine that slow is timed well enough by it, and the probe must not cost much of the run.
    for _ in range(probe_steps + 1):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        if times[0] >= 1.0:
            break
    timed = times[1:] or times
    step = sorted(timed)[len(timed) // 2]
    return step, step * PROBE_TO_RUN * (sizes.pretrain_steps + sizes.sft_steps)


def _say_how_long(sizes: QuickstartSizes) -> None:
    import os

    step, total = estimate_seconds(sizes)
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    expected = f"{total:.0f} seconds" if total < 90 else f"{total / 60:.0f} minutes"
    info(f"this machine: {cores} CPU cores, load average {load:.1f}; a training step takes {step:.2f} s "
         f"here, so this run should take about {expected} (measured on a "
         f"2-core CPU: {MEASURED['idle_2core_s'] / 60:.1f} minutes idle, "
         f"{MEASURED['loaded_2core_s'] / 60:.0f} shared with other work; the time is the "
         f"{sizes.pretrain_steps} + {sizes.sft_steps} training steps, and grows with whatever else "
         "runs on the cores)")


def _stage(n: int, title: str) -> float:
    console.rule(f"[bold][{n}/{STAGES}] {title}", align="left")
    return time.perf_counter()


def _train(mode: str, flags: dict[str, Any]) -> dict[str, Any]:
    from moai_llm.errors import MoaiRunError
    from moai_llm.training.launcher.runner import launch_run, prepare_run
    from moai_llm.training.settings import resolve_settings

    out = Path(flags["output_dir"])
    from moai_llm.ownership import foreign_names, kind_of

    # a stage of an earlier quickstart in this folder starts afresh; one holding a user's files is
    # left for prepare_run to refuse
    if kind_of(out) == "run" and not foreign_names(out, "run"):
        import shutil

        shutil.rmtree(out)
    settings, sources = resolve_settings(mode, None, flags)
    record = prepare_run(settings, sources, argv=["moai", "quickstart"])
    code, result = launch_run(record)
    if code != 0:
        raise MoaiRunError(f"the {mode} stage failed (exit {code})")
    return result


def _ask(model_dir: Path, question: str, max_new_tokens: int) -> str:
    """One greedy answer from `model_dir` through the chat session, streamed to the console."""
    from moai_llm.inference import ChatSession, SamplingParams, load_for_chat

    model, tokenizer, chat_info = load_for_chat(model_dir)
    session = ChatSession(model, tokenizer, chat_info,
                          params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    console.print(f"[bold]user:[/] {question}")
    console.print("[bold]assistant:[/] ", end="")
    answer = []
    for piece in session.ask(question):
        answer.append(piece)
        console.print(piece, end="", highlight=False)
    console.print()
    return "".join(answer).strip()


def _data_files(out: Path, texts: list[str]) -> tuple[Path, Path, list[dict], dict[str, Path]]:
    """The pretraining documents, the finance Q&A and the held-out evaluation files."""
    from moai_llm import corpora
    from moai_llm.eval.heldout import write_eval_files

    docs = write_jsonl_atomic(out / "corpus.jsonl", ({"text": x} for x in texts))
    qa = corpora.finance_qa("train")
    sft_file = write_jsonl_atomic(out / "finance_qa.jsonl", ({"input": r["input"], "output": r["output"]} for r in qa))
    eval_files = write_eval_files(out / "eval_files")
    info(f"{docs} ({len(texts)} documents), {sft_file} ({len(qa)} Q&A pairs); packed in the next "
         f"stages; held-out text and questions in {out / 'eval_files'}")
    return docs, sft_file, qa, eval_files


def _task_table(pre_dir: Path, sft_dir: Path, task_file: Path, out: Path) -> dict[str, Any]:
    """The finance multiple-choice accuracy of the base and the SFT model (`moai eval
    --task-file`'s code: lm-eval scores each answer's log-likelihood); {"skipped": why}
    without lm-evaluation-harness."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        from rich.markup import escape

        message = ("finance multiple choice skipped: lm-evaluation-harness is not installed "
                   "(from a clone: pip install -e '.[eval]')")
        info(escape(message))
        return {"skipped": message}
    from moai_llm.eval.evaluate import EvalRequest, run_eval
    from moai_llm.eval.local_tasks import LocalTask

    task = LocalTask(str(task_file), "multiple-choice", choices_column="choices", answer_column="answer")
    result = run_eval(EvalRequest(models=[str(pre_dir / "final_model"), str(sft_dir / "final_model")],
                                  local=task, output=str(out), batch_size=16))
    rows = [r for r in result["table"]["rows"] if " acc" in r[0]]
    return {"columns": ["metric", "base (pretrain)", "sft"], "rows": rows, "written": result["written"]}


def _own_folder(output_dir: str | Path) -> Path:
    """`output_dir`, new or made by an earlier quickstart (moai_llm.ownership: never a user's
    folder), created and marked as the quickstart's."""
    from moai_llm.ownership import claim, read_marker, write_marker
    from moai_llm.training.launcher.inputs import check_output_dir

    claim(output_dir, "quickstart")
    out = check_output_dir(output_dir)
    if read_marker(out) is None:
        write_marker(out, "quickstart", "moai quickstart")
    return out


def run_quickstart(output_dir: str | Path = "moai-quickstart", tiny: bool = False,
                   pretrain_steps: int | None = None, sft_steps: int | None = None,
                   question: str | None = None) -> dict[str, Any]:
    """Run the six stages into `output_dir`; returns paths, losses, held-out bits per byte,
    the task table, the answer and timings."""
    from moai_llm import corpora

    asked = {k: v for k, v in (("pretrain_steps", pretrain_steps), ("sft_steps", sft_steps)) if v}
    sizes = dataclasses.replace(TINY if tiny else QuickstartSizes(), **asked)  # TINY itself never changes
    out = _own_folder(output_dir)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    _say_how_long(sizes)

    t = _stage(1, f"tokenizer: byte-level BPE, {sizes.vocab_size} tokens, on the embedded corpora")
    from moai_llm.tokenizer import train_tokenizer

    texts = [text for lang in corpora.languages() for text in corpora.iter_texts(lang, "train")]
    tok_dir = train_tokenizer(texts, out / "tokenizer", vocab_size=sizes.vocab_size, show_progress=False)
    info(f"{len(texts)} documents ({sum(map(len, texts)):,} characters) → {tok_dir}")
    timings["tokenizer_s"] = time.perf_counter() - t

    t = _stage(2, "data: pretraining text, finance Q&A and held-out evaluation files")
    docs, sft_file, qa, eval_files = _data_files(out, texts)
    timings["data_s"] = time.perf_counter() - t

    common = dict(seq_len=sizes.seq_len, micro_batch_size=sizes.micro_batch_size, gradient_accumulation_steps=1,
                  logging_steps=max(1, sizes.pretrain_steps // 20), save_total_limit=1, nproc=1)
    t = _stage(3, f"pretrain: `{sizes.model}` preset, {sizes.pretrain_steps} steps × "
                  f"{sizes.micro_batch_size} rows × {sizes.seq_len} tokens")
    pre_dir = out / "pretrain"
    pre = _train("pretrain", dict(common, model=sizes.model, tokenizer=str(tok_dir), dataset=[str(docs)],
                                  output_dir=str(pre_dir), max_steps=sizes.pretrain_steps,
                                  learning_rate=sizes.pretrain_lr, warmup=0.1, decay=0.3,
                                  min_lr_ratio=sizes.pretrain_min_lr_ratio,
                                  lr_scheduler="wsd", save_steps=sizes.pretrain_steps,
                                  eval_text=[str(eval_files["text"])],
                                  eval_steps=sizes.pretrain_steps))
    from moai_llm.training.worker.metrics import read_metrics

    losses = [r["loss"] for r in read_metrics(pre_dir) if "loss" in r]
    bpb = [r["eval_bpb"] for r in read_metrics(pre_dir) if "eval_bpb" in r]
    info(f"loss {losses[0]:.3f} → {losses[-1]:.3f}; held-out text {bpb[0]:.3f} → {bpb[-1]:.3f} "
         "bits per byte")
    timings["pretrain_s"] = time.perf_counter() - t

    t = _stage(4, f"sft: finance Q&A, {sizes.sft_steps} steps, loss on answers only")
    sft_dir = out / "sft"
    sft = _train("sft", dict(common, pretrained_model=str(pre_dir / "final_model"), dataset=[str(sft_file)],
                             output_dir=str(sft_dir), max_steps=sizes.sft_steps, learning_rate=sizes.sft_lr,
                             warmup=0.1, lr_scheduler="cosine", save_steps=sizes.sft_steps,
                             logging_steps=max(1, sizes.sft_steps // 10)))
    sft_losses = [r["loss"] for r in read_metrics(sft_dir) if "loss" in r]
    timings["sft_s"] = time.perf_counter() - t

    t = _stage(5, "chat: one held-out question through moai chat's code path")
    held = corpora.finance_qa("heldout")
    question = question or (held[0]["input"] if held else qa[0]["input"])
    answer = _ask(sft_dir, question, sizes.answer_tokens)
    timings["chat_s"] = time.perf_counter() - t

    t = _stage(6, "eval: held-out text before and after pretraining; finance multiple choice")
    tasks = _task_table(pre_dir, sft_dir, eval_files["multiple_choice"], out / "eval")
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    return {
        "output_dir": str(out), "tokenizer": str(tok_dir), "pretrain": str(pre_dir),
        "sft": str(sft_dir), "final_model": str(sft_dir / "final_model"),
        "pretrain_loss": [losses[0], losses[-1]], "sft_loss": [sft_losses[0], sft_losses[-1]],
        "heldout_bpb": [bpb[0], bpb[-1]], "tasks": tasks,
        "question": question, "answer": answer,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "pretrain_result": pre, "sft_result": sft,
    }
