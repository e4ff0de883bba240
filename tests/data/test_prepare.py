"""prepare_dataset: the prepared-rows contract, SFT loss masks, caching, atomic builds, locking."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time

import numpy as np
import pytest
from tokenizers import Tokenizer

from moai_llm.data import load_prepared, prepare_dataset
from moai_llm.errors import MoaiInputError

from .conftest import EN, KO


def segments(row):
    """(start, end) of each position-id segment of a row."""
    pos = np.asarray(row["position_ids"])
    starts = np.flatnonzero(pos == 0).tolist() + [len(pos)]
    return list(zip(starts[:-1], starts[1:], strict=True))


@pytest.fixture
def pretrain_file(tmp_path, write_jsonl):
    texts = [f"{KO[i % 5]} {EN[i % 5]} {i}" for i in range(60)] + [" ".join(EN * 12)]  # the last one is long
    return write_jsonl(tmp_path / "docs.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)]), texts


def test_pretrain_rows_are_packed_whole_documents_with_eos(tmp_path, tokenizer_dir, pretrain_file):
    path, texts = pretrain_file
    manifest = prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "out")
    ds = load_prepared(tmp_path / "out")
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert len(ds) == manifest["num_rows"] and manifest["seq_len"] == 64
    docs, pieces, real = [], [], 0
    for row in ds:
        ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
        assert len(ids) == len(labels) == len(row["position_ids"]) == 64
        for a, b in segments(row):
            if (ids[a:b] == 3).all() and (labels[a:b] == -100).all():
                assert b == 64  # padding only at the tail, as its own segment
                continue
            assert (labels[a:b] == ids[a:b]).all()  # pretraining: every real token carries loss
            real += b - a
            text = tok.decode(ids[a:b].tolist(), skip_special_tokens=False)
            (docs if text.removesuffix("<|endoftext|>") in texts[:-1] else pieces).append((text, b - a))
    assert real == manifest["num_tokens"]
    assert manifest["packing_efficiency"] == pytest.approx(real / (64 * len(ds)))
    # Every document that fits a row is whole in one row; only the long one was split.
    assert sorted(d.removesuffix("<|endoftext|>") for d, _ in docs) == sorted(texts[:-1])
    assert all(d.endswith("<|endoftext|>") for d, _ in docs)
    long_tokens = len(tok.encode(texts[-1], add_special_tokens=False).ids) + 1
    assert long_tokens > 64 and sum(n for _, n in pieces) == long_tokens
    assert all(p.removesuffix("<|endoftext|>") in texts[-1] for p, _ in pieces)
    assert manifest["docs_split"] == 1 and manifest["tokens_cut"] == long_tokens - 64
    assert manifest["num_tokens"] == sum(len(tok.encode(t, add_special_tokens=False).ids) + 1 for t in texts)


def test_sft_labels_cover_exactly_the_answers_and_their_end_token(tmp_path, tokenizer_dir, write_jsonl):
    convo = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "카드 결제 한도는?"},
                          {"role": "assistant", "content": "월 500만원입니다."}, {"role": "user", "content": "Thanks!"},
                          {"role": "assistant", "content": "You are welcome."}]}
    alpaca = {"instruction": "Say hello", "input": "", "output": "Hello there"}
    path = write_jsonl(tmp_path / "sft.jsonl", [convo, alpaca])
    prepare_dataset([str(path)], tokenizer_dir, 256, tmp_path / "out", mode="sft")
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    (row,) = load_prepared(tmp_path / "out")  # both conversations packed into one row
    ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
    conversations = {}
    for a, b in segments(row)[:2]:
        text = tok.decode(ids[a:b].tolist(), skip_special_tokens=False)
        loss = labels[a:b] != -100
        cuts = [0, *(np.flatnonzero(np.diff(loss)) + 1).tolist(), b - a]
        runs = [tok.decode(ids[a + s:a + e].tolist(), skip_special_tokens=False)
                for s, e in zip(cuts[:-1], cuts[1:], strict=True) if loss[s]]
        conversations[text] = runs
    chatml = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n카드 결제 한도는?<|im_end|>\n"
              "<|im_start|>assistant\n월 500만원입니다.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n"
              "<|im_start|>assistant\nYou are welcome.<|im_end|>\n")
    assert conversations[chatml] == ["월 500만원입니다.<|im_end|>", "You are welcome.<|im_end|>"]
    hello = "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\nHello there<|im_end|>\n"
    assert conversations[hello] == ["Hello there<|im_end|>"]
    assert (labels[ids == 3] == -100).all()


def test_sft_conversation_longer_than_a_row_is_truncated_and_counted(tmp_path, tokenizer_dir, write_jsonl, capsys):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": " ".join(EN * 10)}, {"question": "a", "answer": "b"},
                                               {"question": " ".join(KO * 10), "answer": "never reached"}])
    manifest = prepare_dataset([str(path)], tokenizer_dir, 32, tmp_path / "out", mode="sft")
    assert manifest["tokens_dropped"] > 0 and manifest["num_documents"] == 2
    assert manifest["conversations_truncated"] == 2 and manifest["dropped_documents"] == 1  # the third: prompt only
    assert manifest["first_truncated"].startswith(f"{path}:1 (") and manifest["first_truncated"].endswith(" tokens)")
    assert all(len(r["input_ids"]) == 32 for r in load_prepared(tmp_path / "out"))
    said = " ".join(capsys.readouterr().err.split())
    assert "2 conversations are longer than a row of 32 tokens (first: " in said
    assert "1 of them dropped whole (no answer token in their first 32 tokens)" in said and "--max-positions" in said


def test_leftovers_of_killed_builds_go_even_on_a_cache_hit(tmp_path, tokenizer_dir, pretrain_file):
    path, _ = pretrain_file
    out = tmp_path / "prepared"
    prepare_dataset([str(path)], tokenizer_dir, 64, out)
    (tmp_path / ".prepared.building-0badc0de").mkdir()
    (tmp_path / ".prepared.building-0badc0de" / "data-00000.arrow").write_bytes(b"x" * 1000)
    (tmp_path / ".prepared.old-0badc0de").mkdir()
    assert prepare_dataset([str(path)], tokenizer_dir, 64, out)["cache_hit"] is True
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared")) == []


@pytest.mark.parametrize(("mask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_prepared_folder_follows_the_umask(tmp_path, tokenizer_dir, pretrain_file, mask, folder, file):
    import os
    import stat

    path, _ = pretrain_file
    old = os.umask(mask)
    try:
        prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "prepared")
    finally:
        os.umask(old)
    out = tmp_path / "prepared"
    assert stat.S_IMODE(out.stat().st_mode) == folder
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {file}


def test_a_live_build_with_other_settings_is_refused_and_the_same_settings_wait(tmp_path, tokenizer_dir, pretrain_file):
    from moai_llm.errors import FolderInUseError
    from moai_llm.locks import RunLock

    path, _ = pretrain_file
    out = tmp_path / "prepared"
    holder = RunLock(out, command="moai data prepare", key="some other settings")
    holder.acquire()
    try:
        with pytest.raises(FolderInUseError, match=r"prepared is in use by moai data prepare \(pid"):
            prepare_dataset([str(path)], tokenizer_dir, 64, out)
    finally:
        holder.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]
    assert prepare_dataset([str(path)], tokenizer_dir, 64, out)["cache_hit"] is False


def test_same_inputs_hit_the_cache_and_any_change_rebuilds(tmp_path, tokenizer_dir, pretrain_file):
    path, _ = pretrain_file
    out = tmp_path / "out"
    first = prepare_dataset([str(path)], tokenizer_dir, 64, out)
    started = time.perf_counter()
    again = prepare_dataset([str(path)], tokenizer_dir, 64, out)
    assert again["cache_hit"] and time.perf_counter() - started < 1.0
    assert again["created"] == first["created"] and not first["cache_hit"]
    assert not prepare_dataset([str(path)], tokenizer_dir, 128, out)["cache_hit"]  # a setting changed
    assert prepare_dataset([str(path)], tokenizer_dir, 128, out)["cache_hit"]
    with open(path, "a") as fh:
        fh.write('{"text": "one more document"}\n')
    changed = prepare_dataset([str(path)], tokenizer_dir, 128, out)
    assert not changed["cache_hit"] and changed["num_documents"] == first["num_documents"] + 1
    other_tok = tmp_path / "tok2"
    shutil.copytree(tokenizer_dir, other_tok)
    config = other_tok / "tokenizer.json"
    config.write_text(config.read_text().replace('"<|pad|>"', '"<|pad|>" ', 1))  # same tokens, other bytes
    assert not prepare_dataset([str(path)], other_tok, 128, out)["cache_hit"]


def test_weights_repeat_or_subsample_a_source(tmp_path, tokenizer_dir, write_jsonl):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"가 {i}"} for i in range(200)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b {i}"} for i in range(200)])
    m = prepare_dataset([str(a), str(b)], tokenizer_dir, 64, tmp_path / "out", weights=[2, 0.5])
    docs = [s["documents"] for s in m["sources"]]
    assert docs[0] == 400 and 70 < docs[1] < 130
    assert sum(s["token_share"] for s in m["sources"]) == pytest.approx(1.0)


def test_hub_code_path_streams_a_local_dataset(tmp_path, tokenizer_dir, write_jsonl):
    (tmp_path / "hub").mkdir()
    write_jsonl(tmp_path / "hub" / "train.jsonl", [{"content": f"문서 {i}"} for i in range(30)])
    m = prepare_dataset(None, tokenizer_dir, 64, tmp_path / "out", dataset=str(tmp_path / "hub"), split="train")
    assert m["num_documents"] == 30


def test_failed_build_keeps_the_previous_dataset_and_leaves_no_temp_folder(tmp_path, tokenizer_dir, pretrain_file):
    path, _ = pretrain_file
    out = tmp_path / "out"
    prepare_dataset([str(path)], tokenizer_dir, 64, out)
    before = sorted(p.name for p in out.iterdir())
    with open(path, "a") as fh:
        fh.write("{not json}\n")
    with pytest.raises(MoaiInputError, match=r"docs\.jsonl:62: malformed JSON"):
        prepare_dataset([str(path)], tokenizer_dir, 64, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if "building" in p.name] == []
    assert prepare_dataset([str(path)], tokenizer_dir, 64, out, skip_bad_rows=True)["skipped_rows"] == 1


def test_bad_settings_and_inputs_write_nothing(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "   "}, {"text": ""}])
    with pytest.raises(MoaiInputError, match="no usable documents"):
        prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "out")
    with pytest.raises(MoaiInputError, match="--seq-len 4"):
        prepare_dataset([str(path)], tokenizer_dir, 4, tmp_path / "out")
    with pytest.raises(MoaiInputError, match="--seq-len 4096: .* 2048 positions"):
        prepare_dataset([str(path)], tokenizer_dir, 4096, tmp_path / "out", max_positions=2048)
    with pytest.raises(MoaiInputError, match="not a tokenizer folder"):
        prepare_dataset([str(path)], tmp_path, 64, tmp_path / "out")
    with pytest.raises(MoaiInputError, match="SFT schema"):
        prepare_dataset([str(path)], tokenizer_dir, 64, tmp_path / "out", mode="sft")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["a.jsonl"]


def _prepare_in_child(args):
    from moai_llm.progress import set_quiet

    set_quiet(True)
    path, tok, out = args
    m = prepare_dataset([path], tok, 64, out)
    return m["cache_hit"], m["created"], m["num_rows"]


def test_concurrent_processes_build_once_and_all_load(tmp_path, tokenizer_dir, write_jsonl):
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": f"{KO[i % 5]} {EN[i % 5]} {i}"} for i in range(3000)])
    out = tmp_path / "shared" / "prepared"
    with mp.get_context("spawn").Pool(3) as pool:
        results = pool.map(_prepare_in_child, [(str(path), str(tokenizer_dir), str(out))] * 3)
    assert sorted(hit for hit, _, _ in results) == [False, True, True]
    assert len({(created, rows) for _, created, rows in results}) == 1
    assert len(load_prepared(out)) == results[0][2]


def test_killed_build_leaves_nothing_that_looks_complete(tmp_path, tokenizer_dir, write_jsonl):
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "big.jsonl", [{"text": f"{KO[i % 5]} {EN[i % 5]} {i}"} for i in range(40_000)])
    out = tmp_path / "prepared"
    code = (f"from moai_llm.data import prepare_dataset; "
            f"prepare_dataset([{str(path)!r}], {str(tokenizer_dir)!r}, 64, {str(out)!r}, buffer_tokens=20000)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    # killed once rows are being written: a task's shard under the build's work folder
    while not list(tmp_path.glob(".prepared.tasks-*/**/data-00000.arrow")) and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not out.exists()
    with pytest.raises(MoaiInputError, match="not a prepared dataset"):
        load_prepared(out)
    small = write_jsonl(tmp_path / "small.jsonl", [{"text": "다음 문서"}] * 10)
    prepare_dataset([str(small)], tokenizer_dir, 64, out)  # the next run cleans up and builds
    assert list(tmp_path.glob(".prepared.building-*")) == [] and len(load_prepared(out)) > 0
    assert list(tmp_path.glob(".prepared.tasks-*")) == []  # the killed build's work folder too
