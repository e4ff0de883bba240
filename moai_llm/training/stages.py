"""Staged training for a grown vocabulary: first only the new embedding rows, then everything.

`--stages "new-embeddings:200,all"` trains, for 200 optimizer steps, only the rows of
`embed_tokens` and `lm_head` that belong to the new tokens (the recipe Korean teams published
for expanded-vocabulary models, e.g. EEVE), then every parameter until the end of the run. The
new tokens learn to fit a model that does not move under them, so what the base model knew is
not disturbed by the noisy early gradients of freshly initialised rows.

How a stage is applied, chosen so that the state is a pure function of the step (exact resume
across the boundary) and the optimizer needs no rebuilding:

- "new-embeddings": every parameter other than the embedding (and an untied lm_head) gets
  `requires_grad=False`, so it has no gradient and AdamW neither updates nor decays it and
  keeps no state for it. In the embedding and lm_head a gradient hook zeroes every row
  outside the new tokens; with zero gradients and zero moments AdamW's update of those rows
  is exactly zero, and weight decay is set to 0 in every param group for the stage (decoupled
  decay would otherwise shrink the old rows): old rows stay bit-identical.
- "all": the parameters that were trainable when the controller was made train again, hooks
  are removed, weight decay returns to each group's configured value, and at the first step of
  the stage the optimizer state of the embedding and lm_head is cleared, so every parameter
  starts the stage as a fresh AdamW (the old rows' moments were never filled).

    >>> stages = parse_stages("new-embeddings:200,all", new_rows=range(32000, 32768))
    >>> [(s.name, s.steps) for s in stages]
    [('new-embeddings', 200), ('all', None)]
    >>> stage_at(stages, 199).name, stage_at(stages, 200).name
    ('new-embeddings', 'all')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moai_llm.errors import MoaiInputError

FLAG = "--stages"
STAGES = ("new-embeddings", "all")
_DECAY_KEY = "configured_weight_decay"  # kept in each param group (and so in optimizer checkpoints)


@dataclass(frozen=True)
class Stage:
    name: str          # "new-embeddings" or "all"
    steps: int | None  # optimizer steps in this stage; None for the last stage: until the end
    start: int = 0     # first step (0-based) of the stage


def parse_stages(text: str | None, new_rows: range | None = None, max_steps: int | None = None) -> list[Stage]:
    """The stages of `--stages` ("new-embeddings:200,all"), validated.

    `new_rows`: the ids of the tokens the vocabulary grew by (empty or None: it did not grow,
    and a "new-embeddings" stage is refused). `max_steps`: the run's length, when known, which
    the fixed-length stages must leave room in. An empty or None `text` is one "all" stage.
    """
    if text is None or not text.strip():
        return [Stage("all", None, 0)]
    parts = [p.strip() for p in text.split(",")]
    stages: list[Stage] = []
    start = 0
    for i, part in enumerate(parts):
        name, _, count = part.partition(":")
        name = name.strip()
        if name not in STAGES:
            raise MoaiInputError(f"{FLAG} {text}: unknown stage {name!r}", hint=f"stages are {', '.join(STAGES)}, "
                                 "e.g. --stages new-embeddings:200,all")
        last = i == len(parts) - 1
        if not count.strip():
            if not last:
                raise MoaiInputError(f"{FLAG} {text}: stage {name!r} needs a number of steps (name:STEPS); only "
                                     "the last stage may run until the end")
            steps = None
        else:
            try:
                steps = int(count)
            except ValueError:
                steps = 0
            if steps <= 0:
                raise MoaiInputError(f"{FLAG} {text}: {part!r} needs a positive whole number of steps")
        stages.append(Stage(name, steps, start))
        start += steps or 0
    if any(s.name == "new-embeddings" for s in stages) and not (new_rows is not None and len(new_rows) > 0):
        raise MoaiInputError(f"{FLAG} {text}: the vocabulary did not grow (the tokenizer has no tokens beyond the "
                             "base model's), so there are no new embedding rows to train first",
                             hint="drop --stages, or extend the tokenizer with `moai tokenizer extend`")
    if max_steps is not None and stages[-1].steps is None and start >= max_steps:
        raise MoaiInputError(f"{FLAG} {text}: the stages before the last take {start} steps, as many as the run's "
                             f"{max_steps} (--max-steps); nothing is left for the last stage")
    return stages


def stage_at(stages: list[Stage], step: int) -> Stage:
    """The stage optimizer step `step` (0-based) belongs to; after fixed stages end, the last one."""
    for stage in stages:
        if stage.steps is None or step < stage.start + stage.steps:
            return stage
    return stages[-1]


class StageController:
    """Puts a model (and its optimizer) in the state of the stage of a given step.

    Call `apply(step)` before every optimizer step (and once after loading a checkpoint);
    it returns True when it changed which parameters train (a DDP wrapper must then be
    rebuilt, since DDP fixes its parameter set when it is made). Under FSDP2 the gradient
    hooks do not see the reduce-scattered gradients: call `mask_grads()` after backward.

        controller = StageController(model, optimizer, stages, new_rows=range(32000, 32768))
        for step in range(start, max_steps):
            controller.apply(step)
            ...  # forward, backward, clip, optimizer.step()
    """

    def __init__(self, model: Any, optimizer: Any, stages: list[Stage], new_rows: range):
        self.model = model
        self.optimizer = optimizer
        self.stages = stages
        self.new_rows = new_rows
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        for group in optimizer.param_groups:
            group.setdefault(_DECAY_KEY, group.get("weight_decay", 0.0))
        self._hooks: list[Any] = []
        self._stage: str | None = None

    def matrices(self) -> list[Any]:
        """The embedding weight and, when untied, the lm_head weight."""
        embed = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings()
        out = [embed]
        if head is not None and head.weight is not embed:
            out.append(head.weight)
        return out

    def _row_mask(self, weight: Any) -> Any:
        """(rows, 1): 1 on the new tokens' rows, 0 elsewhere (a DTensor's shape is the global one)."""
        import torch

        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[self.new_rows.start:self.new_rows.stop] = 1
        return mask

    def apply(self, step: int) -> bool:
        """Configure the model and optimizer for the stage of `step`; True if the set of
        trainable parameters changed."""
        stage = stage_at(self.stages, step)
        if stage.name == "all" and stage.start == step and step > 0 and self._follows_new_embeddings(stage):
            for weight in self.matrices():
                self.optimizer.state.pop(weight, None)  # a fresh AdamW start for the whole model
        if stage.name == self._stage:
            return False
        self._stage = stage.name
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if stage.name == "new-embeddings":
            matrices = self.matrices()
            for p in self.model.parameters():
                p.requires_grad_(any(p is m for m in matrices))
            for weight in matrices:
                mask = self._row_mask(weight)
                self._hooks.append(weight.register_hook(lambda grad, mask=mask: grad * mask))
            for group in self.optimizer.param_groups:
                group["weight_decay"] = 0.0
        else:
            keep = {id(p) for p in self.trainable}
            for p in self.model.parameters():
                p.requires_grad_(id(p) in keep)
            for group in self.optimizer.param_groups:
                group["weight_decay"] = group.get(_DECAY_KEY, group.get("weight_decay", 0.0))
        return True

    def _follows_new_embeddings(self, stage: Stage) -> bool:
        before = [s for s in self.stages if s.start + (s.steps or 0) == stage.start and s is not stage]
        return any(s.name == "new-embeddings" for s in before)

    def mask_grads(self) -> None:
        """Zero the gradients of rows outside the new tokens in place (for wrappers such as FSDP2
        whose gradients bypass tensor hooks); a no-op outside the "new-embeddings" stage."""
        import torch

        if self._stage != "new-embeddings":
            return
        with torch.no_grad():
            for weight in self.matrices():
                grad = weight.grad
                if grad is None:
                    continue
                if hasattr(grad, "to_local"):  # a DTensor sharded by rows
                    from torch.distributed.tensor import distribute_tensor

                    grad.mul_(distribute_tensor(self._row_mask(grad), grad.device_mesh, grad.placements))
                else:
                    grad.mul_(self._row_mask(grad))
