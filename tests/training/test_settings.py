"""Settings: defaults ← the mode's differences ← --config ← flags, the seed's names, clear errors,
and one home for every default."""

import pytest
import yaml

from moai_llm.errors import MoaiInputError
from moai_llm.training.settings import resolve_settings


def test_defaults_then_config_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 77, "learning_rate": 1e-3, "seed": 5}))
    s, sources = resolve_settings("pretrain", cfg, {"max_steps": 9, "seed": None})
    assert s.max_steps == 9 and sources.source("max_steps") == "flag"
    assert s.learning_rate == 1e-3 and sources.source("learning_rate").startswith("--config")
    assert s.seed == 5
    assert s.lr_scheduler == "wsd" and sources.source("lr_scheduler") == "default"
    assert s.loss["type"] == "cross_entropy"
    # what was given is kept as given, apart from the defaults
    assert sources.flags == {"max_steps": 9} and sources.config["max_steps"] == 77


def test_sft_preset_has_its_own_defaults():
    s, _ = resolve_settings("sft")
    assert s.mode == "sft" and s.learning_rate < 1e-4


def test_the_seeds_sectioned_training_config_is_understood(tmp_path):
    cfg = tmp_path / "training_config.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"hidden_size": 3840},
        "data": {"tokenizer_path": "tokenizers/moai", "num_proc": 8},
        "training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 64,
                     "lr_scheduler_type": "cosine", "warmup_steps": 2000, "warmup_ratio": 0.02,
                     "bf16": True, "use_wandb": True, "save_total_limit": 3},
        "loss": {"type": "multi_objective", "params": {"ce_weight": 0.6, "focal_weight": 0.3,
                                                       "smooth_weight": 0.1}},
    }))
    s, _ = resolve_settings("pretrain", cfg)
    assert s.micro_batch_size == 4 and s.gradient_accumulation_steps == 64
    assert s.lr_scheduler == "cosine" and s.warmup == 2000
    assert s.precision == "bf16" and s.tokenizer == "tokenizers/moai"
    assert s.loss["type"] == "multi_objective"


def test_bad_values_name_the_setting(tmp_path):
    with pytest.raises(MoaiInputError, match="max-steps"):
        resolve_settings("pretrain", flags={"max_steps": 0})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: fast\n")
    with pytest.raises(MoaiInputError, match="learning_rate must be a number"):
        resolve_settings("pretrain", cfg)
    with pytest.raises(MoaiInputError, match="no such file"):
        resolve_settings("pretrain", tmp_path / "missing.yaml")
