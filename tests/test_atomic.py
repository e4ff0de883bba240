"""moai_llm.atomic: results are complete or absent."""

from __future__ import annotations

import os
import stat

import pytest

from moai_llm.atomic import building, leftovers, remove_leftovers, replace_dir, write_text_atomic
from moai_llm.errors import DiskFullError


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


@pytest.mark.parametrize(("mask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(tmp_path, mask, folder, file):
    old = os.umask(mask)
    try:
        with building(tmp_path / "tokenizer") as tmp:
            (tmp / "tokenizer.json").write_text("{}")
        write_text_atomic(tmp_path / "run.yaml", "seed: 0\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tokenizer").stat().st_mode) == folder
    assert stat.S_IMODE((tmp_path / "tokenizer" / "tokenizer.json").stat().st_mode) == file
    assert stat.S_IMODE((tmp_path / "run.yaml").stat().st_mode) == file


def test_a_failed_build_leaves_the_old_folder_and_no_temp(tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "tokenizer.json").write_text("old")
    with pytest.raises(RuntimeError), building(out) as tmp:
        (tmp / "tokenizer.json").write_text("new")
        raise RuntimeError("killed halfway")
    assert (out / "tokenizer.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_leftovers_of_killed_writes_are_found_and_removed(tmp_path):
    out = tmp_path / "prepared"
    out.mkdir()
    for name in (".prepared.building-1a2b3c4d", ".prepared.old-5e6f7a8b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data-00000.arrow").write_bytes(b"x" * 100)
    (tmp_path / ".prepared.tmp-00000000").write_text("half a manifest")
    (tmp_path / ".other.building-11111111").mkdir()  # another folder's: not ours to remove
    assert len(leftovers(out)) == 3
    assert remove_leftovers(out) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.building-11111111", "prepared"]


def test_a_full_disk_removes_the_partial_folder_and_says_what_is_needed(tmp_path):
    from faults import small_disk

    with small_disk(tmp_path / "disk") as disk:
        (disk / "tok").mkdir()
        (disk / "tok" / "tokenizer.json").write_text("previous")
        with pytest.raises(DiskFullError) as err, building(disk / "tok", needed=5 << 20) as tmp:
            (tmp / "tokenizer.json").write_bytes(b"x" * (5 << 20))
        assert "the disk is full (the partial output was removed); it needs about 5.0 MiB and" in str(err.value)
        assert err.value.free > 1 << 20  # the partial file is gone, so its space is free again
        assert sorted(p.name for p in disk.iterdir()) == ["tok"]
        assert (disk / "tok" / "tokenizer.json").read_text() == "previous"
        with pytest.raises(DiskFullError, match="run.yaml: the disk is full"):
            write_text_atomic(disk / "run.yaml", "x" * (5 << 20))
        assert sorted(p.name for p in disk.iterdir()) == ["tok"]
