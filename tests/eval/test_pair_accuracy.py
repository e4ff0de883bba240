"""`moai eval MODEL --pairs FILE`: preference accuracy and mean margin, equal to the same figures
computed by hand from full logits of each sequence alone; with `--reference`, DPO's implicit
reward beta * (log pi - log ref); bad input refused in one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from moai_cli.app import app

runner = CliRunner()
PAIRS = [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": f"Maybe {2 * i + 1}, I think."}
         for i in range(6)]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "held_out_pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tokenizer_dir):
    from random_models import write_random_model

    return write_random_model(tmp_path_factory.mktemp("other"), tokenizer_dir, hidden_size=64, num_layers=2,
                              context_length=256, seed=7)


def _by_hand(model_dir, tokenizer_dir) -> torch.Tensor:
    """[2, pairs, 2]: (summed answer log-prob, answer tokens) of chosen and rejected, each sequence alone."""
    from moai_llm.data.sft import ChatTemplate, render
    from moai_llm.modeling import MoaiForCausalLM

    tok = __import__("tokenizers").Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    template = ChatTemplate.from_dir(tokenizer_dir)
    model = MoaiForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = torch.zeros(2, len(PAIRS), 2)
    for i, pair in enumerate(PAIRS):
        for role, answer in enumerate((pair["chosen"], pair["rejected"])):
            text, spans = render(template, [{"role": "user", "content": pair["prompt"]},
                                            {"role": "assistant", "content": answer}])
            enc = tok.encode(text, add_special_tokens=False)
            ids = torch.tensor(enc.ids)
            scored = torch.tensor([spans[0][0] <= s and e <= spans[0][1] for s, e in enc.offsets])[1:]
            with torch.no_grad():
                logp = torch.log_softmax(model(ids[None]).logits[0, :-1], -1).gather(1, ids[1:, None]).squeeze(1)
            out[role, i] = torch.tensor([logp[scored].sum(), scored.sum()])
    return out


def _eval(*args):
    result = runner.invoke(app, ["eval", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_accuracy_and_margin_without_reference_are_per_token_log_prob_comparisons(model_dir, tokenizer_dir, pairs_file, tmp_path):
    report = _eval(model_dir, "--pairs", pairs_file, "--output", tmp_path / "out")
    got = report["evaluations"][0]["pairs"]
    hand = _by_hand(model_dir, tokenizer_dir)
    reward = hand[..., 0] / hand[..., 1]
    margins = reward[0] - reward[1]
    assert got["pairs"] == len(PAIRS) and got["reward"] == "mean log-prob per answer token"
    assert got["accuracy"] == pytest.approx(float((margins > 0).float().mean()))
    assert got["margin"] == pytest.approx(float(margins.mean()), abs=1e-5)
    assert ["pairs: accuracy", f"{got['accuracy']:.3f}"] in report["table"]["rows"]


def test_with_a_reference_the_reward_is_dpos(model_dir, other_model, tokenizer_dir, pairs_file, tmp_path):
    report = _eval(model_dir, "--pairs", pairs_file, "--reference", other_model, "--beta", "0.5",
                   "--output", tmp_path / "out")
    got = report["evaluations"][0]["pairs"]
    policy, ref = _by_hand(model_dir, tokenizer_dir), _by_hand(other_model, tokenizer_dir)
    margins = 0.5 * ((policy[0, :, 0] - ref[0, :, 0]) - (policy[1, :, 0] - ref[1, :, 0]))
    assert got["beta"] == 0.5 and got["reward"].startswith("beta * ")
    assert got["margin"] == pytest.approx(float(margins.mean()), abs=1e-5)
    assert got["accuracy"] == pytest.approx(float((margins > 0).float().mean()))
    same = _eval(model_dir, "--pairs", pairs_file, "--reference", model_dir, "--output", tmp_path / "same")
    assert same["evaluations"][0]["pairs"]["margin"] == pytest.approx(0.0, abs=1e-6)  # a model against itself


@pytest.mark.parametrize(("args", "message"), [
    (["--pairs", "{w}/nosuch.jsonl"], "--pairs {w}/nosuch.jsonl: no such file"),
    (["--pairs", "{w}/bad.jsonl"], "bad.jsonl:1: 'chosen' and 'rejected' are identical"),
    (["--reference", "{model}"], "--reference goes with --pairs"),
])
def test_bad_pairs_input_is_one_line_exit_2_and_nothing_written(model_dir, tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n")
    args = [a.format(w=tmp_path, model=model_dir) for a in args]
    result = runner.invoke(app, ["eval", str(model_dir), *args, "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message.format(w=tmp_path) in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
