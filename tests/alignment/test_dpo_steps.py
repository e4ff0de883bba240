"""The phase-1 pieces composed as the training loop will compose them: prepared finance pairs,
the reference's stored log-probs, the policy's log-probs from hidden states and the DPO loss.
At the start the policy is the reference, so the loss is exactly log 2 and every margin 0; a
few AdamW steps on the pairs make the chosen answers more likely than the rejected ones. With
LoRA the reference is the base with the adapter disabled, computed on the same peft model."""

from __future__ import annotations

import math

import pytest
import torch

from moai_llm import corpora
from moai_llm.alignment.logprobs import model_pair_logprobs
from moai_llm.alignment.pair_losses import PreferenceObjective, preference_loss
from moai_llm.alignment.reference import reference_logprobs
from moai_llm.data.prepare import prepare_dataset
from moai_llm.data.store import load_prepared


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tokenizer_dir):
    import json

    root = tmp_path_factory.mktemp("dpo_pairs")
    (root / "p.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in corpora.finance_pairs("train")[:24]))
    prepare_dataset([str(root / "p.jsonl")], tokenizer_dir, 1024, root / "prepared", "preference")
    return root / "prepared"


def _batches(prepared, rows_per_batch=4):
    rows = load_prepared(prepared).with_format("numpy")
    for start in range(0, len(rows), rows_per_batch):
        part = rows[start:start + rows_per_batch]
        batch = {k: torch.as_tensor(part[k]).long() for k in ("input_ids", "labels", "position_ids")}
        yield batch | {k: [list(map(int, v)) for v in part[k]] for k in ("pair_index", "pair_role")}


def _epoch_means(epoch):
    return tuple(sum(column) / len(column) for column in zip(*epoch, strict=True))


def _train(model, params, prepared, ref, steps):
    objective = PreferenceObjective("sigmoid", beta=0.5)
    opt = torch.optim.AdamW(params, lr=2e-3)
    history = []  # per epoch over the pairs: (loss, margin, accuracy) of each batch
    for _ in range(steps):
        history.append([])
        for batch in _batches(prepared):
            lp = model_pair_logprobs(model, batch, chunk_size=256)
            out = preference_loss(objective, lp.chosen, lp.rejected, lp.chosen_tokens, lp.rejected_tokens,
                                  ref.chosen[lp.pair_ids], ref.rejected[lp.pair_ids])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            history[-1].append((out.loss.item(), out.margins.mean().item(), out.accuracy.mean().item()))
    return history


def test_dpo_from_the_reference_starts_at_log_2_and_learns_the_pairs(model_dir, pairs, tmp_path):
    import shutil

    from moai_llm.alignment.reference import reference_key
    from moai_llm.modeling import MoaiForCausalLM

    data = tmp_path / "prepared"
    shutil.copytree(pairs, data)
    model = MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = reference_logprobs(model, data, reference_key(model_dir))
    model.train()
    history = _train(model, model.parameters(), data, ref, steps=8)
    assert history[0][0][0] == pytest.approx(math.log(2), abs=1e-5) and history[0][0][1] == pytest.approx(0, abs=1e-5)
    loss, margin, accuracy = _epoch_means(history[-1])
    assert loss < 0.3 and margin > 1.0 and accuracy >= 0.9, history[-1]


def test_with_lora_the_disabled_adapter_is_the_reference(model_dir, pairs, tmp_path):
    import shutil

    from peft import LoraConfig, get_peft_model

    from moai_llm.modeling import MoaiForCausalLM

    data = tmp_path / "prepared"
    shutil.copytree(pairs, data)
    model = get_peft_model(MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    ref = reference_logprobs(model, data, "base")
    model.train()
    history = _train(model, [p for p in model.parameters() if p.requires_grad], data, ref, steps=8)
    assert history[0][0][0] == pytest.approx(math.log(2), abs=1e-5)  # B = 0: the adapter changes nothing yet
    loss, margin, accuracy = _epoch_means(history[-1])
    assert loss < 0.4 and margin > 0.5 and accuracy >= 0.9, history[-1]
