"""Builders shared by the modeling tests: tiny configs with random weights."""

from __future__ import annotations

from moai_llm.config import MoaiConfig

YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}


def tiny_config(yarn: bool = False, tie: bool = True, **overrides) -> MoaiConfig:
    """A 2-layer GQA config; with YaRN the test sequences run past the original context."""
    kwargs = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        rope_theta=10000.0,
        rope_scaling=dict(YARN) if yarn else None,
        tie_word_embeddings=tie,
        # Large init so logits are far from uniform and greedy decoding is not trivial.
        initializer_range=0.2,
    )
    kwargs.update(overrides)
    return MoaiConfig(**kwargs)
