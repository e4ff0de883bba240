"""`moai chat` as a person uses it: a real process on a pseudo-terminal, typed input, the screen.

Two turns (streamed answers and the stats line on screen), /params, /reset, then a long answer
stopped with Ctrl-C (back to the prompt, the program still running), then Ctrl-D: exit 0.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

from moai_cli.chat import terminal_text  # noqa: E402

from random_models import write_random_model  # noqa: E402

PROMPT = "you>"
STATS = r"(\d+) tokens · [\d.]+ tok/s · TTFT [\d.]+ s"


def _screen(text: str) -> str:
    """What a person sees: colours and carriage returns removed."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch
    from transformers import Qwen3ForCausalLM

    folder = write_random_model(tmp_path_factory.mktemp("chat_tty"), hidden_size=32, num_layers=1,
                                vocab_size=300, context_length=8192)
    model = Qwen3ForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # stop tokens get logit 0, below the greedy maximum: answers run on
        model.lm_head.weight[[0, 2]] = 0
    model.save_pretrained(folder)
    return folder


def test_a_person_chats_resets_interrupts_and_leaves(model_dir):
    from moai_llm.inference import ChatSession, SamplingParams, load_for_chat

    model, tokenizer, info = load_for_chat(model_dir)
    expected = ChatSession(model, tokenizer, info, system="Be brief.",
                           params=SamplingParams(temperature=0, max_new_tokens=10))
    first = terminal_text("".join(expected.ask("hello"))).strip()
    second = terminal_text("".join(expected.ask("금리가 뭐예요?"))).strip()

    env = dict(os.environ, COLUMNS="200", LINES="50", TERM="xterm")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "moai_cli", "chat", str(model_dir), "--temperature", "0", "--max-new-tokens", "10",
         "--system", "Be brief."],
        env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect(PROMPT)
    assert "/help for commands" in _screen(child.before)

    child.sendline("hello")
    child.expect(STATS)
    assert child.match.group(1) == "10"
    assert first in _screen(child.before)  # the streamed answer is on the screen
    child.expect(PROMPT)
    child.sendline("금리가 뭐예요?")
    child.expect(STATS)
    assert second in _screen(child.before)  # the 2nd answer saw the 1st turn
    child.expect(PROMPT)

    child.sendline("/reset")
    child.expect("conversation reset")
    child.expect(PROMPT)
    child.sendline("/params max_new_tokens=8000 repetition_penalty=1")
    child.expect("max_new_tokens=8000")
    child.expect(PROMPT)

    child.sendline("tell me everything")
    child.expect("tell me everything")
    streamed = ""
    while len(streamed) < 40:  # the long answer is streaming (whatever its characters are)
        streamed += child.read_nonblocking(size=100, timeout=30)
    child.sendintr()  # Ctrl-C
    child.expect(STATS + " · stopped")
    assert int(child.match.group(1)) < 8000
    child.expect(PROMPT)  # still running, back at the prompt

    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
