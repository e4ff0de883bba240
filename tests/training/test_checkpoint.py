"""Checkpoints: complete or absent, last K kept, stale temp folders removed, resume resolution."""

import json

import pytest
import torch

from moai_llm.errors import MoaiInputError
from moai_llm.training.launcher.resume import resolve_resume
from moai_llm.training.worker.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_optimizer_file,
    load_trainer_state,
    remove_stale_temps,
    save_checkpoint,
)


class TinyModel(torch.nn.Module):
    """Stands in for a PreTrainedModel's save_pretrained (the real one is tested end to end)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def save_pretrained(self, path, safe_serialization=True, state_dict=None):
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(path / "model.safetensors"))
        (path / "config.json").write_text("{}")


def _save(out, step, keep=2):
    model = TinyModel()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return save_checkpoint(out, step, model, None, opt.state_dict(), sched,
                           {"samples_consumed": step * 4}, keep=keep)


def test_keeps_the_last_k_complete_checkpoints(tmp_path):
    for step in (5, 10, 15):
        _save(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-10", "step-15"]
    assert latest_checkpoint(tmp_path).name == "step-15"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-10", "step-15"]  # no temp or trash left behind


def test_a_half_written_checkpoint_is_invisible_and_cleaned(tmp_path):
    _save(tmp_path, 5)
    half = tmp_path / "checkpoints" / ".tmp-step-10"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    no_state = tmp_path / "checkpoints" / "step-20"  # a folder without trainer_state.json
    no_state.mkdir()
    assert latest_checkpoint(tmp_path).name == "step-5"
    remove_stale_temps(tmp_path)
    assert not half.exists()


def test_state_round_trips_with_weights_only_loading(tmp_path):
    path = _save(tmp_path, 7)
    state = json.loads((path / "trainer_state.json").read_text())
    assert state == {"step": 7, "samples_consumed": 28}
    opt = torch.optim.AdamW(TinyModel().parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    assert load_trainer_state(path, sched)["step"] == 7
    assert "param_groups" in load_optimizer_file(path)


def test_resume_resolution(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None  # nothing yet: start fresh
    with pytest.raises(MoaiInputError, match="no checkpoint"):
        resolve_resume("latest", tmp_path)
    with pytest.raises(MoaiInputError, match="not a checkpoint"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)
    path = _save(tmp_path, 3)
    assert resolve_resume("auto", tmp_path) == path
    assert resolve_resume(str(tmp_path), tmp_path / "other") == path
    assert resolve_resume(str(path), tmp_path) == path


def test_a_state_of_another_step_is_refused(tmp_path):
    model = TinyModel()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(ValueError, match="step-8 given a trainer state at step 6"):
        save_checkpoint(tmp_path, 8, model, None, opt.state_dict(), sched, {"step": 6}, keep=2)
    assert not (tmp_path / "checkpoints" / "step-8").exists()


def test_what_killed_saves_left_is_removed_and_old_checkpoints_pruned(tmp_path):
    from moai_llm.training.worker.checkpoint import prune_checkpoints

    for step in (2, 4, 6):
        _save(tmp_path, step, keep=5)
    left = [tmp_path / "checkpoints" / ".tmp-step-8", tmp_path / "checkpoints" / ".old-step-0",
            tmp_path / ".final_model.building-1a2b3c4d", tmp_path / ".final_model.old-1a2b3c4d",
            tmp_path / ".tmp-final_model-x1"]
    for path in left:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == len(left)
    assert not any(p.exists() for p in left)
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-4", "step-6"]
