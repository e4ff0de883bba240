"""Shared fixtures for the data tests: a tiny tokenizer trained on text written here."""

from __future__ import annotations

import pytest

KO = ["이 영화 정말 재미있어요. 배우들의 연기가 좋았습니다.", "다시 보고 싶은 영화입니다!", "카드 결제 한도는 얼마인가요?",
      "금리가 오르면 대출 이자도 오릅니다.", "오늘 날씨가 맑고 따뜻합니다."]
EN = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be, that is the question.",
      "What is the annual fee of this card?", "Interest rates rose again this quarter.", "Hello there, how are you?"]


def corpus_texts() -> list[str]:
    return [f"{t} {i}" for i in range(40) for t in KO + EN]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from moai_llm.tokenizer import train_tokenizer

    return train_tokenizer(corpus_texts(), tmp_path_factory.mktemp("tok") / "tok", vocab_size=400)


@pytest.fixture
def write_jsonl():
    """write_jsonl(path, records) -> path: one JSON object per line."""
    import orjson

    def write(path, records):
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        return path

    return write
