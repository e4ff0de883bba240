"""Chat rendering: the template as transformers applies it, and the spans that carry loss."""

from __future__ import annotations

import pytest

from moai_llm.data.sft import ChatTemplate, render
from moai_llm.errors import MoaiInputError

CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "안녕?"},
         {"role": "assistant", "content": "안녕하세요!"}, {"role": "user", "content": "Bye"},
         {"role": "assistant", "content": "Bye."}]


def test_rendering_matches_transformers_apply_chat_template(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    template = ChatTemplate.from_dir(tokenizer_dir)
    for gen in (False, True):
        assert template(CONVO, gen) == tok.apply_chat_template(CONVO, tokenize=False, add_generation_prompt=gen)
        assert template(CONVO[:2], gen) == tok.apply_chat_template(CONVO[:2], tokenize=False, add_generation_prompt=gen)


def test_loss_spans_are_the_answers_with_their_end_token(tokenizer_dir):
    text, spans = render(ChatTemplate.from_dir(tokenizer_dir), CONVO)
    assert [text[s:e] for s, e in spans] == ["안녕하세요!<|im_end|>", "Bye.<|im_end|>"]


def test_a_template_that_is_not_incremental_is_refused():
    template = ChatTemplate("{% for m in messages %}{{ m['content'] }}|{% endfor %}"
                            "{% if add_generation_prompt %}>{% endif %}{{ messages | length }}", {}, None)
    with pytest.raises(MoaiInputError, match="incrementally"):
        render(template, CONVO[1:3])


def test_a_tokenizer_without_template_is_refused_for_sft(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(MoaiInputError, match="no chat template"):
        ChatTemplate.from_dir(tmp_path)
