"""Evaluation: bits per byte on held-out text, lm-evaluation-harness benchmarks, local task files.

    text.py          held-out documents -> packed rows (separator first, windows, every byte once)
    scoring.py       score_rows: summed NLL through the fused chunked loss, across processes
    targets.py       MODEL -> model folders (run folders, --all-checkpoints), run.yaml defaults
    harness.py       lm-eval: task names and suites, datasets needed, HFLM, running, results
    local_tasks.py   a local file + flags -> an lm-eval task config (multiple-choice, generate)
    heldout.py       evaluation files from the embedded corpora: held-out text, finance Q&A tasks
    report.py        result JSONs (atomic, with versions), tables, bits-per-byte curves
    evaluate.py      run_eval: all of it, as `moai eval` does

For a training loop (once, before training; then every N steps, on every process):

    >>> from moai_llm.eval import prepare_eval_text, score_rows                # doctest: +SKIP
    >>> rows = prepare_eval_text("held_out.jsonl", tokenizer_dir, seq_len=2048)  # doctest: +SKIP
    >>> score_rows(model, rows, micro_batch=8, all_sum=all_sum)["bits_per_byte"] # doctest: +SKIP
"""

from __future__ import annotations

from moai_llm.eval.scoring import score_rows, text_metrics
from moai_llm.eval.text import EvalText, pack_texts, prepare_eval_text, read_texts

__all__ = ["EvalText", "pack_texts", "prepare_eval_text", "read_texts", "score_rows", "text_metrics"]
