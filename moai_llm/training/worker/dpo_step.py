"""`moai dpo`'s step and evaluation in the worker: the preference loss of packed pair rows.

`PreferenceStep` is the training step (step.py) with another loss: each micro-batch's rows hold
both sequences of their pairs (pair_index / pair_role per document); the policy's summed answer
log-probs come from the final hidden states through the chunked path (alignment/logprobs.py,
no full logits), handed to the model as its `loss_fn` for the micro-batch, so DDP, FSDP2, peft
and gradient checkpointing see an ordinary forward. The reference's log-probs are read from
the file the launcher stored (run.yaml `preference.reference_logprobs`), never computed here.

Normalisation: the loss is summed over pairs and divided by the pairs of the whole global batch
(all micro-batches, all processes), as the other modes divide by its labelled tokens; ORPO's
NLL term by the chosen answers' tokens of the global batch. Logged per step: the loss and,
over the step's pairs, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies
(TRL's names); with --eval-pairs, eval_pairs_accuracy and eval_pairs_margin.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from moai_llm.errors import MoaiRunError
from moai_llm.training.resolved import Preference
from moai_llm.training.worker.evaluation import RunEvaluation
from moai_llm.training.worker.step import TrainStep, autocast

STATS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def stored_logprobs(path: str | None, num_pairs: int) -> Any:
    """The reference log-probs the launcher stored (alignment.reference.ReferenceLogps)."""
    if path is None:
        return None
    from pathlib import Path

    from moai_llm.alignment.reference import load_reference_logprobs

    p = Path(path)
    found = load_reference_logprobs(p.parent.parent, p.stem, num_pairs)
    if found is None:
        raise MoaiRunError(f"{path}: the reference's log-probs are missing or do not match the pairs",
                           hint="launch the run again with `moai dpo` (it computes them)")
    return found


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    from moai_llm.alignment.logprobs import unwrap

    return unwrap(model)


class PreferenceStep(TrainStep):
    """TrainStep whose loss is the preference objective of `preference` (run.yaml's section)."""

    def __init__(self, *args: Any, preference: Preference, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.objective = preference.objective()
        self.reference = stored_logprobs(preference.reference_logprobs, preference.num_pairs)
        self.more_counts: list[float] = []
        self.stats = torch.zeros(len(STATS) + 1, dtype=torch.float64)

    def batches(self, step: int):
        """The micro-batches, counted in pairs (and chosen answer tokens, for ORPO's NLL)."""
        from moai_llm.alignment.logprobs import PairLayout, segment_ids, shifted_labels

        out, counts = super().batches(step)
        pairs = chosen_tokens = 0
        for b in out:
            pos, labels = b["position_ids"].cpu(), b["labels"].cpu()
            layout = PairLayout.from_rows(pos, b["pair_index"], b["pair_role"])
            seg = segment_ids(pos)
            per_doc = torch.bincount(seg[shifted_labels(labels, pos).reshape(-1) != -100],
                                     minlength=int(seg[-1]) + 1 if seg.numel() else 0)
            pairs += layout.pair_ids.numel()
            chosen_tokens += int(per_doc[layout.chosen.cpu()].sum())
        counts[0] = float(pairs)
        return out, [*counts, float(chosen_tokens)]

    def __call__(self, step: int, first: bool = False):
        self.stats.zero_()
        result = super().__call__(step, first)
        sums = self.dist.all_sum(self.stats.tolist())
        n = max(sums[-1], 1.0)
        result.extra = {name: round(v / n, 6) for name, v in zip(STATS, sums, strict=False)}
        return result

    def _loss_fn(self, b: dict, num_chosen_tokens: float):
        """The micro-batch's loss_fn(hidden, weight, labels, num_items_in_batch) for the model."""
        from moai_llm.alignment.logprobs import pair_logprobs
        from moai_llm.alignment.pair_losses import preference_loss

        def loss_fn(hidden, weight, _labels, num_items_in_batch=None):
            lp = pair_logprobs(hidden, weight, b["labels"], b["position_ids"], b["pair_index"], b["pair_role"],
                               int(self.plan.loss_chunk_size))
            ref = (None, None)
            if self.reference is not None:
                ids = lp.pair_ids.cpu()
                ref = (self.reference.chosen[ids], self.reference.rejected[ids])
            out = preference_loss(self.objective, lp.chosen, lp.rejected, lp.chosen_tokens, lp.rejected_tokens,
                                  *ref, num_pairs=num_items_in_batch, num_chosen_tokens=num_chosen_tokens)
            self.stats += torch.tensor([float(out.rewards_chosen.sum()), float(out.rewards_rejected.sum()),
                                        float(out.margins.sum()), float(out.accuracy.sum()),
                                        float(out.margins.numel())], dtype=torch.float64)
            return out.loss
        return loss_fn

    def _forward_backward(self, batches: list[dict], n_items: float, poison: bool = False) -> torch.Tensor:
        lm = _causal_lm(self.model)
        chosen_tokens = max(self.more_counts[0], 1.0) if self.more_counts else None
        loss_sum = torch.zeros((), device=self.dist.device, dtype=torch.float32)
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") \
                else self.model.no_sync()
            lm.loss_fn = self._loss_fn(b, chosen_tokens)
            try:
                with sync, autocast(self.dist.device, self.plan.precision):
                    out = self.model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                                     labels=b["labels"], num_items_in_batch=n_items)
                    # the loss is a share of the global batch's; DDP averages gradients over processes
                    loss = out.loss * self.dist.world
                    if poison:  # MOAI_FAULT_NAN_AT (faults.py)
                        loss = loss * float("nan")
                loss.backward()
            finally:
                lm.loss_fn = None
            loss_sum += out.loss.detach().float() if not poison else loss.detach().float()
        return loss_sum


class PairEvaluation(RunEvaluation):
    """--eval-pairs: the policy's preference accuracy and margin on held-out pairs every
    --eval-steps (DPO's implicit reward with a reference; the mean log-prob per answer token
    without), as `moai eval --pairs` reports them. No training rows are held out."""

    def __init__(self, num_rows: int, eval_steps: int, preference: Preference, micro_batch_size: int):
        super().__init__(num_rows, 0)
        self.eval_steps, self.preference, self.batch = eval_steps, preference, micro_batch_size
        self.reference = None
        if preference.eval_pairs and preference.eval_reference_logprobs:
            from moai_llm.data.store import read_manifest

            pairs = read_manifest(preference.eval_pairs)["preference"]["num_pairs"]
            self.reference = stored_logprobs(preference.eval_reference_logprobs, pairs)

    @property
    def at_ends(self) -> bool:
        return bool(self.preference.eval_pairs)

    def due(self, done: int) -> bool:
        return bool(self.preference.eval_pairs) and bool(self.eval_steps) and done % self.eval_steps == 0

    def __call__(self, model, reader, micro_batch_size, dist, precision) -> dict[str, Any]:
        if not self.preference.eval_pairs:
            return {}
        from moai_llm.eval.pair_accuracy import evaluate_pairs

        with autocast(dist.device, precision):
            found = evaluate_pairs(model, self.preference.eval_pairs, self.batch, self.preference.beta,
                                   self.reference)
        return {"eval_pairs_accuracy": round(found["accuracy"], 6), "eval_pairs_margin": round(found["margin"], 6)}
