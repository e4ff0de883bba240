"""The model's own chat template decides where SFT loss goes: for moai's ChatML, a Qwen3-style
template with thinking blocks and a Llama-3-style one, the loss covers exactly each assistant
answer and its end-of-turn token, in characters and in tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qwen_style import LLAMA3_SPECIALS, LLAMA3_TEMPLATE, write_qwen_style_tokenizer

from moai_llm.data.encoding import Encoder, load_backend
from moai_llm.data.sft import ChatTemplate, render
from moai_llm.errors import MoaiInputError

CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "금리가 뭐예요?"},
         {"role": "assistant", "content": "돈을 빌린 대가입니다."}, {"role": "user", "content": "And in English?"},
         {"role": "assistant", "content": "The price of borrowing money (per year)."}]
ANSWERS = [m["content"] for m in CONVO if m["role"] == "assistant"]
TEXTS = ["금리가 올랐습니다. 돈을 빌린 대가입니다.", "The price of borrowing money rose this year.",
         "Be brief. And in English? What is a bond?"] * 40


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("templates")
    qwen = write_qwen_style_tokenizer(root / "qwen3", TEXTS, vocab_size=500)
    llama = write_qwen_style_tokenizer(root / "llama3", TEXTS, vocab_size=500, template=LLAMA3_TEMPLATE,
                                       specials=LLAMA3_SPECIALS, eos_token="<|eot_id|>", bos_token="<|begin_of_text|>")
    return {"chatml": (tokenizer_dir, "<|im_end|>"), "qwen3": (qwen, "<|im_end|>"), "llama3": (llama, "<|eot_id|>")}


def _loss_runs(tokenizer_dir, text, spans):
    """The decoded text of each run of consecutive loss-carrying tokens."""
    tok = load_backend(tokenizer_dir)
    ids, labels = Encoder(tok).with_loss_spans([text], [spans])[0]
    runs, current = [], []
    for i, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == i
            current.append(i)
    if current:
        runs.append(current)
    return [tok.backend_tokenizer.decode(r, skip_special_tokens=False) for r in runs]


@pytest.mark.parametrize("name", ["chatml", "qwen3", "llama3"])
def test_loss_spans_are_the_answers_and_their_end_token(tokenizers, name):
    folder, end = tokenizers[name]
    text, spans = render(ChatTemplate.from_dir(folder), CONVO)
    expected = [a + end for a in ANSWERS]
    assert [text[s:e] for s, e in spans] == expected
    assert _loss_runs(folder, text, spans) == expected  # the same, token for token


@pytest.mark.parametrize("name", ["chatml", "qwen3", "llama3"])
def test_rendering_is_transformers_apply_chat_template(tokenizers, name):
    from transformers import AutoTokenizer

    folder, _ = tokenizers[name]
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    template = ChatTemplate.from_dir(folder)
    extra = {"enable_thinking": False} if name == "qwen3" else {}
    for gen in (False, True):
        assert template(CONVO[:-1], gen) == tok.apply_chat_template(CONVO[:-1], tokenize=False,
                                                                     add_generation_prompt=gen, **extra)


REASONED = CONVO[:2] + [{"role": "assistant", "content": "<think>\n빌린 돈의 가격.\n</think>\n\n돈을 빌린 대가입니다."},
                        CONVO[3], {"role": "assistant", "content": "The price of borrowing money (per year).",
                                   "reasoning_content": "Translate the previous answer."}]


def test_thinking_off_puts_the_empty_think_block_in_the_prompt(tokenizers):
    folder, _ = tokenizers["qwen3"]
    text, spans = render(ChatTemplate.from_dir(folder, thinking="off"), REASONED)
    assert [text[s:e] for s, e in spans] == [a + "<|im_end|>" for a in ANSWERS]
    assert "빌린 돈의 가격" not in text and "Translate" not in text  # reasoning is not trained, nor shown
    last = spans[-1][0]
    assert text[:last].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # prompt, no loss


def test_thinking_keep_trains_the_reasoning_of_the_answer_being_learned(tokenizers):
    folder, _ = tokenizers["qwen3"]
    text, spans = render(ChatTemplate.from_dir(folder, thinking="keep"), REASONED)
    got = [text[s:e] for s, e in spans]
    # Qwen3's format drops reasoning from turns before the last question; the last answer keeps it,
    # and its span starts where the generation prompt "<|im_start|>assistant\n" ends.
    assert got == [ANSWERS[0] + "<|im_end|>",
                   "<think>\nTranslate the previous answer.\n</think>\n\n" + ANSWERS[1] + "<|im_end|>"]
    assert _loss_runs(folder, text, spans) == got


def test_thinking_keep_without_reasoning_learns_the_empty_block(tokenizers):
    folder, _ = tokenizers["qwen3"]
    text, spans = render(ChatTemplate.from_dir(folder, thinking="keep"), CONVO[1:3])
    assert [text[s:e] for s, e in spans] == ["<think>\n\n</think>\n\n" + ANSWERS[0] + "<|im_end|>"]


def test_thinking_does_not_touch_templates_without_thinking(tokenizers):
    folder, end = tokenizers["chatml"]
    text, spans = render(ChatTemplate.from_dir(folder, thinking="off"), REASONED[1:3])
    assert [text[s:e] for s, e in spans] == [REASONED[2]["content"] + end]  # moai's ChatML: content as given


def test_generation_blocks_compile_and_do_not_change_the_spans(tokenizers):
    folder, end = tokenizers["chatml"]
    source = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
              "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
              "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    plain = ChatTemplate.from_dir(folder)
    tagged = ChatTemplate(source, plain.special, plain.end_token, plain.special_tokens)
    assert render(tagged, CONVO) == render(plain, CONVO)


def test_unknown_thinking_value_is_refused(tokenizers):
    with pytest.raises(MoaiInputError, match="--thinking maybe"):
        ChatTemplate.from_dir(tokenizers["qwen3"][0], thinking="maybe")


def test_prepare_with_a_qwen3_template_and_thinking(tokenizers, tmp_path):
    from moai_llm.data import prepare_dataset

    folder, _ = tokenizers["qwen3"]
    rows = [{"messages": REASONED}] * 4
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    off = prepare_dataset([str(tmp_path / "chat.jsonl")], folder, 256, tmp_path / "off", "sft")
    keep = prepare_dataset([str(tmp_path / "chat.jsonl")], folder, 256, tmp_path / "keep", "sft", thinking="keep")
    assert off["settings"]["thinking"] == "off" and keep["settings"]["thinking"] == "keep"
    assert keep["num_tokens"] > off["num_tokens"]  # the reasoning is in the rows only when kept
    with pytest.raises(MoaiInputError, match="--thinking yes"):
        prepare_dataset([str(tmp_path / "chat.jsonl")], folder, 256, tmp_path / "bad", "sft", thinking="yes")
    assert not (tmp_path / "bad").exists()


def test_labels_of_a_prepared_row_decode_to_the_answers(tokenizers, tmp_path):
    from moai_llm.data import prepare_dataset
    from moai_llm.data.store import load_prepared

    folder, end = tokenizers["llama3"]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": CONVO}, ensure_ascii=False) + "\n")
    prepare_dataset([str(tmp_path / "chat.jsonl")], folder, 256, tmp_path / "p", "sft")
    row = load_prepared(tmp_path / "p")[0]
    labels = np.asarray(row["labels"])
    tok = load_backend(folder).backend_tokenizer
    learned = tok.decode([int(x) for x in labels[labels != -100]], skip_special_tokens=False)
    assert learned == "".join(a + end for a in ANSWERS)


def test_cli_thinking_option(tokenizers, tmp_path):
    from typer.testing import CliRunner

    from moai_cli.app import app

    folder, _ = tokenizers["qwen3"]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": REASONED}, ensure_ascii=False) + "\n")
    args = ["data", "prepare", "--input", str(tmp_path / "chat.jsonl"), "--tokenizer", str(folder), "--mode", "sft",
            "--seq-len", "256"]
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / "bad"), "--thinking", "maybe"])
    assert bad.exit_code == 2 and "--thinking maybe: unknown value" in bad.stderr
    assert not (tmp_path / "bad").exists()
    good = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / "keep"), "--thinking", "keep", "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["settings"]["thinking"] == "keep"
