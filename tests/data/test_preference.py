"""Preference pairs: every common schema to (prompt, chosen, rejected) messages, and
`prepare_dataset(mode="preference")` to packed rows where each pair's two sequences sit whole in
one row, loss on the answers only, truncated as TRL's collator truncates."""

from __future__ import annotations

import numpy as np
import pytest
from qwen_style import write_qwen_style_tokenizer

from moai_llm.data.encoding import load_backend
from moai_llm.data.pairs import to_pair
from moai_llm.data.prepare import prepare_dataset
from moai_llm.data.store import load_prepared
from moai_llm.errors import MoaiInputError

U = {"role": "user", "content": "What is 2+2?"}
A4 = {"role": "assistant", "content": "4"}
A5 = {"role": "assistant", "content": "5"}


def test_string_and_trl_conversational_schemas():
    for record in ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
                   {"prompt": [U], "chosen": [A4], "rejected": [A5]}):
        pair = to_pair(record)
        assert (pair.prompt, pair.chosen, pair.rejected) == ([U], [A4], [A5])


def test_ultrafeedback_writes_the_prompt_again_in_the_answers():
    pair = to_pair({"prompt": "What is 2+2?", "chosen": [U, A4], "rejected": [U, A5], "score_chosen": 9.0})
    assert (pair.prompt, pair.chosen, pair.rejected) == ([U], [A4], [A5])


def test_shared_prefix_conversations_split_at_the_first_difference():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, U]
    pair = to_pair({"chosen": [*history, A4], "rejected": [*history, A5]})
    assert (pair.prompt, pair.chosen, pair.rejected) == (history, [A4], [A5])


def test_hh_rlhf_text():
    pair = to_pair({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"})
    assert (pair.prompt, pair.chosen, pair.rejected) == ([U], [A4], [A5])


def test_explicit_columns_and_system_prompt():
    pair = to_pair({"q": "What is 2+2?", "good": "4", "bad": "5"},
                   {"prompt": "q", "chosen": "good", "rejected": "bad", "system": "Be brief."})
    assert pair.prompt == [{"role": "system", "content": "Be brief."}, U] and pair.chosen == [A4]


@pytest.mark.parametrize(("record", "message"), [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "d.jsonl:7: 'chosen' and 'rejected' are identical"),
    ({"chosen": [U, A4], "rejected": [U, A4]}, "d.jsonl:7: 'chosen' and 'rejected' are identical"),
    ({"prompt": "q", "chosen": "4", "rejected": "  "}, "d.jsonl:7: 'rejected' is empty"),
    ({"prompt": "q", "chosen": None, "rejected": "5"}, "d.jsonl:7: 'chosen' is null"),
    ({"prompt": "q", "chosen": "4"}, "d.jsonl:7: no column 'rejected'; columns found: prompt, chosen"),
    ({"chosen": "4", "rejected": "5"}, "d.jsonl:7: no column 'prompt'"),
])
def test_bad_pairs_name_the_row(record, message):
    with pytest.raises(MoaiInputError) as err:
        to_pair(record, where="d.jsonl:7")
    assert str(err.value).startswith(message)


def _pairs(n: int, long: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}." + " really" * long,
             "rejected": f"It is {2 * i + 1}, I think."} for i in range(n)]


def _documents(row: dict) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each document of a row, cut where position_ids restart."""
    pos = np.asarray(row["position_ids"])
    starts = [*np.flatnonzero(pos == 0).tolist(), len(pos)]
    return [(row["input_ids"][s:e], row["labels"][s:e]) for s, e in zip(starts[:-1], starts[1:], strict=True)]


def test_prepared_rows_hold_whole_pairs_with_loss_on_the_answers(tokenizer_dir, write_jsonl, tmp_path):
    write_jsonl(tmp_path / "p.jsonl", _pairs(40))
    manifest = prepare_dataset([str(tmp_path / "p.jsonl")], tokenizer_dir, 256, tmp_path / "out", "preference")
    assert manifest["preference"]["num_pairs"] == 40 and manifest["preference"]["pairs_truncated"] == 0
    decode = load_backend(tokenizer_dir).backend_tokenizer.decode
    seen = {}
    for row in load_prepared(tmp_path / "out"):
        docs = _documents(row)
        assert len(row["pair_index"]) == len(row["pair_role"]) <= len(docs)
        assert all(lab == -100 for _, labels in docs[len(row["pair_index"]):] for lab in labels)  # padding tail
        for k, (pair, role) in enumerate(zip(row["pair_index"], row["pair_role"], strict=True)):
            ids, labels = docs[k]
            answer = decode([t for t in labels if t != -100], skip_special_tokens=False)
            assert decode(ids, skip_special_tokens=False).startswith("<|im_start|>user\n")
            seen[(pair, role)] = answer
        # a pair's chosen is followed by its rejected in the same row
        assert row["pair_role"][::2] == [0] * (len(row["pair_role"]) // 2)
        assert row["pair_index"][::2] == row["pair_index"][1::2]
    assert sorted(seen) == [(p, r) for p in range(40) for r in (0, 1)]
    answers = {seen[(p, 0)] for p in range(40)}
    assert answers == {f"It is {2 * i}.<|im_end|>" for i in range(40)}


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_long_pairs_are_truncated_like_trl_and_counted(tokenizer_dir, write_jsonl, tmp_path, mode):
    write_jsonl(tmp_path / "p.jsonl", _pairs(6, long=60))
    m = prepare_dataset([str(tmp_path / "p.jsonl")], tokenizer_dir, 64, tmp_path / mode, "preference", truncation=mode)
    pref = m["preference"]
    assert pref["max_length"] == 32 and pref["pairs_truncated"] == 6 and pref["tokens_dropped"] > 0
    decode = load_backend(tokenizer_dir).backend_tokenizer.decode
    for row in load_prepared(tmp_path / mode):
        for (ids, labels), role in zip(_documents(row), row["pair_role"], strict=False):
            assert len(ids) <= 32 and labels[0] == -100
            text = decode(ids, skip_special_tokens=False)
            if role == 0:  # the long one: its head (the prompt) or its tail (the answer's end) kept
                assert text.startswith("<|im_start|>user") if mode == "keep_start" else text.rstrip().endswith("<|im_end|>")


def test_a_prompt_longer_than_half_a_row_drops_the_pair_with_keep_start(tokenizer_dir, write_jsonl, tmp_path):
    records = _pairs(4) + [{"prompt": "What is the price? " * 40, "chosen": "Ten.", "rejected": "Nine."}]
    write_jsonl(tmp_path / "p.jsonl", records)
    m = prepare_dataset([str(tmp_path / "p.jsonl")], tokenizer_dir, 64, tmp_path / "out", "preference")
    assert m["preference"]["num_pairs"] == 4 and m["preference"]["pairs_dropped"] == 1


def test_thinking_off_keeps_the_empty_think_block_in_the_prompt(write_jsonl, tmp_path):
    texts = ["What is 2+2? It is 4, or 5.", "Think before you answer."] * 40
    tok = write_qwen_style_tokenizer(tmp_path / "qwen3", texts, vocab_size=400)
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2+2?", "chosen": "<think>add</think>It is 4.",
                                        "rejected": "It is 5."}])
    prepare_dataset([str(tmp_path / "p.jsonl")], tok, 256, tmp_path / "out", "preference", thinking="off")
    row = load_prepared(tmp_path / "out")[0]
    decode = load_backend(tok).backend_tokenizer.decode
    (c_ids, c_labels), (r_ids, r_labels) = _documents(row)[:2]
    assert decode([t for t in c_labels if t != -100], skip_special_tokens=False) == "It is 4.<|im_end|>"
    assert decode(c_ids, skip_special_tokens=False).count("<think>\n\n</think>") == 1  # in the prompt, no loss


def test_a_bad_later_row_stops_the_build_and_writes_nothing(tokenizer_dir, write_jsonl, tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [*_pairs(3), {"prompt": "q", "chosen": "same", "rejected": "same"}])
    with pytest.raises(MoaiInputError, match=r"p.jsonl:4: 'chosen' and 'rejected' are identical"):
        prepare_dataset([str(tmp_path / "p.jsonl")], tokenizer_dir, 64, tmp_path / "out", "preference")
    assert not (tmp_path / "out").exists()
    m = prepare_dataset([str(tmp_path / "p.jsonl")], tokenizer_dir, 64, tmp_path / "out", "preference", skip_bad_rows=True)
    assert m["preference"]["num_pairs"] == 3 and m["skipped_rows"] == 1
