"""Loaded means whole (moai_llm/weights.py): the tensors a config promises, their shapes and
dtypes, finite values; and shard names that stay in their folder (moai_llm/pretrained.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from moai_llm.config import MoaiConfig
from moai_llm.errors import MoaiInputError
from moai_llm.modeling import MoaiForCausalLM
from moai_llm.pretrained import check_safetensors
from moai_llm.weights import check_weights, expected_tensors


@pytest.mark.parametrize("tied", [True, False])
def test_expected_tensors_are_the_models_own(tied):
    config = MoaiConfig.from_preset("tiny", tie_word_embeddings=tied)
    real = {k: tuple(v.shape) for k, v in MoaiForCausalLM(config).state_dict().items()}
    if tied:
        real.pop("lm_head.weight")  # tied: saved once, as the embedding
    assert expected_tensors(config.to_dict()) == real


@pytest.fixture
def saved(tmp_path):
    """(the weights file of a tiny untied model, its config dict)."""
    config = MoaiConfig.from_preset("tiny", tie_word_embeddings=False)
    weights = {k: v.contiguous() for k, v in MoaiForCausalLM(config).state_dict().items()}
    file = tmp_path / "model.safetensors"
    save_file(weights, str(file), metadata={"format": "pt"})
    return file, config.to_dict()


def _edit(file, change):
    weights = load_file(str(file))
    change(weights)
    save_file(weights, str(file), metadata={"format": "pt"})


def test_whole_weights_pass(saved):
    file, config = saved
    check_weights([file], config, "m", values=True)


@pytest.mark.parametrize("change, says", [
    (lambda w: w.pop("lm_head.weight"), "m: the weights have no tensor lm_head.weight"),
    (lambda w: w.__setitem__("model.norm.weight", torch.zeros(3)),
     "m: tensor model.norm.weight has shape [3], config.json says [64]"),
    (lambda w: w.__setitem__("model.norm.weight", torch.ones(64, dtype=torch.int64)),
     "m: tensor model.norm.weight is I64, not a floating-point type"),
])
def test_a_missing_misshapen_or_integer_tensor_is_named(saved, change, says):
    file, config = saved
    _edit(file, change)
    with pytest.raises(MoaiInputError, match=says.replace("[", r"\[").replace("]", r"\]")):
        check_weights([file], config, "m")


def test_non_finite_values_are_named_when_values_are_checked(saved):
    file, config = saved
    _edit(file, lambda w: w["model.layers.1.mlp.up_proj.weight"].__setitem__((0, 0), float("inf")))
    check_weights([file], config, "m")  # headers alone cannot see values
    with pytest.raises(MoaiInputError, match="tensor model.layers.1.mlp.up_proj.weight holds NaN/inf"):
        check_weights([file], config, "m", values=True)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "a/../../b.safetensors"])
def test_an_index_naming_a_shard_outside_the_folder_is_refused(saved, tmp_path, shard):
    file, _ = saved
    (tmp_path / "outside.safetensors").write_bytes(file.read_bytes())
    folder = tmp_path / "m"
    folder.mkdir()
    names = list(load_file(str(file)))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
    with pytest.raises(MoaiInputError, match="names a shard outside the model folder"):
        check_safetensors(folder, "m")
