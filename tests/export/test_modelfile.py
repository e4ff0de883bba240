"""moai_llm/export/modelfile.py: the Modelfile's TEMPLATE renders what the Jinja template renders.

The TEMPLATE is rendered with Go's text/template (tests/export/render_template.go, the engine
Ollama uses) on the fields Ollama passes, and compared byte for byte with the prompt
transformers renders from the model's own chat template: moai's ChatML and Qwen3's thinking
template, system/user/assistant, multi-turn, thinking on and off. Needs `go` (Debian's
golang-go; scripts/setup.sh --dev installs it): skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from moai_llm.errors import MoaiInputError
from moai_llm.export.modelfile import TEMPLATES, modelfile, sampling, template_family
from moai_llm.export.run import export_model

GO_SOURCE = Path(__file__).with_name("render_template.go")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are a careful analyst."}, {"role": "user", "content": "금리가 오르면?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "そして3+3は？\n改行も"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "d 😀"}, {"role": "user", "content": "  spaced  {{ not a template }} "}],
]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (apt-get install golang-go; scripts/setup.sh --dev does it)")
    folder = tmp_path_factory.mktemp("go")
    binary = folder / "render"
    env = {"GOCACHE": str(folder / "cache"), "HOME": str(folder), "PATH": "/usr/bin:/bin", "GO111MODULE": "off"}
    subprocess.run([go, "build", "-o", str(binary), str(GO_SOURCE)], check=True, env=env, capture_output=True)

    def run(template: str, messages: list[dict], **data) -> str:
        payload = {"template": template, "data": {"messages": messages, **data}}
        done = subprocess.run([str(binary)], input=json.dumps(payload), capture_output=True, text=True, check=True)
        return done.stdout
    return run


def modelfile_template(text: str) -> str:
    return text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system", "multi-turn", "long"])
def test_moai_template_renders_the_jinja_prompt_byte_for_byte(moai_model, tmp_path, render, conversation):
    out = export_model(moai_model, tmp_path / "ollama", fmt="ollama", quant="q8_0").output
    text = (out / "Modelfile").read_text()
    tok = AutoTokenizer.from_pretrained(moai_model)
    want = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert render(modelfile_template(text), conversation) == want


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system", "multi-turn", "long"])
def test_qwen3_template_renders_the_jinja_prompt_with_thinking_on_and_off(qwen_model, render, conversation):
    tok = AutoTokenizer.from_pretrained(qwen_model)
    assert template_family(tok) == "qwen3"
    go = TEMPLATES["qwen3"]
    default = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    off = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert default != off
    assert render(go, conversation) == default
    assert render(go, conversation, is_think_set=True, think=True) == default
    assert render(go, conversation, is_think_set=True, think=False) == off


def test_qwen3_history_drops_earlier_reasoning_as_jinja_does(qwen_model, render):
    tok = AutoTokenizer.from_pretrained(qwen_model)
    jinja = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\na1"},
             {"role": "user", "content": "q2"}]
    ollama = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "thinking": "hmm"},
              {"role": "user", "content": "q2"}]
    want = tok.apply_chat_template(jinja, tokenize=False, add_generation_prompt=True)
    assert "hmm" not in want and render(TEMPLATES["qwen3"], ollama) == want


def test_stops_cover_every_end_token_and_sampling_comes_from_generation_config(qwen_model, tmp_path):
    out = export_model(qwen_model, tmp_path / "q", fmt="ollama", quant="f16").output
    text = (out / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text
    assert "PARAMETER temperature 0.6" in text and "PARAMETER top_p 0.95" in text and "PARAMETER top_k 20" in text
    assert "PARAMETER num_ctx 512" in text  # the model's 512 positions, not Ollama's default window
    assert text.startswith("# Modelfile written by moai export\nFROM ./m-f16.gguf\n")
    assert (out / "m-f16.gguf").is_file()


def test_greedy_generation_config_becomes_temperature_zero():
    from transformers import GenerationConfig

    assert sampling(GenerationConfig(do_sample=False, top_k=20, repetition_penalty=1.1)) == {
        "repeat_penalty": 1.1, "temperature": 0}
    assert "temperature 0.7" in modelfile("m.gguf", "chatml", ["<|im_end|>"], {"temperature": 0.7})


def test_a_template_that_is_not_chatml_is_refused(qwen_tok, tmp_path):
    from qwen_style import LLAMA3_TEMPLATE

    tok = AutoTokenizer.from_pretrained(qwen_tok)
    tok.chat_template = LLAMA3_TEMPLATE
    with pytest.raises(MoaiInputError, match="the chat template is not ChatML"):
        template_family(tok)
