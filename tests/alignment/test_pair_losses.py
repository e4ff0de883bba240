"""moai's preference losses equal the references: TRL's DPOTrainer (sigmoid, IPO) and ORPOTrainer
on the same model, batch and beta, loss and gradients within 1e-5; SimPO equals its paper's
formula on full logits; packed and unpacked batches give the same loss and gradients.

The TRL side runs stock transformers' Qwen3ForCausalLM; the moai side loads the same folder in
MoaiForCausalLM, packs the same sequences into rows with moai's row builder and computes the
sequence log-probs from hidden states (alignment/logprobs.py), never with full logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moai_llm.alignment.logprobs import model_pair_logprobs
from moai_llm.alignment.pair_losses import PreferenceObjective, preference_loss
from moai_llm.data.preference import PairDoc, build_pair_rows

TOL = 1e-5


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer_dir):
    from random_models import write_random_model

    root = tmp_path_factory.mktemp("pref_models")
    policy = write_random_model(root / "policy", tokenizer_dir, hidden_size=64, num_layers=2, context_length=256, seed=0)
    reference = write_random_model(root / "reference", tokenizer_dir, hidden_size=64, num_layers=2, context_length=256, seed=1)
    return policy, reference, tokenizer_dir


def _pairs(n: int, one_token_prompt: bool = False) -> list[dict]:
    if one_token_prompt:
        return [{"prompt": "Q", "chosen": f" It is {2 * i}.", "rejected": f" Maybe {2 * i + 1}, I think so."} for i in range(n)]
    return [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"Maybe {2 * i + 1}, I think so."}]} for i in range(n)]


def packed_batch(sequences: list[tuple[list[int], list[int], list[int], list[int]]], pairs_per_row: int) -> dict:
    """Rows built by moai's preference row builder from (chosen ids, chosen labels, rejected ids,
    rejected labels) per pair, `pairs_per_row` pairs in each row."""
    docs = [PairDoc(torch.tensor(ci + ri).numpy(), torch.tensor(cl + rl).numpy(), 0, chosen_len=len(ci), pair=p)
            for p, (ci, cl, ri, rl) in enumerate(sequences)]
    rows = [docs[i:i + pairs_per_row] for i in range(0, len(docs), pairs_per_row)]
    capacity = max(sum(len(d.ids) for d in row) for row in rows) + 3  # a padding tail, as real rows have
    built = list(build_pair_rows(rows, capacity, pad_id=0))
    return {"input_ids": torch.tensor(np.stack([b[0] for b in built])).long(), "labels": torch.tensor(np.stack([b[1] for b in built])).long(),
            "position_ids": torch.tensor(np.stack([b[2] for b in built])).long(),
            "pair_index": [b[3].tolist() for b in built], "pair_role": [b[4].tolist() for b in built]}


def _dpo_sequences(batch: dict) -> list:
    """TRL's DPO batch (chosen rows, then rejected rows, right-padded) as per-pair sequences."""
    n = batch["input_ids"].shape[0] // 2
    seqs = []
    for k in range(2 * n):
        keep = batch["attention_mask"][k].bool()
        ids = batch["input_ids"][k][keep]
        labels = torch.where(batch["completion_mask"][k][keep].bool(), ids, -100)
        seqs.append((ids.tolist(), labels.tolist()))
    return [(*seqs[i], *seqs[n + i]) for i in range(n)]


def _orpo_sequences(batch: dict) -> list:
    out = []
    for i in range(batch["chosen_input_ids"].shape[0]):
        seq = []
        for side in ("chosen", "rejected"):
            keep = batch[f"{side}_attention_mask"][i].bool()
            seq += [batch[f"{side}_input_ids"][i][keep].tolist(), batch[f"{side}_labels"][i][keep].tolist()]
        out.append(tuple(seq))
    return out


def _moai_loss(folders, sequences, objective, pairs_per_row=2):
    from moai_llm.modeling import MoaiForCausalLM

    policy_dir, reference_dir, _ = folders
    policy = MoaiForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    batch = packed_batch(sequences, pairs_per_row)
    ref = None
    if objective.needs_reference:
        reference = MoaiForCausalLM.from_pretrained(reference_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            ref = model_pair_logprobs(reference, batch)
    lp = model_pair_logprobs(policy, batch, chunk_size=7)  # several chunks
    order = torch.argsort(lp.pair_ids)
    pick = lambda t: None if t is None else t[order]  # noqa: E731  pairs in dataset order
    out = preference_loss(objective, pick(lp.chosen), pick(lp.rejected), pick(lp.chosen_tokens),
                          pick(lp.rejected_tokens), None if ref is None else ref.chosen[torch.argsort(ref.pair_ids)],
                          None if ref is None else ref.rejected[torch.argsort(ref.pair_ids)])
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None}


def _assert_same(moai_out, moai_grads, trl_loss, trl_model):
    assert abs(moai_out.loss.item() - trl_loss.item()) <= TOL, (moai_out.loss.item(), trl_loss.item())
    trl_grads = {n.removeprefix("base_model.model."): p.grad for n, p in trl_model.named_parameters() if p.grad is not None}
    assert moai_grads.keys() == trl_grads.keys()
    worst = max((moai_grads[n] - trl_grads[n]).abs().max().item() for n in trl_grads)
    assert worst <= TOL, worst
    assert max(g.abs().max().item() for g in trl_grads.values()) > 100 * TOL  # gradients that could differ


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_dpo_and_ipo_equal_trl_dpo_trainer(folders, loss, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    policy_dir, reference_dir, tok = folders
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=[loss], beta=0.1, per_device_train_batch_size=4,
                     report_to=[], use_cpu=True, bf16=False, max_length=None, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(_pairs(4)),
                         processing_class=AutoTokenizer.from_pretrained(tok))
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    out, grads = _moai_loss(folders, _dpo_sequences(batch), PreferenceObjective(loss, beta=0.1))
    _assert_same(out, grads, trl_loss, trainer.model)
    metrics = trainer._metrics["train"]
    assert abs(out.margins.mean().item() - metrics["rewards/margins"][-1]) <= TOL
    assert abs(out.rewards_chosen.mean().item() - metrics["rewards/chosen"][-1]) <= TOL


def test_orpo_equals_trl_orpo_trainer(folders, tmp_path):
    """TRL's ORPO takes the NLL over prompt and answer, moai (as the ORPO paper) over the answer:
    with a one-token prompt the two are the same tokens, so loss and gradients must agree."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    policy_dir, _, tok = folders
    tokenizer = AutoTokenizer.from_pretrained(tok)
    assert len(tokenizer("Q")["input_ids"]) == 1
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    args = ORPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=4, report_to=[],
                      use_cpu=True, bf16=False, max_length=128)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(_pairs(4, one_token_prompt=True)),
                          processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    trl_loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch)
    trl_loss.backward()
    out, grads = _moai_loss(folders, _orpo_sequences(batch), PreferenceObjective("orpo", beta=0.1))
    _assert_same(out, grads, trl_loss, trainer.model)
    assert abs(out.nll.item() - float(metrics["nll_loss"])) <= TOL


def test_orpo_odds_ratio_term_equals_trl_with_any_prompt():
    """The odds-ratio term alone, on log-probs of any value, against TRL's own function."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    torch.manual_seed(0)
    n_c, n_r = torch.tensor([3, 5, 9]), torch.tensor([4, 4, 2])
    chosen = (-torch.rand(3, dtype=torch.float64) * 3 * n_c).requires_grad_()
    rejected = (-torch.rand(3, dtype=torch.float64) * 3 * n_r).requires_grad_()
    trl = type("T", (), {"beta": 0.25, "accelerator": type("A", (), {"device": "cpu"})()})()
    losses = ORPOTrainer.odds_ratio_loss(trl, chosen / n_c, rejected / n_r)[0]
    g_trl = torch.autograd.grad(-losses.mean(), (chosen, rejected))
    out = preference_loss(PreferenceObjective("orpo", beta=0.25), chosen, rejected, n_c, n_r)
    term = out.loss - (-chosen.sum() / n_c.sum())
    g_moai = torch.autograd.grad(term, (chosen, rejected))
    assert abs(term.item() - (-losses.mean()).item()) <= TOL
    assert all(torch.allclose(a.double(), b, atol=TOL) for a, b in zip(g_moai, g_trl, strict=True))


def test_simpo_equals_the_paper_formula_on_full_logits(folders):
    """SimPO (Meng et al. 2024, eq. 6): -log sigmoid(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma),
    with log pi from plain full logits of each sequence alone."""
    from moai_llm.modeling import MoaiForCausalLM

    sequences = _synthetic_sequences(5)
    out, _ = _moai_loss(folders, sequences, PreferenceObjective("simpo", beta=2.0, simpo_gamma=0.8), pairs_per_row=3)
    model = MoaiForCausalLM.from_pretrained(folders[0], dtype=torch.float32)
    terms = []
    with torch.no_grad():
        for ci, cl, ri, rl in sequences:
            avg = []
            for ids, labels in ((ci, cl), (ri, rl)):
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
                target = torch.tensor(labels[1:])
                keep = target != -100
                avg.append(logp[keep].gather(1, target[keep, None]).sum() / keep.sum())
            terms.append(-torch.nn.functional.logsigmoid(2.0 * avg[0] - 2.0 * avg[1] - 0.8))
    assert abs(out.loss.item() - torch.stack(terms).mean().item()) <= TOL


def _synthetic_sequences(n: int) -> list:
    gen = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        prompt = torch.randint(4, 300, (5 + i,), generator=gen).tolist()
        seq = []
        for extra in (3 + i % 3, 6 - i % 2):
            answer = torch.randint(4, 300, (extra,), generator=gen).tolist()
            seq += [prompt + answer, [-100] * len(prompt) + answer]
        out.append(tuple(seq))
    return out


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo", "orpo"])
def test_packed_and_unpacked_batches_give_the_same_loss_and_gradients(folders, loss):
    sequences = _synthetic_sequences(6)
    objective = PreferenceObjective(loss)
    one, g_one = _moai_loss(folders, sequences, objective, pairs_per_row=1)
    many, g_many = _moai_loss(folders, sequences, objective, pairs_per_row=4)
    assert abs(one.loss.item() - many.loss.item()) <= 1e-6
    assert torch.equal(one.accuracy, many.accuracy)
    assert max((g_one[n] - g_many[n]).abs().max().item() for n in g_one) <= 1e-6
