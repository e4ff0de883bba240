"""Plans from facts: placeholder until the memory-model-based planner lands (see make_plan)."""

from __future__ import annotations

from moai_llm.hardware.plan import Plan

__all__ = ["Plan"]
