"""The training loop: composes the parts of a run and steps through it.

Why not `transformers.Trainer` (docs/training.md has the measurements): moai needs the data
position as one number for exact resume, atomic `checkpoints/step-N/` folders that are Qwen3
model directories, the loss normalised by the labelled tokens of the whole global batch across
processes, NaN/inf steps skipped, and no per-step overhead beyond a bare loop. The loop is
~the bare loop plus two small all-reduces per step with several processes (none with one).

The parts, each in its own module: the optimizer step and the NaN guard (step.py), held-out
evaluation (evaluation.py), the checkpoint policy (checkpoint_policy.py), metrics and the
logging window (metrics.py), processes and sharding (distributed.py). `train` takes the run as
the launcher resolved it (training/resolved.py, read from run.yaml): the plan, the schedule, the
model config, the base model and its growth, the checkpoint to resume from. It derives none of
them again, from the flags or from the hardware.

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.progress import set_quiet
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.training.launcher.runner import prepare_run
    >>> from moai_llm.training.settings import resolve_settings
    >>> set_quiet(True)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = train_tokenizer(texts, d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    >>> s, sources = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 2, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> record = prepare_run(s, sources)
    >>> result = train(record.resolved(), show_progress=False)
    >>> result["step"], result["skipped_steps"]
    (2, 0)
    >>> set_quiet(False)
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moai_llm.errors import MoaiRunError
from moai_llm.faults import fault_point
from moai_llm.hardware.plan import Plan
from moai_llm.training.resolved import Resolved
from moai_llm.training.schedule import build_scheduler
from moai_llm.training.settings import TrainSettings
from moai_llm.training.stages import StageController, parse_stages
from moai_llm.training.worker.batches import BatchOrder, RowReader
from moai_llm.training.worker.checkpoint import (
    load_model_weights,
    load_optimizer_file,
    load_trainer_state,
    prune_checkpoints,
    remove_stale_temps,
)
from moai_llm.training.worker.checkpoint_policy import CheckpointPolicy
from moai_llm.training.worker.distributed import (
    DistInfo,
    load_optimizer_state,
    unwrap,
    wrap_distributed,
)
from moai_llm.training.worker.dpo_step import PairEvaluation, PreferenceStep
from moai_llm.training.worker.evaluation import RunEvaluation
from moai_llm.training.worker.metrics import (
    FlopCounter,
    LogWindow,
    MetricsWriter,
    device_peak_flops,
    plot_loss,
)
from moai_llm.training.worker.model_setup import build_model, build_optimizer, generation_config_for
from moai_llm.training.worker.step import NonFiniteGuard, TrainStep
from moai_llm.training.worker.trainer_state import TrainerState


@dataclass
class Run:
    """The composed parts of one training run (built by `_build`)."""

    settings: TrainSettings
    plan: Plan
    dist: DistInfo
    reader: RowReader
    held_out: RunEvaluation
    model: torch.nn.Module          # wrapped for several processes (DDP/FSDP2)
    step: TrainStep
    saver: CheckpointPolicy
    metrics: MetricsWriter
    window: LogWindow
    state: TrainerState             # where the run stands; replaced after every step
    start_step: int = 0             # the step this process started from (0, or the checkpoint's)
    start_skipped: int = 0          # steps skipped before it (the checkpoint's count)
    stages: StageController | None = None   # --stages: what trains at each step


def train(resolved: Resolved, show_progress: bool = True) -> dict[str, Any]:
    """Train the run the launcher resolved, from its resume checkpoint or from scratch; writes
    checkpoints, metrics and final_model to its folder.

    Returns {"step", "loss", "final_model", "tokens", "seconds", "skipped_steps", "world_size"}.
    Raises FirstStepOOM when the first step runs out of memory; MoaiRunError after too many
    non-finite losses in a row; DiskFullError (exit 2) when the disk fills while saving.
    """
    from moai_llm.progress import progress_bar, warn

    settings, run_dir, resume_from = resolved.settings, resolved.run_dir, resolved.resume_from
    run = _build(resolved)
    guard = NonFiniteGuard(settings.max_bad_steps, warn if run.dist.main else None)
    show = run.dist.main and show_progress
    bar = progress_bar(unit="step", log_every=settings.logging_steps) if show else contextlib.nullcontext()
    fault_point("run.start")
    try:
        if resume_from is None and run.held_out.at_ends:
            _evaluate(run, 0)  # where a fresh run starts from
        with bar as progress:
            task = progress.add_task(settings.mode, total=settings.max_steps, completed=run.start_step,
                                     info="") if progress is not None else None
            while run.state.step < settings.max_steps:
                _enter_stage(run)
                result = run.step(run.state.step, first=run.state.step == run.start_step)
                run.state = run.state.after_step(result, run.plan.global_batch)
                fault_point("step.end")
                guard.check(result, run.state)
                _after_step(run, result)
                if progress is not None:
                    rate = run.window.tokens_total / max(run.window.seconds, 1e-9)
                    progress.update(task, completed=run.state.step,
                                    info=f"loss {result.loss:.4f}  {rate:,.0f} tok/s")
        guard.check_trained(run.state, run.start_step, run.start_skipped)
        final = run.saver.finish(run.start_step < settings.max_steps, run.state)
    finally:
        run.metrics.close()
    if run.dist.main:
        plot_loss(run_dir)
    run.dist.barrier()
    fault_point("run.end")
    return {"step": run.state.step, "loss": run.state.loss if run.state.loss is not None else float("nan"),
            "final_model": str(final) if final else None, "tokens": run.window.tokens_total,
            "seconds": run.window.seconds, "skipped_steps": run.state.skipped_steps,
            "world_size": run.dist.world}


def _after_step(run: Run, result: Any) -> None:
    """Bookkeeping after an optimizer step: metrics, evaluation, checkpoint. The time the last
    two take is left out of the next window's rates (tokens/s, MFU, data wait)."""
    done = run.state.step
    run.window.add(result.loss, result.tokens, result.flops, result.data_s)
    if run.dist.main and run.window.due(done):
        record = run.window.take(done)
        run.metrics.log(done, {**record, "tokens": run.state.tokens,
                               "lr": run.step.scheduler.get_last_lr()[0],
                               "grad_norm": round(result.grad_norm, 6),
                               "samples": run.state.samples_consumed,
                               "skipped_steps": run.state.skipped_steps, **(result.extra or {})})
    last = done == run.settings.max_steps and run.held_out.at_ends
    if run.held_out.due(done) or last:
        _evaluate(run, done)
    if run.saver.due(done):
        started = time.perf_counter()
        run.saver.save(run.state)
        run.window.exclude(time.perf_counter() - started)


def _evaluate(run: Run, step: int) -> None:
    """Held-out rows and text (evaluation.py), logged at `step` (collective: every rank)."""
    started = time.perf_counter()
    run.metrics.log(step, run.held_out(run.model, run.reader, run.plan.micro_batch_size,
                                       run.dist, run.plan.precision))
    run.window.exclude(time.perf_counter() - started)


def _build(resolved: Resolved) -> Run:
    """Processes, data, model, optimizer, schedule and the run's parts, resumed if asked."""
    from transformers.utils import logging as hf_logging

    from moai_llm.data import load_prepared
    from moai_llm.tokenizer import load_tokenizer

    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint are noise
    settings, plan, run_dir, resume_from = resolved.settings, resolved.plan, resolved.run_dir, resolved.resume_from
    dist = DistInfo(plan)
    if dist.world != plan.world_size:
        raise MoaiRunError(f"this process is one of {dist.world}, but the plan is for "
                           f"{plan.world_size} processes", hint="launch the run with `moai pretrain`/`moai sft`")
    if plan.tf32 and dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer = load_tokenizer(settings.tokenizer, trust_remote_code=settings.trust_remote_code)
    reader = RowReader(load_prepared(settings.prepared_dir), vocab=len(tokenizer),
                       where=f"--dataset {settings.prepared_dir}")
    held_out = _held_out(resolved, reader, tokenizer)
    if dist.main:
        remove_stale_temps(run_dir)
        prune_checkpoints(run_dir, settings.save_total_limit)
    model, wrapped = _model(resolved, tokenizer, dist)
    optimizer = build_optimizer(model, settings, dist.device)  # after sharding (FSDP2 DTensors)
    stages = _stages(resolved, model, optimizer)
    scheduler = build_scheduler(optimizer, resolved.schedule)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else -1
    kind, more = (PreferenceStep, {"preference": resolved.preference}) if resolved.preference else (TrainStep, {})
    step = kind(wrapped, optimizer, scheduler, reader, BatchOrder(held_out.train_rows, settings.seed),
                plan, dist, settings.max_grad_norm, pad_id, FlopCounter.from_config(model.config), **more)
    if stages is not None and plan.strategy == "fsdp2":
        step.after_backward = stages.mask_grads  # FSDP2's gradients bypass tensor hooks
    saver = CheckpointPolicy(run_dir, settings, plan, dist, wrapped, optimizer, scheduler,
                             generation_config_for(tokenizer, resolved.base.path if resolved.base else None),
                             base_model=resolved.base.name if resolved.base else None)
    state = _resume(resume_from, wrapped, optimizer, scheduler, plan, dist)
    state = dataclasses.replace(state, global_batch=plan.global_batch, world_size=dist.world,
                                max_steps=settings.max_steps)
    return Run(settings, plan, dist, reader, held_out, wrapped, step, saver,
               MetricsWriter(run_dir, enabled=dist.main, tensorboard=settings.tensorboard,
                             resume_step=state.step if resume_from is not None else None),
               LogWindow(settings.logging_steps, settings.max_steps, state.step,
                         device_peak_flops(plan, dist.device), dist.world),
               state=state, start_step=state.step, start_skipped=state.skipped_steps, stages=stages)


def _held_out(resolved: Resolved, reader: RowReader, tokenizer: Any) -> RunEvaluation:
    """What is evaluated every --eval-steps: held-out pairs (dpo), else rows and text."""
    settings = resolved.settings
    if resolved.preference is not None:
        return PairEvaluation(reader.num_rows, settings.eval_steps, resolved.preference,
                              resolved.plan.micro_batch_size)
    return RunEvaluation(reader.num_rows, settings.eval_steps, _eval_text(settings, tokenizer))


def _model(resolved: Resolved, tokenizer: Any, dist: DistInfo) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model, the model wrapped for the plan's processes): built with the plan's attention,
    checkpointing and compiled blocks, grown and given LoRA adapters as the settings say
    (adaptation.py), weights (or the adapter) loaded from `resume_from`."""
    from moai_llm.modeling import compile_blocks
    from moai_llm.training import adaptation

    settings, plan = resolved.settings, resolved.plan
    torch.manual_seed(settings.seed)  # same initial weights on every process and every rerun
    model = build_model(settings, resolved.model_config, tokenizer, plan, resolved.base,
                        resolved.growth).to(dist.device)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    if plan.lora:
        model = adaptation.with_lora(model, settings, resolved.growth)
    if resolved.resume_from is not None:
        load_model_weights(model, resolved.resume_from)  # before sharding: full tensors
    adaptation.hold_frozen(model, plan.lora)
    wrapped = wrap_distributed(model, plan, dist)
    if plan.compile:
        # After checkpointing and sharding (their hooks stay outside the graph). Static shapes:
        # the band of short documents changes width with the batch; a graph per width (a few)
        # ran faster on the CPU than one dynamic-shape graph (benchmarks/results/compile.md).
        compile_blocks(wrapped, dynamic=False)
    return model, wrapped


def _stages(resolved: Resolved, model: torch.nn.Module, optimizer: Any) -> StageController | None:
    """The stage controller of `--stages` (None without a stage other than "all"); made after
    the optimizer, while every parameter still trains."""
    settings = resolved.settings
    if not settings.stages:
        return None
    new_rows = resolved.growth.new_rows if resolved.growth else None
    stages = parse_stages(settings.stages, new_rows, settings.max_steps)
    if all(s.name == "all" for s in stages):
        return None
    return StageController(model, optimizer, stages, new_rows)


def _enter_stage(run: Run) -> None:
    """Put the model in the stage of the step about to run; a DDP wrapper is rebuilt when the
    trainable parameters changed (DDP fixes its parameter set when it is made)."""
    if run.stages is None or not run.stages.apply(run.state.step):
        return
    if run.plan.strategy != "ddp" or run.dist.world <= 1:
        return
    import gc

    module = unwrap(run.model)
    run.model = run.step.model = run.saver.wrapped = None  # the old wrapper's hooks go with it
    gc.collect()
    run.model = run.step.model = run.saver.wrapped = wrap_distributed(module, run.plan, run.dist)
    run.step.params = list(run.model.parameters())


def _eval_text(settings: TrainSettings, tokenizer: Any) -> Any:
    """--eval-text packed into rows of the run's length (None without it); every process
    reads the same text and packs the same rows."""
    if not settings.eval_text:
        return None
    from moai_llm.eval.text import prepare_eval_text

    return prepare_eval_text(list(settings.eval_text), tokenizer, settings.seq_len,
                             text_column=settings.eval_text_column)


def _resume(checkpoint: Path | None, wrapped: Any, optimizer: Any, scheduler: Any, plan: Plan,
            dist: DistInfo) -> TrainerState:
    """The trainer state to continue from: a fresh one, or the checkpoint's (optimizer,
    scheduler and RNG restored)."""
    if checkpoint is None:
        return TrainerState()
    load_optimizer_state(wrapped, optimizer, load_optimizer_file(checkpoint), plan)
    # the launcher checked that the global batch matches (launcher/resume.check_global_batch)
    state = TrainerState.from_json(load_trainer_state(checkpoint, scheduler, dist.rank))
    if dist.main:
        from moai_llm.progress import info

        info(f"resuming from {checkpoint} (step {state.step}, "
             f"{state.samples_consumed} samples consumed)")
    return state
