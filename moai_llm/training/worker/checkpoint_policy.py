"""When a run saves, and what: the checkpoint policy of the training loop.

- every `--save-steps` steps: `checkpoints/step-N/` (not at the last step: the end saves it),
- at the end of a run that trained at least one step: `checkpoints/step-<max_steps>/`,
- at the end: `final_model/` (a Qwen3 model directory with the tokenizer and chat defaults, and
  `training_state.json`: the step and loss its weights are from, which is how a resumed run
  knows it is complete); a LoRA run first writes `final_adapter/` (the adapter alone), then
  merges the adapter into the base and writes that as final_model/,
- keep the last `--save-total-limit` checkpoints,
- never write weights holding NaN/inf: a checkpoint or final_model/ whose weights are not
  finite stops the run (exit 1) naming the step and a tensor; what was saved before is kept.

A checkpoint holds what exact resume needs: weights, optimizer and scheduler state, every
process's RNG, and the trainer state (trainer_state.py: step, samples consumed = data
position, NaN counters, global batch, world size, max steps). The step saved is the state's
own: no other number can end up in trainer_state.json. Writing it is checkpoint.py's (atomic,
all ranks call).

    >>> policy = CheckpointPolicy.__new__(CheckpointPolicy)    # the schedule alone
    >>> policy.save_steps, policy.max_steps = 500, 1200
    >>> [s for s in range(1, 1201) if policy.due(s)]
    [500, 1000]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moai_llm.hardware.plan import Plan
from moai_llm.training.worker.checkpoint import FINAL_STATE, save_checkpoint, write_final_model
from moai_llm.training.worker.distributed import (
    DistInfo,
    full_model_state,
    optimizer_state_for_save,
    unwrap,
)
from moai_llm.training.worker.trainer_state import TrainerState


class CheckpointPolicy:
    """Saves checkpoints and the final model of one run (call `due`/`save` each step, `finish`
    once)."""

    def __init__(self, run_dir: Path, settings: Any, plan: Plan, dist: DistInfo,
                 wrapped: Any, optimizer: Any, scheduler: Any, generation_config: Any,
                 base_model: str | None = None):
        from moai_llm.hardware.checks import checkpoint_bytes

        self.run_dir, self.plan, self.dist = run_dir, plan, dist
        self.save_steps, self.max_steps = settings.save_steps, settings.max_steps
        self.keep, self.tokenizer = settings.save_total_limit, settings.tokenizer
        self.wrapped, self.optimizer, self.scheduler = wrapped, optimizer, scheduler
        self.generation_config = generation_config
        self.base_model = base_model  # the --pretrained-model name (a LoRA adapter names its base)
        if self.base_model and Path(self.base_model).is_dir():  # an adapter names its base for chat
            self.base_model = str(Path(self.base_model).resolve())
        model = unwrap(wrapped)
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.sizes = checkpoint_bytes(params, trainable, settings.tokenizer)  # for a full disk's message

    def due(self, done: int) -> bool:
        return bool(self.save_steps) and done % self.save_steps == 0 and done < self.max_steps

    def check_finite(self, state: TrainerState, what: str) -> None:
        """Raise MoaiRunError on every rank when any rank's weights hold NaN/inf (collective)."""
        from moai_llm.errors import MoaiRunError
        from moai_llm.weights import non_finite_tensor

        name = non_finite_tensor(unwrap(self.wrapped).named_parameters())
        bad, = self.dist.all_sum([0.0 if name is None else 1.0])
        if bad:
            raise MoaiRunError(
                f"step {state.step}: the weights hold NaN/inf values ({name or 'on another process'}); "
                f"{what} not written, checkpoints saved before are kept",
                hint="lower --learning-rate, use more warmup, check the data, or resume from an earlier checkpoint")

    def save(self, state: TrainerState, checked: bool = False) -> None:
        """checkpoints/step-`state.step` (collective: every rank calls); `checked`: the
        weights were just found finite."""
        if not checked:
            self.check_finite(state, f"checkpoints/step-{state.step}")
        weights = full_model_state(self.wrapped, self.plan)
        optimizer_state = optimizer_state_for_save(self.wrapped, self.optimizer, self.plan)
        save_checkpoint(self.run_dir, state.step, unwrap(self.wrapped), self.tokenizer, optimizer_state,
                        self.scheduler, state.to_json(), keep=self.keep, rank=self.dist.rank,
                        generation_config=self.generation_config, model_state=weights,
                        needed=self.sizes["checkpoint"])

    def finish(self, trained: bool, state: TrainerState) -> Path | None:
        """The last checkpoint (when this run trained) and final_model/; returns its path on
        rank 0."""
        self.check_finite(state, "final_model/")
        if trained:
            self.save(state, checked=True)
        weights = full_model_state(self.wrapped, self.plan)
        if not self.dist.main:
            return None
        record = {"step": state.step, "loss": state.loss, "samples_consumed": state.samples_consumed,
                  "tokens": state.tokens, "max_steps": state.max_steps}
        model = unwrap(self.wrapped)
        if hasattr(model, "peft_config"):
            model = self._adapter_then_merged(model)
        return write_final_model(self.run_dir, model, self.tokenizer,
                                 self.generation_config, model_state=weights,
                                 needed=self.sizes["final_model"],
                                 extra={FINAL_STATE: json.dumps(record, indent=2)})

    def _adapter_then_merged(self, model: Any) -> Any:
        """final_adapter/ (written before merging: the adapter as trained), then the base with
        the adapter folded in, in fp32 on the CPU: a plain model for final_model/."""
        import torch

        from moai_llm.adapters import merge, save_adapter
        from moai_llm.faults import fault_point
        from moai_llm.training.adaptation import frozen_to_fp32
        from moai_llm.training.worker.checkpoint import FINAL_ADAPTER

        save_adapter(model, self.run_dir / FINAL_ADAPTER, self.base_model, self.tokenizer)
        fault_point("final.after_adapter")
        from moai_llm.training.lora import is_4bit

        if is_4bit(model):  # QLoRA: the base read again in fp32 (not dequantized nf4), the adapter merged in
            from moai_llm.adapters import load_adapter_model

            return load_adapter_model(self.run_dir / FINAL_ADAPTER, dtype=torch.float32)
        model.to(torch.device("cpu"))
        frozen_to_fp32(model)
        return merge(model)
