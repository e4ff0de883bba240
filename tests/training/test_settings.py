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


def test_each_default_is_written_once_and_help_shows_it():
    """The dataclass holds every default; a mode file only what differs for its mode; the
    commands' --help shows exactly the mode's defaults."""
    import dataclasses

    from typer.main import get_command

    from moai_cli.app import app
    from moai_llm.paths import PRESETS_DIR
    from moai_llm.training.settings import TrainSettings, mode_defaults

    base = TrainSettings()
    files = sorted((PRESETS_DIR / "training").glob("*.yaml"))
    assert {f.stem for f in files} == {"pretrain", "sft", "dpo"}
    for path in files:
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            assert name in {f.name for f in dataclasses.fields(TrainSettings)}, (path.name, name)
            assert value != getattr(base, name), f"{path.name} restates the default of {name}"
    commands = get_command(app).commands
    for mode in ("pretrain", "sft", "dpo"):
        defaults = mode_defaults(mode)
        for param in commands[mode].params:
            if param.name in defaults and defaults[param.name] not in (None, []):
                assert param.default == defaults[param.name], (mode, param.name)
                assert param.show_default, (mode, param.name)
    assert mode_defaults("pretrain")["min_lr_ratio"] == mode_defaults("sft")["min_lr_ratio"] == 0.0
    assert mode_defaults("dpo")["min_lr_ratio"] == 0.0


def test_settings_sources_are_kept_as_given(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"training": {"per_device_train_batch_size": 4}}))
    s, sources = resolve_settings("sft", cfg, {"learning_rate": 1e-4})
    assert sources.config == {"micro_batch_size": 4} and sources.flags == {"learning_rate": 1e-4}
    assert sources.defaults["learning_rate"] == 5e-5  # sft's own default, recorded as such
    assert (s.micro_batch_size, s.learning_rate, sources.source("lr_scheduler")) == (4, 1e-4, "default")


def test_an_unknown_config_key_is_refused_with_the_closest_name(tmp_path):
    """A typo in --config used to fall back to the default without a word."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rat: 1e-3\n")
    with pytest.raises(MoaiInputError, match=r"c.yaml: unknown setting 'learning_rat', did you mean 'learning_rate'"):
        resolve_settings("pretrain", cfg)
    cfg.write_text(yaml.safe_dump({"training": {"gradient_acumulation_steps": 4}}))
    with pytest.raises(MoaiInputError, match="did you mean 'gradient_accumulation_steps'"):
        resolve_settings("pretrain", cfg)
    cfg.write_text("zzzz: 1\n")
    with pytest.raises(MoaiInputError, match=r"unknown setting 'zzzz'$"):
        resolve_settings("pretrain", cfg)


@pytest.mark.parametrize("text, says", [
    ("learning_rate: .nan\n", "--learning-rate must be a finite number"),
    ("adam_beta2: 1.0\n", "adam_beta2 must be at least 0 and below 1"),
    ("weight_decay: -0.1\n", "--weight-decay must be at least 0"),
    ("max_grad_norm: .inf\n", "--max-grad-norm must be a finite number"),
    ("logging_steps: 0\n", "--logging-steps must be at least 1"),
])
def test_a_config_float_out_of_its_meaning_is_refused(tmp_path, text, says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(MoaiInputError, match=says.replace("(", r"\(")):
        resolve_settings("pretrain", cfg)


def test_an_infinite_count_in_a_config_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: .inf\n")
    with pytest.raises(MoaiInputError, match="max_steps must be a number, got inf"):
        resolve_settings("pretrain", cfg)


def test_each_setting_belongs_to_one_part_of_the_run_in_declaration_order():
    """TrainSettings is grouped by the part that uses each setting (model, data, optimisation,
    schedule, checkpoints, distributed, adaptation, and the run itself): every field in exactly
    one group, the groups in the order the fields are declared."""
    import dataclasses

    from moai_llm.training.settings import GROUPS, TrainSettings, resolve_settings

    declared = [f.name for f in dataclasses.fields(TrainSettings)]
    assert [name for names in GROUPS.values() for name in names] == declared
    assert {"model", "data", "optimisation", "schedule", "checkpoints", "distributed", "adaptation"} <= set(GROUPS)
    s, _ = resolve_settings("pretrain", flags={"lr_scheduler": "cosine", "warmup": 5})
    assert s.group("schedule") == {"lr_scheduler": "cosine", "warmup": 5.0, "stable": None, "decay": None,
                                   "min_lr_ratio": 0.0}
