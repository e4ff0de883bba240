"""Preference accuracy and margin of a model on held-out pairs: `moai eval MODEL --pairs FILE`.

The pairs file is read like `moai data prepare --mode preference` reads it (every schema,
the model's own chat template, loss on the answers only) into a prepared dataset in a temporary
folder; the model's summed log-prob of each chosen and rejected answer comes from the same
chunked path as training (alignment/logprobs.py). Then, per pair, a reward for each answer:

- with `--reference DIR`: DPO's implicit reward, beta * (log pi(answer) - log ref(answer)), the
  figure TRL logs as rewards/* during DPO (the reference's log-probs are stored beside the
  temporary pairs and computed once per reference);
- without: the mean log-prob per answer token (nats), so that a longer answer is not
  penalised for its length; this compares any models on the same footing (SFT vs DPO).

accuracy = share of pairs whose chosen answer gets the higher reward; margin = mean of
(reward chosen - reward rejected).

    >>> import torch
    >>> summarize(torch.tensor([-4.0, -12.0]), torch.tensor([-6.0, -8.0]), torch.tensor([2, 3]), torch.tensor([2, 2]))
    {'pairs': 2, 'accuracy': 0.5, 'margin': 0.5, 'reward': 'mean log-prob per answer token', 'beta': None}
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError


def prepare_pairs(pairs_file: str, tokenizer_dir: str | Path, seq_len: int, workdir: Path) -> Path:
    """The pairs file as a prepared preference dataset in `workdir` (one per tokenizer)."""
    from moai_llm.data.prepare import prepare_dataset, tokenizer_hash

    if not Path(pairs_file).expanduser().exists():
        raise MoaiInputError(f"--pairs {pairs_file}: no such file", hint="pass a .jsonl/.json/.csv/.parquet file of pairs")
    tag = hashlib.blake2b(f"{tokenizer_hash(tokenizer_dir)}:{seq_len}".encode(), digest_size=6).hexdigest()
    out = workdir / f"pairs-{tag}"
    prepare_dataset([str(pairs_file)], tokenizer_dir, seq_len, out, "preference")
    return out


def summarize(chosen, rejected, chosen_tokens, rejected_tokens, ref_chosen=None, ref_rejected=None,
              beta: float | None = None) -> dict[str, Any]:
    """Accuracy and mean margin of per-pair rewards (see the module docstring)."""
    if ref_chosen is not None:
        reward_c, reward_r = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
        kind = "beta * (log-prob - reference log-prob)"
    else:
        reward_c, reward_r = chosen / chosen_tokens.clamp(min=1), rejected / rejected_tokens.clamp(min=1)
        kind, beta = "mean log-prob per answer token", None
    margins = reward_c - reward_r
    return {"pairs": int(margins.numel()), "accuracy": float((margins > 0).float().mean()),
            "margin": float(margins.mean()), "reward": kind, "beta": beta}


def reference_scores(reference: str, prepared: Path, policy_tokenizer: str | Path, device: str | None,
                     dtype: str | None, trust_remote_code: bool):
    """The reference's stored log-probs for these pairs (computed, with the model loaded, once)."""
    from moai_llm.alignment.reference import (
        check_reference_tokenizer,
        load_reference_logprobs,
        reference_key,
    )
    from moai_llm.data.store import read_manifest
    from moai_llm.inference.loading import load_for_chat, resolve_model_dir

    ref_dir, _ = resolve_model_dir(reference)
    check_reference_tokenizer(ref_dir, policy_tokenizer)  # also checked before any model is loaded
    key = reference_key(ref_dir)
    num_pairs = read_manifest(prepared)["preference"]["num_pairs"]
    if (found := load_reference_logprobs(prepared, key, num_pairs)) is not None:
        return found
    from moai_llm.alignment.reference import reference_logprobs

    model, _, _ = load_for_chat(reference, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                tokenizer_path=policy_tokenizer)
    try:
        return reference_logprobs(model, prepared, key, source=str(ref_dir))
    finally:
        del model


def evaluate_pairs(model, prepared: Path, batch_size: int, beta: float, reference=None) -> dict[str, Any]:
    """The record's "pairs" entry for `model` (already loaded) on the prepared pairs."""
    from moai_llm.alignment.reference import score_prepared

    scored = score_prepared(model, prepared, batch_rows=batch_size)
    ref = (reference.chosen, reference.rejected) if reference is not None else (None, None)
    return summarize(scored.chosen, scored.rejected, scored.chosen_tokens, scored.rejected_tokens, *ref, beta=beta)
