"""moai_llm.atomic: results are complete or absent."""

from __future__ import annotations

import pytest

from moai_llm.atomic import replace_dir, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "run.yaml"
    target.write_text("old\n")
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("complete\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "\udcff", encoding="utf-8")  # a lone surrogate cannot be encoded
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_replace_dir_swaps_a_whole_folder(tmp_path):
    out = tmp_path / "final_model"
    out.mkdir()
    (out / "stale.bin").write_text("x")
    new = tmp_path / ".tmp-final"
    new.mkdir()
    (new / "model.safetensors").write_text("y")
    replace_dir(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_model"]
