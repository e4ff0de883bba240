"""Which models `moai eval` evaluates and what their run says: run folders resolve like `moai
chat`, --all-checkpoints lists every complete step in order, defaults come from run.yaml."""

from __future__ import annotations

import shutil

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.eval.targets import (
    chat_template_default,
    default_seq_len,
    resolve_targets,
    run_setting,
)


def test_a_run_folder_is_its_final_model_and_knows_its_run(pretrain_run):
    (t,) = resolve_targets([str(pretrain_run)])
    assert t.path == pretrain_run / "final_model" and t.source == "final_model"
    assert t.run_dir == pretrain_run and t.mode == "pretrain" and t.step == 30  # metrics.jsonl's last step
    (c,) = resolve_targets([str(pretrain_run / "checkpoints" / "step-20")])
    assert c.run_dir == pretrain_run and c.step == 20


def test_all_checkpoints_in_step_order_then_the_final_model(pretrain_run, tmp_path, tokenizer_dir, run_factory):
    targets = resolve_targets([str(pretrain_run)], all_checkpoints=True)
    assert [(t.label, t.step) for t in targets] == [("step-10", 10), ("step-20", 20), ("final_model", 30)]
    # final_model is the last checkpoint's weights when one was saved at the last step: not twice
    run = run_factory(tmp_path / "r", tokenizer_dir, steps=(5, 30), last_step=30)
    assert [t.label for t in resolve_targets([str(run)], all_checkpoints=True)] == ["step-5", "step-30"]
    # unfinished step folders (no weights yet) are not checkpoints
    (run / "checkpoints" / "step-40").mkdir()
    assert [t.step for t in resolve_targets([str(run)], all_checkpoints=True)] == [5, 30]
    # two runs: labels say which
    labels = [t.label for t in resolve_targets([str(pretrain_run), str(run)], all_checkpoints=True)]
    assert labels[0] == f"{pretrain_run}:step-10" and labels[-1] == f"{run}:step-30"


def test_missing_models_and_runs_without_checkpoints_are_refused(tmp_path, pretrain_run):
    with pytest.raises(MoaiInputError, match="no such folder"):
        resolve_targets([str(tmp_path / "nope")])
    lone = tmp_path / "lone"
    shutil.copytree(pretrain_run / "final_model", lone)
    with pytest.raises(MoaiInputError, match="found no complete checkpoints"):
        resolve_targets([str(lone)], all_checkpoints=True)


def test_defaults_come_from_the_run(tmp_path, tokenizer_dir, pretrain_run, run_factory):
    sft = run_factory(tmp_path / "sft", tokenizer_dir, mode="sft", seq_len=96, steps=())
    (s,) = resolve_targets([str(sft)])
    assert chat_template_default(s, True) == (True, f"{sft / 'run.yaml'}: mode sft")
    assert chat_template_default(s, False) == (False, "the tokenizer has no chat template")
    (p,) = resolve_targets([str(pretrain_run)])
    assert chat_template_default(p, True)[0] is False
    assert default_seq_len(s, 128) == (96, "the run's seq_len")
    lone = tmp_path / "lone"
    shutil.copytree(pretrain_run / "final_model", lone)
    (m,) = resolve_targets([str(lone)])
    assert m.run_dir is None and chat_template_default(m, True)[0] is True
    assert default_seq_len(m, 40960) == (2048, "min(model context 40960, 2048)")


def test_run_settings_are_read_as_training_merges_them():
    run = {"moai_run": 2, "mode": "sft", "given": {"flags": {"seq_len": 128}, "config": {"seq_len": 64, "seed": 1}},
           "defaults": {"seed": 42, "eval_steps": 0}, "derived": {"max_steps": {"value": 9, "reason": "r"}}}
    assert [run_setting(run, k) for k in ("mode", "seq_len", "seed", "max_steps", "eval_steps", "nope")] == \
        ["sft", 128, 1, 9, 0, None]
    assert run_setting({"settings": {"mode": "pretrain", "seq_len": 32}}, "seq_len") == 32  # the first layout
