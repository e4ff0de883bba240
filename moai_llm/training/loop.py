"""The training loop: a lean forward/backward/step over packed rows (DDP or FSDP2 when several
processes), with exact resume, NaN skipping, metrics and checkpoints.

Why not `transformers.Trainer` (docs/training.md has the measurements): moai needs the data
position as one number for exact resume, atomic `checkpoints/step-N/` folders that are Qwen3
model directories, the loss normalised by the labelled tokens of the whole global batch across
processes, NaN/inf steps skipped, and no per-step overhead beyond a bare loop. The loop is
~the bare loop plus one all-reduce of two numbers per step.

What one optimizer step does:
1. take this process's micro-batches of the step (`BatchOrder`),
2. count labelled tokens of the whole global batch (one all-reduce) = `num_items_in_batch`,
3. forward/backward each micro-batch under autocast (bf16 where the plan says so; weights stay
   fp32), syncing gradients only on the last one,
4. clip, check the loss is finite (else skip the step and warn), AdamW step, schedule step.

The worker / `launch_run` calls it with the settings and plan of a prepared run.yaml:

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.hardware.plan import Plan
    >>> from moai_llm.progress import set_quiet
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.training.runner import prepare_run
    >>> from moai_llm.training.settings import TrainSettings, resolve_settings
    >>> set_quiet(True)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = train_tokenizer(texts, d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    >>> s, reasons = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 2, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> spec = prepare_run(s, reasons)
    >>> settings, plan = TrainSettings.from_dict(spec["settings"]), Plan.from_dict(spec["plan"])
    >>> run_dir = settings.output_dir
    >>> result = train(settings, plan, run_dir, spec["model_config"], show_progress=False)
    >>> result["step"], result["skipped_steps"]
    (2, 0)
    >>> set_quiet(False)
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moai_llm.errors import MoaiRunError
from moai_llm.training.batches import BatchOrder, RowReader
from moai_llm.training.checkpoint import (
    load_model_weights,
    load_optimizer_file,
    load_trainer_state,
    remove_stale_temps,
    resolve_resume,
    save_checkpoint,
    write_final_model,
)
from moai_llm.training.metrics import MetricsWriter, flops_per_token, peak_flops, plot_loss
from moai_llm.training.model_setup import (
    build_model,
    build_optimizer,
    full_model_state,
    generation_config_for,
    load_optimizer_state,
    optimizer_state_for_save,
    unwrap,
    wrap_distributed,
)
from moai_llm.training.schedule import build_scheduler, make_schedule
from moai_llm.training.settings import TrainSettings


class DistInfo:
    """Rank, world size and device of this process (initialises torch.distributed if needed)."""

    def __init__(self, plan: Any):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and getattr(plan, "device", "cpu") == "cuda"
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if use_cuda else "gloo"
            torch.distributed.init_process_group(backend=backend, device_id=self.device if use_cuda else None)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(model, reader: RowReader, rows: range, micro: int, dist: DistInfo, precision: str) -> float:
    """Mean loss per labelled token over held-out rows. Every process runs the same number of
    forwards (FSDP2 needs all of them in each one); padding chunks count zero."""
    model.eval()
    total = count = 0.0
    chunks = [list(rows[i:i + micro]) for i in range(0, len(rows), micro)]
    per_rank = -(-len(chunks) // dist.world)
    mine = chunks[dist.rank * per_rank:(dist.rank + 1) * per_rank]
    mine = [(c, True) for c in mine] + [(chunks[0], False)] * (per_rank - len(mine))
    with torch.no_grad():
        for chunk, counts in mine:
            b = {k: v.to(dist.device) for k, v in reader.read(np.asarray(chunk)).items()}
            n = int((b["labels"][:, 1:] != -100).sum())
            with _autocast(dist.device, precision):
                out = model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                            labels=b["labels"], num_items_in_batch=max(n, 1))
            if counts and n:
                total += float(out.loss) * n
                count += n
    model.train()
    total, count = dist.all_sum([total, count])
    return total / max(count, 1)


def train(settings: TrainSettings, plan: Any, run_dir: str | Path, model_config: dict | None = None,
          show_progress: bool = True) -> dict[str, Any]:
    """Train per `settings` and `plan`; writes checkpoints, metrics and final_model to run_dir.

    Returns {"step", "loss", "final_model", "tokens", "seconds", "skipped_steps"}.
    Raises FirstStepOOM when the first step runs out of memory; MoaiRunError after too many
    non-finite losses in a row.
    """
    from transformers.utils import logging as hf_logging

    from moai_llm.data import load_prepared
    from moai_llm.hardware.launch import FirstStepOOM
    from moai_llm.tokenizer import load_tokenizer

    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint are noise
    run_dir = Path(run_dir)
    dist = DistInfo(plan)
    micro, accum = plan.micro_batch_size, plan.gradient_accumulation_steps
    global_batch = micro * accum * dist.world
    precision = plan.precision
    if getattr(plan, "tf32", False) and dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    tokenizer = load_tokenizer(settings.tokenizer)
    dataset = load_prepared(settings.prepared_dir)
    reader = RowReader(dataset)
    eval_rows = 0
    if settings.eval_steps and reader.num_rows > 1:
        eval_rows = max(1, min(256, reader.num_rows // 100))
    order = BatchOrder(reader.num_rows - eval_rows, settings.seed)

    torch.manual_seed(settings.seed)  # same initial weights on every process and every rerun
    model = build_model(settings, model_config, tokenizer, plan)
    model.to(dist.device)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    if dist.main:
        remove_stale_temps(run_dir)
    resume_from = resolve_resume(settings.resume, run_dir)
    if resume_from is not None:
        load_model_weights(model, resume_from)  # before sharding: full tensors
    ddp_model = wrap_distributed(model, plan, dist)
    optimizer = build_optimizer(model, settings, dist.device)  # after sharding (FSDP2 DTensors)
    schedule = make_schedule(settings.lr_scheduler, settings.max_steps, settings.warmup,
                             settings.stable, settings.decay, settings.min_lr_ratio)
    scheduler = build_scheduler(optimizer, schedule)
    start_step, state = 0, {"samples_consumed": 0, "skipped_steps": 0, "consecutive_nan": 0}
    if resume_from is not None:
        load_optimizer_state(ddp_model, optimizer, load_optimizer_file(resume_from), plan)
        state.update(load_trainer_state(resume_from, scheduler, dist.rank))
        start_step = int(state["step"])
        if state.get("global_batch") not in (None, global_batch):
            raise MoaiRunError(
                f"{resume_from} was trained with global batch {state['global_batch']}, this run "
                f"has {global_batch}: the data position would not match",
                hint="resume with the same --global-batch / batch settings",
            )
        if dist.main:
            from moai_llm.progress import info

            info(f"resuming from {resume_from} (step {start_step}, "
                 f"{state['samples_consumed']} samples consumed)")

    metrics = MetricsWriter(run_dir, enabled=dist.main, tensorboard=settings.tensorboard,
                            resume_step=start_step if resume_from is not None else None)
    cfg = unwrap(model).config
    fpt = flops_per_token(n_params, cfg.num_hidden_layers, cfg.hidden_size, settings.seq_len)
    peak = peak_flops(torch.cuda.get_device_name(dist.device)) if dist.device.type == "cuda" else None
    gen_config = generation_config_for(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else -1

    def checkpoint(step: int) -> None:
        sd = full_model_state(ddp_model, plan)
        opt_state = optimizer_state_for_save(ddp_model, optimizer, plan)
        save_checkpoint(run_dir, step, unwrap(model), settings.tokenizer, opt_state, scheduler,
                        {**state, "global_batch": global_batch, "world_size": dist.world},
                        keep=settings.save_total_limit, rank=dist.rank, generation_config=gen_config,
                        model_state=sd)

    from moai_llm.progress import progress_bar

    bar = progress_bar(unit="step") if (dist.main and show_progress) else contextlib.nullcontext()
    t_start = time.perf_counter()
    window_tokens, window_t0 = 0, time.perf_counter()
    window_loss, window_steps = 0.0, 0  # logged loss = mean over the logging window, as Trainer does
    last_loss, tokens_total = float("nan"), 0
    with bar as progress:
        task = progress.add_task(settings.mode, total=settings.max_steps, completed=start_step,
                                 info="") if progress is not None else None
        for step in range(start_step, settings.max_steps):
            batches = order.micro_batches(step, global_batch, micro, dist.rank, dist.world)
            batches = [{k: v.to(dist.device, non_blocking=True) for k, v in reader.read(rows).items()}
                       for rows in batches]
            local = [float(sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)),
                     float(sum(int((b["input_ids"] != pad_id).sum()) for b in batches))]
            n_items, real_tokens = dist.all_sum(local)
            loss_sum = torch.zeros((), device=dist.device, dtype=torch.float32)
            try:
                for i, b in enumerate(batches):
                    sync = i == len(batches) - 1
                    ctx = ddp_model.no_sync() if (not sync and hasattr(ddp_model, "no_sync")) else contextlib.nullcontext()
                    with ctx, _autocast(dist.device, precision):
                        out = ddp_model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                                        labels=b["labels"], num_items_in_batch=max(n_items, 1.0))
                        # DDP averages gradients over processes; the loss is already a share of
                        # the global sum, so scale back up to get the global-token mean.
                        loss = out.loss * dist.world
                    loss.backward()
                    loss_sum += out.loss.detach().float()
                grad_norm = torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), settings.max_grad_norm)
            except torch.OutOfMemoryError as exc:
                if step == start_step:
                    raise FirstStepOOM(f"out of memory at the first step with micro batch {micro}") from exc
                raise
            loss_value, = dist.all_sum([float(loss_sum)])
            grad_value = float(grad_norm)
            finite = math.isfinite(loss_value) and math.isfinite(grad_value)
            if finite:
                optimizer.step()
                state["consecutive_nan"] = 0
                last_loss = loss_value
                window_loss, window_steps = window_loss + loss_value, window_steps + 1
            else:
                state["skipped_steps"] += 1
                state["consecutive_nan"] += 1
                if dist.main:
                    from moai_llm.progress import warn

                    warn(f"step {step + 1}: loss {loss_value} / grad norm {grad_value} is not finite; "
                         f"step skipped ({state['consecutive_nan']} in a row)")
                if state["consecutive_nan"] >= settings.max_consecutive_nan:
                    metrics.close()
                    raise MoaiRunError(
                        f"the loss or gradient norm was NaN/inf for {state['consecutive_nan']} steps in a row (up to "
                        f"step {step + 1}); training stopped, checkpoints so far are kept",
                        hint="lower --learning-rate, use more warmup, or check the data",
                    )
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # a skipped first step makes torch warn about order
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            state["samples_consumed"] = (step + 1) * global_batch
            tokens_total += int(real_tokens)
            window_tokens += int(real_tokens)
            done = step + 1
            if dist.main and (done % settings.logging_steps == 0 or done == settings.max_steps or done == start_step + 1):
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t0, 1e-9)
                window_tokens, window_t0 = 0, now
                mean_loss = window_loss / window_steps if window_steps else loss_value
                window_loss, window_steps = 0.0, 0
                record = {"loss": round(mean_loss, 6), "lr": scheduler.get_last_lr()[0],
                          "grad_norm": round(grad_value, 6), "tokens_per_s": round(tps, 1),
                          "tokens": tokens_total, "samples": state["samples_consumed"],
                          "skipped_steps": state["skipped_steps"],
                          "elapsed_s": round(now - t_start, 2), "cpu_s": round(time.process_time(), 2)}
                if peak:
                    record["mfu"] = round(tps * fpt / (peak * dist.world), 4)
                metrics.log(done, record)
            if progress is not None:
                el = time.perf_counter() - t_start
                progress.update(task, completed=done,
                                info=f"loss {loss_value:.4f}  {tokens_total / max(el, 1e-9):,.0f} tok/s")
            if settings.eval_steps and done % settings.eval_steps == 0 and eval_rows:
                ev = evaluate(ddp_model, reader, range(reader.num_rows - eval_rows, reader.num_rows),
                              micro, dist, precision)
                metrics.log(done, {"eval_loss": round(ev, 6)})
            if settings.save_steps and done % settings.save_steps == 0 and done < settings.max_steps:
                checkpoint(done)

    if start_step < settings.max_steps:
        checkpoint(settings.max_steps)
    final = None
    sd = full_model_state(ddp_model, plan)
    if dist.main:
        final = write_final_model(run_dir, unwrap(model), settings.tokenizer, gen_config, model_state=sd)
    metrics.close()
    if dist.main:
        plot_loss(run_dir)
    if dist.world > 1:
        torch.distributed.barrier()
    return {"step": settings.max_steps, "loss": last_loss, "final_model": str(final) if final else None,
            "tokens": tokens_total, "seconds": time.perf_counter() - t_start,
            "skipped_steps": state["skipped_steps"], "world_size": dist.world}

