"""Results: one JSON per evaluation with the versions, written whole; a table with a column per
model; bits per byte drawn against step."""

from __future__ import annotations

import json

from moai_llm.eval.report import check_writable, plot_bpb, table, versions, write_record


def test_records_are_written_whole_with_versions(tmp_path):
    record = {"label": "runs/a:step-10", "versions": versions(), "text": {"bits_per_byte": 1.5}}
    a = write_record(tmp_path / "eval", record)
    b = write_record(tmp_path / "eval", record)  # same second: a second file, not an overwrite
    assert a != b and a.name.endswith("runs_a_step-10.json")
    assert json.loads(a.read_text()) == record
    assert set(record["versions"]) >= {"moai", "torch", "transformers", "lm_eval"}
    assert all(record["versions"][k] for k in ("moai", "torch", "transformers", "lm_eval"))
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]  # no temp files left


def test_table_has_a_column_per_model_and_a_row_per_figure():
    text = {"bits_per_byte": 2.0, "bytes_per_token": 3.0, "token_perplexity": 64.0}
    rows = [{"task": "arc_easy", "metric": "acc", "filter": "none", "value": 0.5, "stderr": 0.05, "shots": 0}]
    t = table([{"label": "base", "text": text, "tasks": rows},
               {"label": "sft", "text": None, "tasks": [{**rows[0], "value": 0.75, "stderr": None}]}])
    assert t["columns"] == ["metric", "base", "sft"]
    assert t["rows"][0] == ["bits per byte", "2.000", "-"]
    assert t["rows"][-1] == ["arc_easy acc, 0-shot", "0.500 ± 0.050", "0.750"]


def test_bpb_curve_is_a_png_written_atomically(tmp_path):
    path = plot_bpb([(20, 3.1), (10, 3.5), (30, 2.9)], tmp_path / "eval" / "bpb.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["bpb.png"]


def test_check_writable_creates_nothing(tmp_path):
    assert check_writable(tmp_path / "a" / "b" / "eval") is None and not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    assert check_writable(tmp_path / "f" / "eval") == f"{tmp_path / 'f'} is a file"
