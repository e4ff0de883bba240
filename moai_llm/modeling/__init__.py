"""moai's Qwen3 implementation: `MoaiForCausalLM`, `MoaiModel` (see model.py for the tour)."""

from moai_llm.modeling.model import MoaiForCausalLM, MoaiModel, MoaiPreTrainedModel

__all__ = ["MoaiForCausalLM", "MoaiModel", "MoaiPreTrainedModel"]
