"""Cases of the bad-input table (docs/errors.md) about values: numbers out of their meaning,
model folders that are not whole, configs of the wrong type or range, chat templates that fail
or run away, records too long, and messages that used to name the wrong thing. Each used to end
with exit 1 (a traceback's last line), exit 0 over a broken result, or a misleading line.

`VALUE_CASES` holds keyword arguments of test_bad_input_table.Case; that module adds them to
its CASES. Placeholders: {w} the case's own folder, {tok} a moai tokenizer (ChatML template).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

OK = b'{"text": "hello world"}\n'
QA = b'{"question": "2+2?", "answer": "4"}\n'
PREP = "data prepare --tokenizer {tok} --seq-len 64 -o {w}/out"
PRETRAIN = "pretrain --model tiny --tokenizer {tok} --dataset {w}/d.jsonl -o {w}/run --seq-len 64"
SFT = "sft --dataset {w}/qa.jsonl -o {w}/run --pretrained-model {w}/m"
CHAT = "chat {w}/m --prompt hi"
EVAL = "eval {w}/m --text {w}/d.jsonl"
HANG = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def model(*changes: Callable[[Path], None]):
    """A random Qwen3 model folder at {w}/m (tests/random_models.py), then each change."""
    def setup(w: Path, tok: Path):
        from random_models import write_random_model

        write_random_model(w / "m", tokenizer_dir=tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
        for change in changes:
            change(w / "m")
    return setup


def tensors(edit: Callable[[dict], None]):
    def change(m: Path):
        from safetensors.torch import load_file, save_file

        weights = load_file(str(m / "model.safetensors"))
        edit(weights)
        save_file(weights, str(m / "model.safetensors"), metadata={"format": "pt"})
    return change


def _nan(weights: dict) -> None:
    weights["model.norm.weight"][0] = float("nan")


def _int_norm(weights: dict) -> None:
    import torch

    weights["model.norm.weight"] = torch.ones(32, dtype=torch.int32)


def _wrong_shape(weights: dict) -> None:
    import torch

    weights["model.layers.0.mlp.down_proj.weight"] = torch.zeros(3, 3)


def config(**values):
    def change(m: Path):
        data = json.loads((m / "config.json").read_text())
        data.update(values)
        data.pop("layer_types", None)  # transformers checks it against num_hidden_layers first
        (m / "config.json").write_text(json.dumps(data))
    return change


def write(name: str, text: str):
    def change(m: Path):
        (m / name).write_text(text)
    return change


def sharded(target: str):
    """The weights behind an index whose one shard is `target` (outside the folder)."""
    def change(m: Path):
        from safetensors import safe_open

        with safe_open(str(m / "model.safetensors"), framework="pt") as handle:
            names = list(handle.keys())
        (m / "model.safetensors").unlink()
        index = {"metadata": {}, "weight_map": {n: target for n in names}}
        (m / "model.safetensors.index.json").write_text(json.dumps(index))
    return change


def tokenizer_copy(name: str, template: str | None = None):
    def setup(w: Path, tok: Path):
        shutil.copytree(tok, w / name)
        if template is not None:
            (w / name / "chat_template.jinja").write_text(template)
    return setup


def model_config(**values):
    def setup(w: Path, tok: Path):
        import yaml

        from moai_llm.paths import preset_path

        data = yaml.safe_load(preset_path("models", "tiny").read_text())
        data.pop("description", None)
        (w / "m.yaml").write_text(yaml.safe_dump({**data, **values}))
    return setup


def prepared(change: Callable[[Path], None]):
    """A prepared dataset at {w}/ds (the table's tokenizer), then `change(folder)`."""
    def setup(w: Path, tok: Path):
        from moai_llm.data import prepare_dataset
        from moai_llm.progress import set_quiet

        (w / "src.jsonl").write_text("".join(json.dumps({"text": f"hello world {i} " * 20}) + "\n" for i in range(40)))
        set_quiet(True)
        try:
            prepare_dataset([str(w / "src.jsonl")], str(tok), 64, str(w / "ds"))
        finally:
            set_quiet(False)
        change(w / "ds")
    return setup


def _other_vocab(ds: Path) -> None:
    """Rows holding an id past the tokenizer (as data made with a bigger one would), the manifest
    not saying so: the first id of every row becomes 5000."""
    import pyarrow as pa

    for arrow in sorted(ds.glob("*.arrow")):
        table = pa.ipc.open_stream(pa.BufferReader(arrow.read_bytes())).read_all()  # not mapped: rewritten below
        column = table.schema.get_field_index("input_ids")
        ids = [[5000, *row[1:]] for row in table.column(column).to_pylist()]
        table = table.set_column(column, table.schema.field(column), pa.array(ids, type=table.schema.field(column).type))
        with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


def _fifo(w: Path, tok: Path):
    os.mkfifo(w / "pipe.jsonl")


def _one_long_line(w: Path, tok: Path):
    (w / "big.jsonl").write_text(json.dumps({"text": "word " * (2 << 20)}) + "\n")


def _long_conversation(w: Path, tok: Path):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(600)]
    (w / "long.jsonl").write_text(json.dumps({"messages": turns}) + "\n")


VALUE_CASES = [
    # ---------------------------------------------------------------- training settings
    dict(id="pretrain-max-grad-norm-negative", args=PRETRAIN + " --max-grad-norm -1",
         expect="--max-grad-norm must be at least 0 (0: no clipping), got -1.0", files={"d.jsonl": OK}),
    dict(id="pretrain-learning-rate-inf", args=PRETRAIN + " --learning-rate inf",
         expect="--learning-rate must be a finite number, got inf", files={"d.jsonl": OK}),
    dict(id="pretrain-weight-decay-nan", args=PRETRAIN + " --weight-decay nan",
         expect="--weight-decay must be a finite number, got nan", files={"d.jsonl": OK}),
    dict(id="pretrain-warmup-nan", args=PRETRAIN + " --warmup-steps nan",
         expect="--warmup-steps must be a finite number, got nan", files={"d.jsonl": OK}),
    dict(id="pretrain-min-lr-ratio-above-one", args=PRETRAIN + " --min-lr-ratio 1.5",
         expect="--min-lr-ratio must be at least 0 and at most 1, got 1.5", files={"d.jsonl": OK}),
    dict(id="pretrain-logging-steps-zero", args=PRETRAIN + " --logging-steps 0",
         expect="--logging-steps must be at least 1", files={"d.jsonl": OK}),
    dict(id="pretrain-max-bad-steps-zero", args=PRETRAIN + " --max-bad-steps 0",
         expect="--max-bad-steps must be at least 1", files={"d.jsonl": OK}),
    dict(id="pretrain-config-unknown-key", args=PRETRAIN + " --config {w}/c.yaml",
         expect="c.yaml: unknown setting 'learning_rat', did you mean 'learning_rate'?",
         files={"d.jsonl": OK, "c.yaml": "learning_rat: 0.001\n"}),
    dict(id="pretrain-config-nan", args=PRETRAIN + " --config {w}/c.yaml",
         expect="--learning-rate must be a finite number, got nan",
         files={"d.jsonl": OK, "c.yaml": "learning_rate: .nan\n"}),
    # ---------------------------------------------------------------- --model-config values
    dict(id="pretrain-model-config-layers-string", args=PRETRAIN.replace("--model tiny", "--model-config {w}/m.yaml"),
         expect="m.yaml: num_hidden_layers must be an integer, got '2'", files={"d.jsonl": OK},
         setup=model_config(num_hidden_layers="2")),
    dict(id="pretrain-model-config-heads-zero", args=PRETRAIN.replace("--model tiny", "--model-config {w}/m.yaml"),
         expect="m.yaml: num_attention_heads must be a positive integer, got 0", files={"d.jsonl": OK},
         setup=model_config(num_attention_heads=0)),
    dict(id="pretrain-model-config-kv-heads", args=PRETRAIN.replace("--model tiny", "--model-config {w}/m.yaml"),
         expect="m.yaml: num_key_value_heads: num_attention_heads (4) must be divisible by num_key_value_heads (3)",
         files={"d.jsonl": OK}, setup=model_config(num_key_value_heads=3)),
    dict(id="pretrain-model-config-rope-type", args=PRETRAIN.replace("--model tiny", "--model-config {w}/m.yaml"),
         expect="m.yaml: rope_scaling: unknown type 'weird'", files={"d.jsonl": OK},
         setup=model_config(rope_scaling={"type": "weird", "factor": 2.0})),
    dict(id="pretrain-model-config-python-tag", args=PRETRAIN.replace("--model tiny", "--model-config {w}/m.yaml"),
         expect="m.yaml: not valid YAML or a tag moai does not read",
         files={"d.jsonl": OK, "m.yaml": "hidden_size: !!python/object/apply:os.system ['touch MARKER']\n"}),
    # ---------------------------------------------------------------- prepared datasets
    dict(id="pretrain-token-ids-past-the-tokenizer", args=PRETRAIN.replace("{w}/d.jsonl", "{w}/ds"),
         expect="ds: row 0 holds token id 5000, but the tokenizer has", setup=prepared(_other_vocab)),
    dict(id="pretrain-manifest-not-an-object", args=PRETRAIN.replace("{w}/d.jsonl", "{w}/ds"),
         expect="ds/manifest.json: not a moai manifest (a JSON object expected, found list)",
         setup=prepared(lambda ds: (ds / "manifest.json").write_text("[]"))),
    dict(id="pretrain-truncated-arrow", args=PRETRAIN.replace("{w}/d.jsonl", "{w}/ds"),
         expect="cannot be read as a prepared shard", setup=prepared(
             lambda ds: [p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]) for p in ds.glob("*.arrow")])),
    # ---------------------------------------------------------------- model folders (sft, pretrain --pretrained-model)
    dict(id="sft-model-missing-tensor", args=SFT, expect="the weights have no tensor model.norm.weight",
         files={"qa.jsonl": QA}, setup=model(tensors(lambda t: t.pop("model.norm.weight")))),
    dict(id="sft-model-wrong-shape", args=SFT, expect="tensor model.layers.0.mlp.down_proj.weight has shape [3, 3], "
         "config.json says [32, 96]", files={"qa.jsonl": QA}, setup=model(tensors(_wrong_shape))),
    dict(id="sft-model-int-tensor", args=SFT, expect="tensor model.norm.weight is I32, not a floating-point type",
         files={"qa.jsonl": QA}, setup=model(tensors(_int_norm))),
    dict(id="sft-model-nan", args=SFT, expect="tensor model.norm.weight holds NaN/inf values",
         files={"qa.jsonl": QA}, setup=model(tensors(_nan))),
    dict(id="sft-config-layers-string", args=SFT, expect="m: config.json: num_hidden_layers must be an integer, got '2'",
         files={"qa.jsonl": QA}, setup=model(config(num_hidden_layers="2"))),
    dict(id="sft-config-heads-zero", args=SFT, expect="config.json: num_attention_heads must be a positive integer, got 0",
         files={"qa.jsonl": QA}, setup=model(config(num_attention_heads=0))),
    dict(id="sft-index-shard-outside", args=SFT, expect="model.safetensors.index.json names a shard outside the model "
         "folder ('../stolen.safetensors')", files={"qa.jsonl": QA}, setup=model(sharded("../stolen.safetensors"))),
    dict(id="sft-index-shard-absolute", args=SFT, expect="names a shard outside the model folder ('/etc/passwd')",
         files={"qa.jsonl": QA}, setup=model(sharded("/etc/passwd"))),
    dict(id="sft-generation-config-invalid", args=SFT, expect="generation_config.json: `max_new_tokens` must be "
         "greater than 0", files={"qa.jsonl": QA}, setup=model(write("generation_config.json", '{"max_new_tokens": -1}'))),
    dict(id="pretrain-pretrained-model-missing-tensor", args=PRETRAIN.replace("--model tiny", "--pretrained-model {w}/m"),
         expect="m: the weights have no tensor model.layers.0.self_attn.k_norm.weight", files={"d.jsonl": OK},
         setup=model(tensors(lambda t: t.pop("model.layers.0.self_attn.k_norm.weight")))),
    # ---------------------------------------------------------------- chat
    dict(id="chat-model-missing-tensor", args=CHAT, expect="the weights have no tensor lm_head.weight",
         setup=model(tensors(lambda t: t.pop("lm_head.weight")))),
    dict(id="chat-model-wrong-shape", args=CHAT, expect="tensor model.layers.0.mlp.down_proj.weight has shape [3, 3]",
         setup=model(tensors(_wrong_shape))),
    dict(id="chat-model-int-tensor", args=CHAT, expect="tensor model.norm.weight is I32", setup=model(tensors(_int_norm))),
    dict(id="chat-model-nan", args=CHAT, expect="tensor model.norm.weight holds NaN/inf values", setup=model(tensors(_nan))),
    dict(id="chat-config-layers-string", args=CHAT, expect="m/config.json: num_hidden_layers must be an integer, got '2'",
         setup=model(config(num_hidden_layers="2"))),
    dict(id="chat-config-heads-zero", args=CHAT, expect="num_attention_heads must be a positive integer, got 0",
         setup=model(config(num_attention_heads=0))),
    dict(id="chat-config-kv-heads", args=CHAT, expect="must be divisible by num_key_value_heads (3)",
         setup=model(config(num_attention_heads=4, num_key_value_heads=3))),
    dict(id="chat-config-rope-type", args=CHAT, expect="rope_scaling: unknown type 'weird'",
         setup=model(config(rope_scaling={"type": "weird", "factor": 2.0}))),
    dict(id="chat-vocab-larger-than-embedding", args=CHAT, expect="tensor model.embed_tokens.weight has shape",
         setup=model(config(vocab_size=100000))),
    dict(id="chat-generation-config-broken", args=CHAT, expect="generation_config.json",
         setup=model(write("generation_config.json", '{"max_new_tokens": '))),
    dict(id="chat-generation-config-invalid", args=CHAT, expect="generation_config.json: `max_new_tokens` must be "
         "greater than 0", setup=model(write("generation_config.json", '{"max_new_tokens": -1}'))),
    dict(id="chat-index-shard-outside", args=CHAT, expect="names a shard outside the model folder",
         setup=model(sharded("../../x.safetensors"))),
    dict(id="chat-model-too-big-for-memory", args=CHAT, expect="the model needs about", env={"budget_mib": "300"},
         setup=model(config(num_hidden_layers=100000))),
    dict(id="chat-temperature-nan", args=CHAT + " --temperature nan", expect="--temperature must be a finite number",
         setup=model()),
    dict(id="chat-top-p-nan", args=CHAT + " --top-p nan", expect="--top-p must be a finite number", setup=model()),
    dict(id="chat-device-missing-gpu", args=CHAT + " --device cuda:7", expect="--device cuda:7:", setup=model()),
    dict(id="chat-device-unknown", args=CHAT + " --device tpu", expect="--device tpu: not a device", setup=model()),
    dict(id="chat-dtype-int8", args=CHAT + " --dtype int8", expect="--dtype int8: not a dtype moai runs models in",
         setup=model()),
    dict(id="chat-template-syntax-error", args=CHAT, expect="the chat template has a syntax error on its line 1",
         setup=model(write("chat_template.jinja", "{% for m in messages %}{{ m.content }"))),
    dict(id="chat-template-sandbox", args=CHAT, expect="the chat template tried something the sandbox forbids",
         setup=model(write("chat_template.jinja", "{{ messages.__class__.__mro__ }}"))),
    dict(id="chat-template-runs-away", args=CHAT, expect="the chat template ran longer than 1 s",
         env={"MOAI_TEMPLATE_SECONDS": "1"}, setup=model(write("chat_template.jinja", HANG))),
    dict(id="chat-tokenizer-is-a-file", args=CHAT + " --tokenizer {w}/d.jsonl",
         expect="d.jsonl: is a file, not a tokenizer folder", files={"d.jsonl": OK}, setup=model()),
    # ---------------------------------------------------------------- eval
    dict(id="eval-model-missing-tensor", args=EVAL, expect="the weights have no tensor lm_head.weight",
         files={"d.jsonl": OK}, setup=model(tensors(lambda t: t.pop("lm_head.weight")))),
    dict(id="eval-model-nan", args=EVAL, expect="tensor model.norm.weight holds NaN/inf values",
         files={"d.jsonl": OK}, setup=model(tensors(_nan))),
    dict(id="eval-config-layers-string", args=EVAL, expect="num_hidden_layers must be an integer, got '2'",
         files={"d.jsonl": OK}, setup=model(config(num_hidden_layers="2"))),
    dict(id="eval-vocab-larger-than-embedding", args=EVAL, expect="tensor model.embed_tokens.weight has shape",
         files={"d.jsonl": OK}, setup=model(config(vocab_size=100000))),
    dict(id="eval-model-too-big-for-memory", args=EVAL, expect="the model needs about", files={"d.jsonl": OK},
         env={"budget_mib": "300"}, setup=model(config(num_hidden_layers=100000))),
    dict(id="eval-limit-inf", args=EVAL + " --limit inf", expect="--limit must be a positive finite number",
         files={"d.jsonl": OK}, setup=model()),
    # ---------------------------------------------------------------- data prepare: templates, records, sizes
    dict(id="data-sft-template-syntax-error", args=PREP.replace("{tok}", "{w}/t") + " -i {w}/qa.jsonl --mode sft",
         expect="t: the chat template has a syntax error on its line 1", files={"qa.jsonl": QA},
         setup=tokenizer_copy("t", "{% if %}")),
    dict(id="data-sft-template-sandbox", args=PREP.replace("{tok}", "{w}/t") + " -i {w}/qa.jsonl --mode sft",
         expect="the chat template tried something the sandbox forbids", files={"qa.jsonl": QA},
         setup=tokenizer_copy("t", "{{ messages.__class__.__mro__ }}")),
    dict(id="data-sft-template-runs-away", args=PREP.replace("{tok}", "{w}/t") + " -i {w}/qa.jsonl --mode sft",
         expect="/t: the chat template ran longer than 1 s", files={"qa.jsonl": QA},
         env={"MOAI_TEMPLATE_SECONDS": "1"}, setup=tokenizer_copy("t", HANG)),
    dict(id="data-sft-too-many-turns", args=PREP + " -i {w}/long.jsonl --mode sft",
         expect="long.jsonl:1: 600 messages in one conversation; moai renders at most 512", setup=_long_conversation),
    dict(id="data-line-too-long", args=PREP + " -i {w}/big.jsonl", expect="big.jsonl:1: one record is longer than 8 MiB",
         setup=_one_long_line),
    dict(id="data-weights-fill-the-disk", args=PREP + " -i {w}/d.jsonl --weights 1e308",
         expect="the prepared data would need about 10^", files={"d.jsonl": OK * 100}),
    dict(id="data-fifo-input", args=PREP + " -i {w}/pipe.jsonl", expect="pipe.jsonl: is a named pipe (FIFO)",
         setup=_fifo),
    dict(id="data-missing-column-later-row", args=PREP + " -i {w}/d.jsonl",
         expect="d.jsonl:2: no column 'text'; columns found: body", files={"d.jsonl": OK + b'{"body": "x"}\n'}),
    dict(id="data-sft-missing-answer-later-row", args=PREP + " -i {w}/qa.jsonl --mode sft",
         expect="qa.jsonl:2: no column 'answer' (the first record", files={"qa.jsonl": QA + b'{"question": "3+3?"}\n'}),
    dict(id="data-tokenizer-is-a-file", args="data prepare -i {w}/d.jsonl --tokenizer {w}/d.jsonl --seq-len 64 -o {w}/out",
         expect="d.jsonl: is a file, not a tokenizer folder", files={"d.jsonl": OK}),
    dict(id="pretrain-tokenizer-config-json-broken", args=PRETRAIN.replace("{tok}", "{w}/t"),
         expect="t/config.json: not valid JSON", files={"d.jsonl": OK},
         setup=lambda w, tok: (tokenizer_copy("t")(w, tok), (w / "t" / "config.json").write_text('{"a": '))[0]),
    dict(id="doctor-model-folder-names-model", args="doctor --model {w}/m",
         expect="m: the weights have no tensor model.norm.weight",
         setup=model(tensors(lambda t: t.pop("model.norm.weight")))),
]
