"""`run_eval`: everything `moai eval` does, from Python.

Order matters for bad input: every model is resolved, the held-out text read, task names
checked against lm-eval, hub datasets located and the task file's columns checked BEFORE any
model is loaded, so a mistake costs one line and leaves nothing written. Then, per model: load
it (moai's Qwen3 class, safetensors only), score the text (`text` + `scoring`), run the
benchmarks through lm-eval (`harness`, `local_tasks`), write one JSON (`report`). With
`all_checkpoints` and text, bits per byte against step is drawn into `eval/bpb.png`.

    >>> from moai_llm.eval.evaluate import EvalRequest, run_eval
    >>> report = run_eval(EvalRequest(models=["outputs/pretrain"], text=["held_out.jsonl"],
    ...                               all_checkpoints=True))                  # doctest: +SKIP
    >>> report["table"]["columns"], report["plots"]                            # doctest: +SKIP
    (['metric', 'step-100', 'step-200', 'final_model'], ['outputs/pretrain/eval/bpb.png'])
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.eval import report as rep
from moai_llm.eval.harness import TaskRequest
from moai_llm.eval.local_tasks import LocalTask
from moai_llm.eval.targets import (
    EvalTarget,
    chat_template_default,
    default_seq_len,
    resolve_targets,
)
from moai_llm.progress import info


@dataclass
class EvalRequest:
    """The settings of one `moai eval` call (CLI flags, one to one)."""

    models: list[str]
    all_checkpoints: bool = False
    text: list[str] = field(default_factory=list)  # held-out text sources
    text_column: str | None = None
    text_split: str = "test"  # for hub datasets
    text_config: str | None = None
    max_documents: int | None = None
    seq_len: int | None = None  # rows for bits per byte (default: the run's, else the model's up to 2048)
    stride: int | None = None  # default seq_len - 1
    batch_size: int = 8  # rows per forward (text) and lm-eval's batch size
    tasks: list[str] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: float | None = None
    local: LocalTask | None = None
    chat_template: bool | None = None  # None: decided per model (run.yaml, tokenizer)
    output: str | None = None
    device: str | None = None
    dtype: str | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    pairs: str | None = None  # held-out preference pairs: accuracy and margin (eval/pair_accuracy.py)
    reference: str | None = None  # with pairs: rewards against this model's log-probs (DPO's implicit reward)
    beta: float = 0.1  # with a reference: the reward's scale


def _model_positions(path: Path) -> int | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MoaiInputError(f"{path / 'config.json'}: cannot read the model config ({exc})") from exc
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def _output_dir(req: EvalRequest, target: EvalTarget) -> Path:
    if req.output:
        return Path(req.output).expanduser()
    return (target.run_dir or target.path) / "eval"


def _validate(req: EvalRequest, workdir: Path) -> tuple[list[EvalTarget], list[str], list[TaskRequest]]:
    if req.reference and not req.pairs:
        raise MoaiInputError("--reference goes with --pairs", hint="pass --pairs FILE of held-out preference pairs")
    if not (req.beta > 0 and req.beta < float("inf")):
        raise MoaiInputError(f"--beta {req.beta}: must be a positive number")
    if not (req.text or req.tasks or req.suites or req.local or req.pairs):
        raise MoaiInputError("nothing to evaluate", hint="pass --text SOURCE, --tasks NAMES, --suite NAME, --task-file FILE "
                             "or --pairs FILE")
    if req.batch_size < 1:
        raise MoaiInputError(f"--batch-size {req.batch_size}: must be at least 1")
    if req.limit is not None and req.limit <= 0:
        raise MoaiInputError(f"--limit {req.limit}: must be positive (a count, or a fraction below 1)")
    targets = resolve_targets(req.models, req.all_checkpoints)
    for t in targets:
        positions = _model_positions(t.path)
        if req.seq_len is not None and (req.seq_len < 2 or (positions and req.seq_len > positions)):
            raise MoaiInputError(f"--seq-len {req.seq_len}: must be between 2 and the model's {positions} positions ({t.path})")
        if (why := rep.check_writable(_output_dir(req, t))) is not None:
            raise MoaiInputError(f"cannot write results for {t.label}: {why}", hint="pass --output DIR")
    if req.stride is not None and req.stride < 1:
        raise MoaiInputError(f"--stride {req.stride}: must be at least 1")
    texts: list[str] = []
    if req.text:
        from moai_llm.eval.text import read_texts

        texts = read_texts(req.text, req.text_column, split=req.text_split, config=req.text_config,
                           max_documents=req.max_documents)
    requests: list[TaskRequest] = []
    if req.tasks or req.suites or req.local:
        from moai_llm.eval import harness

        harness.require_lm_eval()
        requests = harness.resolve_tasks(req.tasks, req.suites, req.num_fewshot)
        harness.check_datasets(requests)
        if req.local:
            from moai_llm.eval.local_tasks import build_task

            requests.append(TaskRequest(build_task(req.local, workdir), req.num_fewshot))
    for t in targets if req.pairs else []:  # bad pairs are found before any model is loaded
        _prepared_pairs(req, t, workdir)
    return targets, texts, requests


def _evaluate_one(req: EvalRequest, target: EvalTarget, texts: list[str], requests: list[TaskRequest],
                  workdir: Path) -> dict[str, Any]:
    from moai_llm.inference.loading import load_for_chat

    started = time.perf_counter()
    info(f"[bold]{target.label}[/]" + ("" if target.label == str(target.path) else f" ({target.path})"))
    model, tokenizer, load_info = load_for_chat(target.path, device=req.device, dtype=req.dtype,
                                                trust_remote_code=req.trust_remote_code, tokenizer_path=req.tokenizer)
    settings: dict[str, Any] = {"device": load_info["device"], "dtype": load_info["dtype"], "batch_size": req.batch_size}
    record: dict[str, Any] = {"label": target.label, "model": target.to_dict(), "created": rep.now(),
                              "settings": settings, "versions": rep.versions(), "text": None, "tasks": None}
    if texts:
        from moai_llm.eval.scoring import score_rows
        from moai_llm.eval.text import pack_texts

        seq_len, why = (req.seq_len, "--seq-len") if req.seq_len else default_seq_len(target, load_info["context_length"])
        rows = pack_texts(texts, tokenizer, seq_len, req.stride)
        info(f"  held-out text: {rows.documents:,} documents, {rows.bytes:,} bytes, {rows.tokens:,} tokens "
             f"in {len(rows):,} rows of {seq_len} ({why})")
        scores = score_rows(model, rows, micro_batch=req.batch_size)
        record["text"] = {**scores, **rows.summary(), "seq_len_from": why}
        settings.update(text=req.text, text_column=req.text_column, seq_len=seq_len, stride=rows.stride)
        info(f"  bits per byte {scores['bits_per_byte']:.4f}")
    if requests:
        from moai_llm.eval import harness

        chat, why = (req.chat_template, "--chat-template" if req.chat_template else "--no-chat-template") \
            if req.chat_template is not None else chat_template_default(target, bool(getattr(tokenizer, "chat_template", None)))
        info(f"  benchmarks {'through' if chat else 'without'} the chat template ({why})")
        lm = harness.make_lm(model, tokenizer, batch_size=req.batch_size)
        results = harness.run_tasks(lm, requests, limit=req.limit, chat_template=chat)
        record["tasks"] = harness.result_rows(results, [r.name for r in requests])
        record["lm_eval"] = results
        settings.update(tasks=[r.name for r in requests], num_fewshot=req.num_fewshot, limit=req.limit,
                        chat_template=chat, chat_template_reason=why,
                        task_file=asdict(req.local) if req.local else None)
    if req.pairs:
        record["pairs"] = _pairs(req, target, model, workdir)
    record["seconds"] = round(time.perf_counter() - started, 2)
    del model
    return record


def _prepared_pairs(req: EvalRequest, target: EvalTarget, workdir: Path) -> tuple[Path, Path, int]:
    """(prepared pairs, tokenizer folder, seq_len) for a target: built once, then a cache hit."""
    from moai_llm.eval.pair_accuracy import prepare_pairs
    from moai_llm.inference.loading import _tokenizer_dir, resolve_model_dir

    seq_len = req.seq_len or default_seq_len(target, _model_positions(target.path))[0]
    tok = _tokenizer_dir(resolve_model_dir(target.path)[0], req.tokenizer)  # the folder load_for_chat reads
    if req.reference:  # its log-probs must be of the same tokens
        from moai_llm.alignment.reference import check_reference_tokenizer

        check_reference_tokenizer(resolve_model_dir(req.reference)[0], tok)
    return prepare_pairs(req.pairs, tok, seq_len, workdir), tok, seq_len


def _pairs(req: EvalRequest, target: EvalTarget, model, workdir: Path) -> dict[str, Any]:
    from moai_llm.eval import pair_accuracy as pa

    prepared, tok, seq_len = _prepared_pairs(req, target, workdir)
    ref = pa.reference_scores(req.reference, prepared, tok, req.device, req.dtype,
                              req.trust_remote_code) if req.reference else None
    result = pa.evaluate_pairs(model, prepared, req.batch_size, req.beta, ref)
    info(f"  pairs: accuracy {result['accuracy']:.3f}, margin {result['margin']:+.4f} ({result['reward']})")
    return {**result, "file": req.pairs, "reference": req.reference, "seq_len": seq_len}


def _plots(req: EvalRequest, targets: list[EvalTarget], records: list[dict[str, Any]]) -> list[str]:
    by_spec: dict[str, list[tuple[int, float]]] = {}
    for t, r in zip(targets, records, strict=True):
        if r.get("text") and t.step is not None:
            by_spec.setdefault(t.spec, []).append((t.step, r["text"]["bits_per_byte"]))
    paths = []
    for spec, points in by_spec.items():
        target = next(t for t in targets if t.spec == spec)
        name = "bpb.png" if len(by_spec) == 1 else f"bpb-{rep._slug(spec)}.png"
        paths.append(str(rep.plot_bpb(points, _output_dir(req, target) / name, title=f"bits per byte: {spec}")))
    return paths


def run_eval(req: EvalRequest) -> dict[str, Any]:
    """Evaluate every model of `req`; returns {"evaluations", "table", "written", "plots"}."""
    records, written = [], []
    with tempfile.TemporaryDirectory(prefix="moai-eval-") as workdir:
        targets, texts, requests = _validate(req, Path(workdir))
        for target in targets:
            records.append(_evaluate_one(req, target, texts, requests, Path(workdir)))
            written.append(str(rep.write_record(_output_dir(req, target), records[-1])))
    plots = _plots(req, targets, records) if req.all_checkpoints and texts else []
    return {"evaluations": records, "table": rep.table(records), "written": written, "plots": plots}
