"""MoaiConfig: validation with clear messages, the seed's spellings, Qwen3 serialisation, presets."""

from __future__ import annotations

import json

import pytest

from moai_llm.config import MoaiConfig, list_presets, parameter_count

from tiny_models import tiny_config

# Pinned so a preset cannot drift silently; docs/model.md shows the same figures.
PRESET_COUNTS = {
    "tiny": 164_224,
    "small": 5_245_696,
    "0.5b": 535_452_672,
    "2b": 2_013_018_880,
    "3b": 3_016_079_872,
    "seed-3b": 5_121_772_288,
    # The Qwen3 checkpoints' architectures; the same totals as keras-hub's qwen3_presets.py.
    "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976,
    "qwen3-4b": 4_022_468_096,
    "qwen3-8b": 8_190_735_360,
}


def test_presets_are_listed_smallest_first():
    assert list_presets() == ["tiny", "small", "0.5b", "2b", "3b", "seed-3b",
                              "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"]


@pytest.mark.parametrize("name", list(PRESET_COUNTS))
def test_preset_parameter_counts_are_pinned(name):
    assert parameter_count(MoaiConfig.from_preset(name)) == PRESET_COUNTS[name]


def test_seed_3b_is_exactly_the_seed_table_and_really_about_5b():
    cfg = MoaiConfig.from_preset("seed-3b")
    table = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
             cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim)  # fmt: skip
    assert table == (3840, 28, 28, 4, 10240, 122100, 128)
    assert 5.0e9 < parameter_count(cfg) < 5.2e9


def test_vocab_sizes_follow_the_seed_recipes():
    assert MoaiConfig.from_preset("2b").vocab_size == 92759
    assert MoaiConfig.from_preset("3b").vocab_size == 122100
    assert 2.9e9 < parameter_count(MoaiConfig.from_preset("3b")) < 3.1e9
    assert parameter_count(MoaiConfig.from_preset("tiny")) < 10_000_000


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_equals_the_built_model(tie):
    from moai_llm.modeling import MoaiForCausalLM

    cfg = tiny_config(tie=tie)
    model = MoaiForCausalLM(cfg)
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "shape", "non_embedding"), [
    ("qwen3-0.6b", (1024, 28, 16, 8, 3072, True), 440_467_456),
    ("qwen3-1.7b", (2048, 28, 16, 8, 6144, True), 1_409_410_048),
    ("qwen3-4b", (2560, 36, 32, 8, 9728, True), 3_633_511_936),
    ("qwen3-8b", (4096, 36, 32, 8, 12288, False), 6_946_075_648),
])
def test_qwen3_presets_are_the_hub_checkpoints_architectures(name, shape, non_embedding):
    # Qwen's model cards give the non-embedding sizes: 0.44B, 1.4B, 3.6B, 6.95B.
    cfg = MoaiConfig.from_preset(name)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.tie_word_embeddings) == shape
    assert (cfg.vocab_size, cfg.head_dim, cfg.max_position_embeddings, cfg.rms_norm_eps) == (151936, 128, 40960, 1e-6)
    assert cfg.rope_parameters["rope_theta"] == 1_000_000.0
    embeddings = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    assert parameter_count(cfg) - embeddings == non_embedding


def test_preset_overrides_win():
    assert MoaiConfig.from_preset("small", vocab_size=4000).vocab_size == 4000


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*tiny"):
        MoaiConfig.from_preset("huge")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_attention_heads": 6, "num_key_value_heads": 4}, "num_key_value_heads"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"hidden_size": -8}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"head_dim": 15}, "head_dim"),
        ({"loss_chunk_size": 0}, "loss_chunk_size"),
        ({"rope_scaling": {"type": "ntk-by-parts", "factor": 2.0}}, "rope_scaling"),
        (
            {
                "rope_scaling": {
                    "type": "yarn",
                    "factor": 0.5,
                    "original_max_position_embeddings": 64,
                }
            },
            "factor",
        ),  # fmt: skip
        (
            {
                "rope_scaling": {
                    "type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 256,
                }
            },
            "original_max_position_embeddings",
        ),  # fmt: skip
        (
            {
                "rope_scaling": {
                    "type": "yarn",
                    "factor": 2.0,
                    "original_max_position_embeddings": 32,
                }
            },
            "max_position_embeddings",
        ),  # fmt: skip
        ({"use_qk_norm": False}, "use_qk_norm"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"attn_implementation": "paged_attention"}, "attn_implementation"),
        (
            {
                "head_dim": None,
                "hidden_size": 60,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
            },
            "head_dim",
        ),  # fmt: skip
    ],
)
def test_invalid_configs_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**kwargs)


def test_seed_rope_scaling_spelling_is_accepted_and_stored_as_rope_parameters():
    cfg = MoaiConfig(
        max_position_embeddings=131072,
        rope_scaling={
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
            "alpha": 1,
            "beta": 32,
        },  # fmt: skip
    )
    rope = cfg.rope_parameters
    assert rope["rope_type"] == "yarn" and "type" not in rope
    assert (rope["factor"], rope["original_max_position_embeddings"]) == (4.0, 32768)
    assert (rope["beta_slow"], rope["beta_fast"]) == (1, 32)
    assert rope["rope_theta"] == 1_000_000.0  # the seed's default base


def test_seed_fields_are_accepted():
    cfg = MoaiConfig(hidden_size=3840, num_attention_heads=30, num_key_value_heads=5,
                     hidden_act="swiglu", use_qk_norm=True, mlp_bias=False)  # fmt: skip
    assert cfg.hidden_act == "silu" and cfg.head_dim == 128  # derived like the seed did


def test_saved_config_is_a_stock_qwen3_config(tmp_path):
    from transformers import AutoConfig, Qwen3Config

    cfg = tiny_config(yarn=True, loss_chunk_size=512)
    cfg.architectures = ["MoaiForCausalLM"]
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "qwen3"
    assert data["architectures"] == ["Qwen3ForCausalLM"]
    assert "auto_map" not in data and "rope_scaling" not in data
    assert data["rope_parameters"]["rope_type"] == "yarn"
    stock = AutoConfig.from_pretrained(tmp_path)
    assert type(stock) is Qwen3Config
    assert stock.rope_parameters["factor"] == 4.0 and stock.head_dim == 16
    back = MoaiConfig.from_pretrained(tmp_path)
    assert back.loss_chunk_size == 512 and back.rope_parameters == cfg.rope_parameters


def test_attn_implementation_choices_are_accepted():
    # "auto" is stored as None (transformers has no "auto"); the model resolves both the same way.
    expected = {"auto": None, "sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2",
                "flex_attention": "flex_attention"}
    for choice, stored in expected.items():
        assert tiny_config(attn_implementation=choice)._attn_implementation == stored
