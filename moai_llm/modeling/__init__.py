"""moai's Qwen3 implementation: `MoaiForCausalLM`, `MoaiModel`, `compile_blocks` (see model.py)."""

from moai_llm.modeling.model import (
    MoaiForCausalLM,
    MoaiModel,
    MoaiPreTrainedModel,
    compile_blocks,
)

__all__ = ["MoaiForCausalLM", "MoaiModel", "MoaiPreTrainedModel", "compile_blocks"]
