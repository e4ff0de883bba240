"""Data: sources -> tokenized, packed, memory-mapped training rows (`moai data prepare | inspect`).

    >>> from moai_llm.data import HierarchicalBalancePacker, prepare_dataset, load_prepared
"""

from __future__ import annotations

from moai_llm.data.packing import HierarchicalBalancePacker, best_fit_decreasing
from moai_llm.data.prepare import prepare_dataset, tokenizer_hash
from moai_llm.data.store import load_prepared, read_manifest

__all__ = ["HierarchicalBalancePacker", "best_fit_decreasing", "load_prepared", "prepare_dataset", "read_manifest", "tokenizer_hash"]
