"""Reference log-probs: computed once over a prepared preference dataset, stored beside it under
the reference's key, read back (no model needed) on the next call; with LoRA the base with the
adapter disabled; a reference with another tokenizer is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from moai_llm.alignment.reference import (
    check_reference_tokenizer,
    load_reference_logprobs,
    reference_key,
    reference_logprobs,
)
from moai_llm.data.prepare import prepare_dataset
from moai_llm.data.store import load_prepared, read_manifest
from moai_llm.errors import MoaiInputError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("pref_data")
    pairs = [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"Maybe {2 * i + 1}."}
             for i in range(12)]
    (root / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    prepare_dataset([str(root / "p.jsonl")], tokenizer_dir, 128, root / "prepared", "preference")
    return root / "prepared"


def _direct(model, prepared_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's answer log-prob from full logits of each sequence alone (no packing)."""
    rows = load_prepared(prepared_dir)
    n = read_manifest(prepared_dir)["preference"]["num_pairs"]
    out = torch.zeros(2, n)
    with torch.no_grad():
        for row in rows:
            pos = torch.tensor(row["position_ids"])
            starts = [*torch.nonzero(pos == 0).squeeze(1).tolist(), len(pos)]
            for k, (pair, role) in enumerate(zip(row["pair_index"], row["pair_role"], strict=True)):
                ids = torch.tensor(row["input_ids"][starts[k]:starts[k + 1]])
                labels = torch.tensor(row["labels"][starts[k]:starts[k + 1]])
                logp = torch.log_softmax(model(ids[None]).logits[0, :-1].float(), -1)
                keep = labels[1:] != -100
                out[role, pair] = logp[keep].gather(1, labels[1:][keep, None]).sum()
    return out[0], out[1]


def test_computed_once_stored_and_read_back(prepared, model_dir, tmp_path):
    from moai_llm.modeling import MoaiForCausalLM

    data = tmp_path / "prepared"
    shutil.copytree(prepared, data)
    model = MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    key = reference_key(model_dir)
    ref = reference_logprobs(model, data, key, batch_rows=3, chunk_size=5)
    chosen, rejected = _direct(model, data)
    assert torch.allclose(ref.chosen, chosen, atol=1e-5) and torch.allclose(ref.rejected, rejected, atol=1e-5)
    assert ref.path == data / "reference" / f"{key}.safetensors"
    assert sorted(p.name for p in (data / "reference").iterdir()) == [f"{key}.safetensors"]  # no temporary left
    again = reference_logprobs(None, data, key)  # found: the model is not needed
    assert torch.equal(again.chosen, ref.chosen) and torch.equal(again.rejected, ref.rejected)
    assert load_reference_logprobs(data, "another-key") is None
    assert load_reference_logprobs(data, key, num_pairs=99) is None  # not this dataset's pairs


def test_the_key_follows_the_weights(model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert reference_key(copy) == reference_key(model_dir)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert reference_key(copy) != reference_key(model_dir)


def test_with_lora_the_reference_is_the_base_with_the_adapter_disabled(prepared, model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from moai_llm.modeling import MoaiForCausalLM

    data = tmp_path / "prepared"
    shutil.copytree(prepared, data)
    base = MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    chosen, rejected = _direct(base, data)
    peft_model = get_peft_model(MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that changes the outputs
    peft_model.train()
    ref = reference_logprobs(peft_model, data, "base-key")
    assert torch.allclose(ref.chosen, chosen, atol=1e-5) and torch.allclose(ref.rejected, rejected, atol=1e-5)
    assert peft_model.training  # left as it was
    with_adapter = _direct(peft_model, data)[0]
    assert (with_adapter - chosen).abs().max() > 1e-3  # the adapter is on again afterwards


def test_a_reference_with_another_tokenizer_is_refused(model_dir, tokenizer_dir, tmp_path):
    from random_models import write_tokenizer

    check_reference_tokenizer(model_dir, tokenizer_dir)  # the same vocabulary (saved again by transformers): fine
    other = write_tokenizer(tmp_path / "other", vocab_size=300)
    with pytest.raises(MoaiInputError, match=r"--reference .*other: its tokenizer differs from the policy's"):
        check_reference_tokenizer(other, tokenizer_dir)


def test_a_folder_that_is_not_preference_data_is_refused(tmp_path):
    with pytest.raises(MoaiInputError, match="not a prepared preference dataset"):
        reference_logprobs(None, tmp_path, "k")
