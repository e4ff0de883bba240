"""Scoring held-out text: the packed, fused path gives the figure a plain one-document-at-a-time
full-logits loop gives; bits per byte is measured on bytes (a grown tokenizer keeps the scale);
the training loop's state is left as it was; processes split the rows and agree."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from moai_llm.errors import MoaiInputError
from moai_llm.eval.scoring import score_rows
from moai_llm.eval.text import pack_texts


def _reference_nll(model, tokenizer_dir, docs, seq_len, stride):
    """One document at a time, no packing, no position_ids, full logits in float64: the
    textbook sliding-window loop (each token scored once, with the most context that fits)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    total, count = 0.0, 0
    for doc in docs:
        seq = [0] + tok.encode(doc, add_special_tokens=False).ids  # <|endoftext|> first
        done = 1  # tokens seq[1:done] are scored already
        while done < len(seq):
            end = min(len(seq), seq_len if done == 1 else done + stride)
            start = max(0, end - seq_len)
            with torch.no_grad():
                logits = model(torch.tensor([seq[start:end - 1]])).logits[0].double()
            logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(seq[start + 1:end])[:, None])[:, 0]
            total -= float(logp[done - start - 1:].sum())
            count += end - done
            done = end
    return total, count


@pytest.mark.parametrize("seq_len,stride,micro_batch", [(256, None, 4), (16, None, 3), (16, 5, 2)])
def test_packed_fused_scoring_equals_one_document_at_a_time(docs, moai_model, tokenizer_dir, seq_len, stride, micro_batch):
    text = pack_texts(docs, tokenizer_dir, seq_len=seq_len, stride=stride)
    got = score_rows(moai_model, text, micro_batch=micro_batch)
    want, count = _reference_nll(moai_model, tokenizer_dir, docs, seq_len, stride or seq_len - 1)
    assert got["tokens"] == count
    assert got["nll_nats"] == pytest.approx(want, rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(want / (math.log(2) * sum(len(d.encode()) for d in docs)), rel=1e-5)
    assert got["token_perplexity"] == pytest.approx(math.exp(want / count), rel=1e-4)


def test_a_smaller_stride_gives_more_context_so_a_different_figure(docs, moai_model, tokenizer_dir):
    wide = score_rows(moai_model, pack_texts(docs, tokenizer_dir, seq_len=16))
    narrow = score_rows(moai_model, pack_texts(docs, tokenizer_dir, seq_len=16, stride=4))
    assert wide["tokens"] == narrow["tokens"] and wide["bytes"] == narrow["bytes"]
    assert wide["nll_nats"] != narrow["nll_nats"]


def test_training_state_and_loss_function_are_restored(docs, moai_model, tokenizer_dir):
    from moai_llm.losses import create_loss_function

    model = copy.deepcopy(moai_model)
    focal = create_loss_function({"type": "focal", "params": {"gamma": 2.0}})
    model.loss_fn = focal
    model.train()
    text = pack_texts(docs, tokenizer_dir, seq_len=64)
    scores = score_rows(model, text, micro_batch=2)
    assert model.loss_fn is focal and model.training
    assert scores["nll_nats"] == pytest.approx(score_rows(moai_model, text)["nll_nats"], rel=1e-6)  # plain CE


def test_processes_split_the_rows_and_the_sum_is_the_whole(docs, moai_model, tokenizer_dir):
    text = pack_texts(docs * 3, tokenizer_dir, seq_len=32)
    assert len(text) >= 5
    whole = score_rows(moai_model, text, micro_batch=2)
    calls = []

    def record(values):  # what an all-reduce sees: this process's partial sums
        calls.append(values)
        return values

    parts = [score_rows(moai_model, text, micro_batch=2, rank=r, world_size=3, all_sum=record) for r in range(3)]
    assert len(calls) == 3
    assert sum(p["tokens"] for p in parts) == whole["tokens"]
    assert sum(p["nll_nats"] for p in parts) == pytest.approx(whole["nll_nats"], rel=1e-6)


def test_bits_per_byte_is_on_bytes_across_a_grown_tokenizer(model_dir, tokenizer_dir, tmp_path):
    """Same model, base tokenizer vs the base extended with 40 finance merges (learned on the
    train split) and embeddings grown to match, scored on held-out finance answers.

    What holds for any model: the denominator is the text's bytes, identical for both, while
    the token counts differ; both figures are finite and on one scale (here within 2x). What
    does not: equality. An untrained model pays about ln(V) nats per token whatever the token,
    so its bits per byte follow its token count (checked below); only a trained model's figure
    says how well it predicts the text."""
    from moai_llm import corpora
    from moai_llm.modeling import MoaiForCausalLM
    from moai_llm.tokenizer.extend import extend_tokenizer
    from moai_llm.tokenizer.model_vocab import grow_embeddings

    train = [r["output"] for r in corpora.finance_qa("train")]
    held = [r["output"] for r in corpora.finance_qa("heldout")]
    assert extend_tokenizer(tokenizer_dir, train, tmp_path / "ext", vocab_size=440)["vocab_size"] == 440
    base_model = MoaiForCausalLM.from_pretrained(model_dir).eval()
    grown = MoaiForCausalLM.from_pretrained(model_dir).eval()
    assert grow_embeddings(grown, 440)
    base = score_rows(base_model, pack_texts(held, tokenizer_dir, seq_len=256))
    ext = score_rows(grown, pack_texts(held, tmp_path / "ext", seq_len=256))
    assert base["bytes"] == ext["bytes"] == sum(len(d.encode()) for d in held)
    assert ext["tokens"] < base["tokens"] and ext["bytes_per_token"] > base["bytes_per_token"]
    for s in (base, ext):
        assert math.isfinite(s["bits_per_byte"]) and s["bits_per_byte"] > 0
        assert s["bits_per_byte"] == pytest.approx(s["nll_nats"] / (math.log(2) * s["bytes"]))
    ratio = ext["bits_per_byte"] / base["bits_per_byte"]
    assert 0.5 < ratio < 2.0
    per_token = (ext["nll_nats"] / ext["tokens"]) / (base["nll_nats"] / base["tokens"])
    assert per_token == pytest.approx(1.0, abs=0.1)  # untrained: ~ln(V) nats per token either way


def test_a_model_without_moais_loss_path_is_refused(docs, model_dir, tokenizer_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    with pytest.raises(MoaiInputError, match="MoaiForCausalLM"):
        score_rows(hf, pack_texts(docs, tokenizer_dir, seq_len=64))


_WORKER = """
import json, os, sys
import torch, torch.distributed as dist
from moai_llm.eval.scoring import score_rows
from moai_llm.eval.text import pack_texts
from moai_llm.modeling import MoaiForCausalLM
torch.set_num_threads(1)
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(MoaiForCausalLM.from_pretrained(sys.argv[1]))
model.train()
text = pack_texts(json.loads(sys.argv[3]), sys.argv[2], seq_len=32)
scores = score_rows(model, text, micro_batch=2)  # rank, world size and all_sum from the process group
assert model.training
print(json.dumps({"rank": dist.get_rank(), "rows": len(text), **scores}))
dist.destroy_process_group()
"""


def test_two_processes_under_ddp_agree_with_one(docs, moai_model, model_dir, tokenizer_dir, tmp_path):
    """2 gloo processes, DDP-wrapped model, an odd number of rows (one process runs an empty
    pass so DDP's per-forward collectives stay in step): both report the one-process totals."""
    import json
    import os
    import socket
    import subprocess
    import sys

    docs = docs * 3
    text = pack_texts(docs, tokenizer_dir, seq_len=32)
    whole = score_rows(moai_model, text, micro_batch=2)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(model_dir), str(tokenizer_dir), json.dumps(docs)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    rows = len(text)
    assert math.ceil((rows // 2) / 2) < math.ceil(math.ceil(rows / 2) / 2)  # process 1 runs one empty pass
    assert outs[0]["rows"] == rows
    for got in outs:
        assert got["tokens"] == whole["tokens"] and got["bytes"] == whole["bytes"]
        assert got["nll_nats"] == pytest.approx(whole["nll_nats"], rel=1e-5)
