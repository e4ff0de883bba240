"""The bad-input table (docs/errors.md): every case a user can fix, run through the real CLI.

Each case must end with exit code 2, one error line that names the file, flag or folder at
fault, no traceback, and the case's folder exactly as it was (same files, same bytes: nothing
half-written, no temporary folder, no lock file left). stdin answers "y" to any prompt, so a
command that asked "run this code? [y/N]" would run it; none may.

To add a case: append a `Case` to CASES (an id, the moai arguments, the text the error line must
contain, the files it needs) and a row with the same id to docs/errors.md. Placeholders in the
arguments: {w} the case's own folder, {tok} a moai tokenizer, {hostile} a tokenizer folder whose
config names Python code (auto_map) that would write MARKER if it ever ran.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bad_input_values import VALUE_CASES
from faults import make_hostile, small_disk, unwritable
from typer.testing import CliRunner

from moai_cli.app import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
PREP = "data prepare --tokenizer {tok} --seq-len 64 -o {w}/out"
TRAIN = "tokenizer train --vocab-size 300 -o {w}/tok"


@dataclass
class Case:
    id: str
    args: str
    expect: str  # must appear in the output (the file, flag or folder at fault and what is wrong)
    files: dict[str, bytes | str] = field(default_factory=dict)
    setup: Callable[[Path, Path], Callable[[], None] | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    broken: str | None = None  # a known break another area is fixing: the case runs as a strict xfail


def _hold_lock(folder: str, command: str):
    """A second live process holding the lock of `folder` (relative to the case folder)."""
    def setup(w: Path, tok: Path):
        code = ("import sys, time; from moai_llm.locks import RunLock; "
                f"RunLock(sys.argv[1], command={command!r}, key='other settings').acquire(); "
                "print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(w / folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"

        def stop():
            proc.kill()
            proc.wait()
            (w / f".{folder}.lock").unlink(missing_ok=True)  # SIGKILL leaves it: the next run's to take over
        return stop
    return setup


def _mounted(kind: str, sub: str = "disk", size: str = "2m"):
    """A small disk that fills, or an unwritable folder, at {w}/sub (tests/faults.py)."""
    def setup(w: Path, tok: Path):
        manager = small_disk(w / sub, size) if kind == "disk" else unwritable(w / sub)
        manager.__enter__()
        return lambda: manager.__exit__(None, None, None)
    return setup


def _copy_tokenizer(name: str, cut: bool = False, code_only: bool = False):
    def setup(w: Path, tok: Path):
        shutil.copytree(tok, w / name)
        if cut:
            text = (tok / "tokenizer.json").read_bytes()
            (w / name / "tokenizer.json").write_bytes(text[: len(text) // 2])
        if code_only:
            make_hostile(w / name, keep_tokenizer_json=False)
    return setup


def _memory_budget(extra_mib: int) -> dict[str, str]:
    import psutil

    return {"MOAI_MEMORY_LIMIT": str(psutil.Process().memory_info().rss + (extra_mib << 20))}


OK = b'{"text": "hello world"}\n'
PARQUET_CUT = "cut.parquet"


def _parquet_cut(w: Path, tok: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["hello world"] * 200}), w / PARQUET_CUT)
    data = (w / PARQUET_CUT).read_bytes()
    (w / PARQUET_CUT).write_bytes(data[: len(data) // 2])


def _long_text(w: Path, tok: Path):
    (w / "big.jsonl").write_text("".join(json.dumps({"text": f"line {i} " + "가나다라 hello world " * 20}) + "\n"
                                         for i in range(2500)))


# ---------------------------------------------------------------- training inputs (pretrain, sft)
RUN = "--dataset {w}/d.jsonl -o {w}/run"
PRETRAIN = "pretrain --model tiny --tokenizer {tok} " + RUN
SFT = "sft --dataset {w}/qa.jsonl -o {w}/run --pretrained-model {w}/m"
QA = b'{"question": "2+2?", "answer": "4"}\n'


def _model(change: Callable[[Path], None] | None = None):
    """A random Qwen3 model folder at {w}/m (tests/random_models.py), then `change(folder)`."""
    def setup(w: Path, tok: Path):
        from random_models import write_random_model

        write_random_model(w / "m", tokenizer_dir=tok, hidden_size=32, num_layers=1, num_heads=2,
                           num_kv_heads=1)
        if change:
            change(w / "m")
    return setup


DPO = "dpo --dataset {w}/p.jsonl -o {w}/run --pretrained-model {w}/m --seq-len 64"
PAIR = b'{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n'


def _hidden(module: str):
    """A third-party module made unimportable for the case (sys.modules[name] = None, as if it
    were not installed); put back afterwards."""
    def setup(w: Path, tok: Path):
        missing = object()
        before = sys.modules.get(module, missing)
        sys.modules[module] = None

        def restore():
            if before is missing:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = before
        return restore
    return setup


def _then(*setups):
    """Several setups in order; their cleanups in reverse."""
    def setup(w: Path, tok: Path):
        cleanups = [c for c in (s(w, tok) for s in setups) if c]
        return lambda: [c() for c in reversed(cleanups)]
    return setup


def _two_tokenizers(w: Path, tok: Path):
    """A model at {w}/m with the case's tokenizer and a reference at {w}/ref with another one."""
    from random_models import write_random_model, write_tokenizer

    write_random_model(w / "m", tokenizer_dir=tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    other = write_tokenizer(w / "other-tok", vocab_size=280)
    write_random_model(w / "ref", tokenizer_dir=other, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)


def _only_pickle(m: Path):
    """pytorch_model.bin whose unpickling would write MARKER: it must never be unpickled."""
    import pickle

    class Hostile:
        def __reduce__(self):
            return (Path(m / "MARKER").write_text, ("unpickled",))

    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(pickle.dumps(Hostile()))


def _config(m: Path, **changes):
    config = json.loads((m / "config.json").read_text())
    config.update(changes)
    (m / "config.json").write_text(json.dumps(config))


def _model_code(m: Path):
    (m / "evil.py").write_text(f"import pathlib\npathlib.Path({str(m / 'MARKER')!r}).write_text('code ran')\n")
    _config(m, auto_map={"AutoModelForCausalLM": "evil.EvilModel"})


def _cut(name: str):
    def change(m: Path):
        data = (m / name).read_bytes()
        (m / name).write_bytes(data[: len(data) // 2])
    return change


def _checkpoint(step: int, **state):
    """A complete-looking checkpoint of an earlier moai run at {w}/run/checkpoints/step-N: every
    file a checkpoint has, well formed (moai_llm.training.worker.checkpoint_check finds it whole)."""
    def setup(w: Path, tok: Path):
        import torch
        from safetensors.torch import save_file

        from moai_llm.ownership import write_marker

        folder = w / "run" / "checkpoints" / f"step-{step}"
        folder.mkdir(parents=True)
        write_marker(w / "run", "run", "moai pretrain")
        (folder / "config.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
        for name in ("optimizer.pt", "scheduler.pt", "rng-rank0.pt"):
            torch.save({}, folder / name)
        (folder / "trainer_state.json").write_text(json.dumps({"step": step, **state}))
    return setup


def _long_context(w: Path, tok: Path):
    import yaml

    from moai_llm.paths import preset_path

    config = yaml.safe_load(preset_path("models", "tiny").read_text())
    config.pop("description", None)
    (w / "long.yaml").write_text(yaml.safe_dump({**config, "max_position_embeddings": 131072}))


# ---------------------------------------------------------------- export
EXPORT = "export {w}/m -o {w}/m.gguf"
OLD_MOAI_SPLIT = (r"'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_pattern(pattern: str):
    def change(m: Path):
        spec = json.loads((m / "tokenizer.json").read_text())
        spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
        (m / "tokenizer.json").write_text(json.dumps(spec))
    return change


def _drop_tensor(name: str):
    def change(m: Path):
        from safetensors.torch import load_file, save_file

        state = load_file(str(m / "model.safetensors"))
        del state[name]
        save_file(state, str(m / "model.safetensors"), metadata={"format": "pt"})
    return change


def _llama3_template(m: Path):
    from qwen_style import LLAMA3_TEMPLATE

    _config_file(m, "tokenizer_config.json", chat_template=LLAMA3_TEMPLATE)
    if (m / "chat_template.jinja").is_file():
        (m / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)


def _config_file(m: Path, name: str, **changes):
    data = json.loads((m / name).read_text())
    data.update(changes)
    (m / name).write_text(json.dumps(data))


def _without_llama_cpp(w: Path, tok: Path):
    """llama-cpp-python absent: `import llama_cpp` raises ImportError in this process."""
    saved = sys.modules.get("llama_cpp")
    sys.modules["llama_cpp"] = None  # type: ignore[assignment]

    def restore():
        if saved is None:
            sys.modules.pop("llama_cpp", None)
        else:
            sys.modules["llama_cpp"] = saved
    return restore


def _big_model_small_disk(w: Path, tok: Path):
    """A model whose f32 GGUF (about 7 MiB) does not fit the 2 MiB disk at {w}/disk."""
    from random_models import write_random_model

    write_random_model(w / "m", tokenizer_dir=tok, hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2)
    return _mounted("disk")(w, tok)


CASES = [
    # ---------------------------------------------------------------- data prepare: inputs
    Case("data-empty-file", f"{PREP} -i {{w}}/bad.jsonl", "bad.jsonl: the file is empty", {"bad.jsonl": b""}),
    Case("data-broken-json", f"{PREP} -i {{w}}/bad.jsonl", "bad.jsonl:2: malformed JSON",
         {"bad.jsonl": OK + b'{"text": \n'}),
    Case("data-latin1-bytes", f"{PREP} -i {{w}}/bad.jsonl", "bad.jsonl:1: bytes that are not UTF-8",
         {"bad.jsonl": b'{"text": "caf\xe9"}\n'}),
    Case("data-latin1-txt", f"{PREP} -i {{w}}/bad.txt", "bad.txt:2: bytes that are not UTF-8",
         {"bad.txt": b"fine\ncaf\xe9\n"}),
    Case("data-gzip-named-jsonl", f"{PREP} -i {{w}}/data.jsonl", "data.jsonl: the file is gzip-compressed",
         {"data.jsonl": gzip.compress(OK * 10)}),
    Case("data-unsupported-type", f"{PREP} -i {{w}}/data.xml", "data.xml: unsupported file type '.xml'",
         {"data.xml": "<text>hi</text>"}),
    Case("data-missing-input", f"{PREP} -i {{w}}/nosuch.jsonl", "nosuch.jsonl: no such file or folder"),
    Case("data-no-input", PREP, "no input given"),
    Case("data-missing-column", f"{PREP} -i {{w}}/d.jsonl --text-column body", "d.jsonl:1: no column 'body'; columns found: review",
         {"d.jsonl": b'{"review": "x"}\n'}),
    Case("data-no-text-column", f"{PREP} -i {{w}}/d.jsonl", "d.jsonl:1: no text column; columns found: review, stars",
         {"d.jsonl": b'{"review": "x", "stars": 5}\n'}),
    Case("data-text-column-numbers", f"{PREP} -i {{w}}/d.jsonl", "d.jsonl:1: column 'text' holds a number (int), not text",
         {"d.jsonl": b'{"text": 5}\n'}),
    Case("data-text-column-null", f"{PREP} -i {{w}}/d.jsonl", "d.jsonl:1: column 'text' is null, not text",
         {"d.jsonl": b'{"text": null}\n'}),
    Case("data-text-null-later-row", f"{PREP} -i {{w}}/d.jsonl", "d.jsonl:2: column 'text' is null, not text",
         {"d.jsonl": OK + b'{"text": null}\n'}),
    Case("data-only-blank-text", f"{PREP} -i {{w}}/d.jsonl", "no usable documents", {"d.jsonl": b'{"text": "   "}\n'}),
    Case("data-corrupt-parquet", f"{PREP} -i {{w}}/{PARQUET_CUT}", f"{PARQUET_CUT}: not a readable Parquet file",
         setup=_parquet_cut),
    Case("data-corrupt-arrow", f"{PREP} -i {{w}}/junk.arrow", "junk.arrow: not a readable Arrow file",
         {"junk.arrow": b"not arrow at all" * 8}),
    # ---------------------------------------------------------------- data prepare: SFT records
    Case("data-sft-no-schema", f"{PREP} -i {{w}}/d.jsonl --mode sft", "d.jsonl:1: no SFT schema recognised; columns found: text",
         {"d.jsonl": OK}),
    Case("data-sft-null-answer", f"{PREP} -i {{w}}/qa.jsonl --mode sft", "qa.jsonl:1: 'answer' is null",
         {"qa.jsonl": b'{"question": "2+2?", "answer": null}\n'}),
    Case("data-sft-empty-answer", f"{PREP} -i {{w}}/qa.jsonl --mode sft", "qa.jsonl:1: 'answer' is empty",
         {"qa.jsonl": b'{"question": "2+2?", "answer": ""}\n'}),
    Case("data-sft-null-answer-later-row", f"{PREP} -i {{w}}/qa.jsonl --mode sft", "qa.jsonl:2: 'answer' is null",
         {"qa.jsonl": b'{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": null}\n'}),
    # ---------------------------------------------------------------- data prepare: preference pairs
    Case("data-pref-identical", f"{PREP} -i {{w}}/p.jsonl --mode preference", "p.jsonl:1: 'chosen' and 'rejected' are identical",
         {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4", "rejected": "4"}\n'}),
    Case("data-pref-empty-rejected", f"{PREP} -i {{w}}/p.jsonl --mode preference", "p.jsonl:1: 'rejected' is empty",
         {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4", "rejected": ""}\n'}),
    Case("data-pref-missing-column", f"{PREP} -i {{w}}/p.jsonl --mode preference",
         "p.jsonl:1: no column 'rejected'; columns found: prompt, chosen", {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4"}\n'}),
    Case("data-pref-identical-later-row", f"{PREP} -i {{w}}/p.jsonl --mode preference",
         "p.jsonl:2: 'chosen' and 'rejected' are identical",
         {"p.jsonl": b'{"prompt": "1+1?", "chosen": "2", "rejected": "3"}\n{"prompt": "2+2?", "chosen": "4", "rejected": "4"}\n'}),
    Case("data-pref-unknown-truncation", f"{PREP} -i {{w}}/p.jsonl --mode preference --truncation middle",
         "--truncation middle: unknown value", {"p.jsonl": b'{"prompt": "1+1?", "chosen": "2", "rejected": "3"}\n'}),
    # ---------------------------------------------------------------- eval --pairs
    Case("eval-pairs-identical", "eval {w}/m --pairs {w}/p.jsonl --output {w}/out",
         "p.jsonl:1: 'chosen' and 'rejected' are identical",
         {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4", "rejected": "4"}\n'}, setup=_model()),
    Case("eval-pairs-reference-tokenizer", "eval {w}/m --pairs {w}/p.jsonl --reference {w}/ref --output {w}/out",
         "its tokenizer differs from the policy's", {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n'}, setup=_two_tokenizers),
    # ---------------------------------------------------------------- data prepare: flags
    Case("data-weights-inf", f"{PREP} -i {{w}}/d.jsonl --weights inf", "--weights inf for", {"d.jsonl": OK}),
    Case("data-weights-nan", f"{PREP} -i {{w}}/d.jsonl --weights nan", "--weights nan for", {"d.jsonl": OK}),
    Case("data-weights-negative", f"{PREP} -i {{w}}/d.jsonl --weights -1", "--weights -1 for", {"d.jsonl": OK}),
    Case("data-weights-zero-sum", f"{PREP} -i {{w}}/d.jsonl -i {{w}}/e.jsonl --weights 0,0", "--weights 0 for",
         {"d.jsonl": OK, "e.jsonl": OK}),
    Case("data-weights-not-a-number", f"{PREP} -i {{w}}/d.jsonl --weights lots", "--weights: 'lots' is not a number",
         {"d.jsonl": OK}),
    Case("data-weights-count", f"{PREP} -i {{w}}/d.jsonl --weights 1,2", "--weights has 2 values for 1 sources",
         {"d.jsonl": OK}),
    Case("data-seq-len-huge", f"{PREP} -i {{w}}/d.jsonl --seq-len 1000000000",
         "--seq-len 1000000000: longer than 1048576 tokens", {"d.jsonl": OK}),
    Case("data-seq-len-memory", f"{PREP} -i {{w}}/d.jsonl --seq-len 1048576",
         "--seq-len 1048576: needs about 109.0 MiB of memory", {"d.jsonl": OK}, env={"budget_mib": "100"}),
    Case("data-seq-len-zero", f"{PREP} -i {{w}}/d.jsonl --seq-len 0", "--seq-len 0: a row must hold at least 8 tokens",
         {"d.jsonl": OK}),
    Case("data-seq-len-negative", f"{PREP} -i {{w}}/d.jsonl --seq-len -5", "--seq-len -5: a row must hold at least 8",
         {"d.jsonl": OK}),
    Case("data-seq-len-over-positions", f"{PREP} -i {{w}}/d.jsonl --max-positions 32",
         "--seq-len 64: a row must hold at least 8 tokens and at most the model's 32", {"d.jsonl": OK}),
    Case("data-unknown-mode", f"{PREP} -i {{w}}/d.jsonl --mode chat", "--mode chat: unknown mode", {"d.jsonl": OK}),
    Case("data-unknown-packing", f"{PREP} -i {{w}}/d.jsonl --packing zip", "--packing zip: unknown packing", {"d.jsonl": OK}),
    Case("data-tasks-zero", f"{PREP} -i {{w}}/d.jsonl --tasks 0", "--tasks 0: must be 1 or more", {"d.jsonl": OK}),
    Case("data-workers-zero", f"{PREP} -i {{w}}/d.jsonl --workers 0", "--workers 0: must be 1 or more", {"d.jsonl": OK}),
    Case("data-unknown-executor", f"{PREP} -i {{w}}/d.jsonl --executor mpi", "--executor mpi: unknown executor",
         {"d.jsonl": OK}),
    Case("data-sbatch-not-key-value", f"{PREP} -i {{w}}/d.jsonl --executor slurm --sbatch exclusive",
         "--sbatch exclusive: expected KEY=VALUE", {"d.jsonl": OK}),
    Case("data-slurm-without-sbatch", f"{PREP} -i {{w}}/d.jsonl --executor slurm",
         "--executor slurm: sbatch is not on PATH", {"d.jsonl": OK}),
    # ---------------------------------------------------------------- data prepare: tokenizer and output
    Case("data-missing-tokenizer", "data prepare -i {w}/d.jsonl --tokenizer {w}/nosuch --seq-len 64 -o {w}/out",
         "--tokenizer", {"d.jsonl": OK}),
    Case("data-truncated-tokenizer", "data prepare -i {w}/d.jsonl --tokenizer {w}/cut --seq-len 64 -o {w}/out",
         "cut/tokenizer.json: cannot be read as a tokenizer", {"d.jsonl": OK}, setup=_copy_tokenizer("cut", cut=True)),
    Case("data-tokenizer-code-only", "data prepare -i {w}/d.jsonl --tokenizer {w}/code --seq-len 64 -o {w}/out",
         "the tokenizer is defined by Python code in the folder (evil.EvilTokenizer", {"d.jsonl": OK},
         setup=_copy_tokenizer("code", code_only=True)),
    Case("data-output-is-a-file", f"{PREP} -i {{w}}/d.jsonl", "out: exists and is not a prepared dataset",
         {"d.jsonl": OK, "out": "a file"}),
    Case("data-output-not-a-dataset", f"{PREP} -i {{w}}/d.jsonl", "out: exists and is not a prepared dataset",
         {"d.jsonl": OK, "out/notes.txt": "mine"}),
    Case("data-output-unwritable", "data prepare -i {w}/d.jsonl --tokenizer {tok} --seq-len 64 -o {w}/ro/out",
         "permission denied", {"d.jsonl": OK}, setup=_mounted("ro", "ro")),
    Case("data-output-in-use", f"{PREP} -i {{w}}/d.jsonl", "out is in use by moai data prepare (pid",
         {"d.jsonl": OK}, setup=_hold_lock("out", "moai data prepare")),
    Case("data-disk-full", "data prepare -i {w}/big.jsonl --tokenizer {tok} --seq-len 512 -o {w}/disk/out",
         "disk/out: the prepared data would need about", setup=lambda w, t: (
             _long_text(w, t), _mounted("disk")(w, t))[1]),
    # ---------------------------------------------------------------- tokenizer
    Case("tok-vocab-huge", f"{TRAIN} -i {{w}}/c.txt --vocab-size 1000000000",
         "--vocab-size 1000000000: needs about 88.4 GiB of memory", {"c.txt": "hello world\n"}),
    Case("tok-vocab-too-small", f"{TRAIN} -i {{w}}/c.txt --vocab-size 100", "--vocab-size 100 is too small",
         {"c.txt": "hello world\n"}),
    Case("tok-min-frequency-negative", f"{TRAIN} -i {{w}}/c.txt --min-frequency -3", "--min-frequency -3: must be 0 or more",
         {"c.txt": "hello world\n"}),
    Case("tok-empty-input", f"{TRAIN} -i {{w}}/c.txt", "c.txt: the file is empty", {"c.txt": ""}),
    Case("tok-latin1-txt", f"{TRAIN} -i {{w}}/c.txt", "c.txt: not UTF-8 text", {"c.txt": b"caf\xe9 au lait\n"}),
    Case("tok-gzip-named-jsonl", f"{TRAIN} -i {{w}}/c.jsonl", "c.jsonl: the file is gzip-compressed",
         {"c.jsonl": gzip.compress(OK)}),
    Case("tok-output-not-a-tokenizer", "tokenizer train -i {w}/c.txt --vocab-size 300 -o {w}/notes",
         "notes: exists and is not a tokenizer folder (it holds n.md)", {"c.txt": "hello world\n", "notes/n.md": "mine"}),
    Case("tok-output-unwritable", "tokenizer train -i {w}/c.txt --vocab-size 300 -o {w}/ro/tok", "permission denied",
         {"c.txt": "hello world\n"}, setup=_mounted("ro", "ro")),
    Case("tok-output-in-use", f"{TRAIN} -i {{w}}/c.txt", "tok is in use by moai tokenizer train (pid",
         {"c.txt": "hello world\n"}, setup=_hold_lock("tok", "moai tokenizer train")),
    Case("tok-disk-full", "tokenizer train -i {w}/c.txt --vocab-size 1000 -o {w}/disk/tok",
         "disk/tok: the tokenizer needs about", {"c.txt": "".join(f"word{i} token{i * 7} " for i in range(3000))},
         setup=_mounted("disk", size="16k")),
    Case("tok-extend-into-base", "tokenizer extend --base-tokenizer {w}/base -i {w}/c.txt --vocab-size 500 -o {w}/base",
         "is the base tokenizer's folder", {"c.txt": "hello world\n"}, setup=_copy_tokenizer("base")),
    Case("tok-extend-inside-base", "tokenizer extend --base-tokenizer {w}/base -i {w}/c.txt --vocab-size 500 -o {w}/base/x",
         "is the base tokenizer's folder", {"c.txt": "hello world\n"}, setup=_copy_tokenizer("base")),
    Case("tok-extend-around-base", "tokenizer extend --base-tokenizer {w}/t/base -i {w}/c.txt --vocab-size 500 -o {w}/t",
         "holds the base tokenizer", {"c.txt": "hello world\n", "t/base/.keep": ""},
         setup=lambda w, t: (shutil.rmtree(w / "t" / "base"), _copy_tokenizer("t/base")(w, t))[1]),
    Case("tok-extend-missing-base", "tokenizer extend --base-tokenizer {w}/nosuch -i {w}/c.txt --vocab-size 500 -o {w}/ext",
         "nosuch: no such file or folder", {"c.txt": "hello world\n"}),
    Case("tok-extend-truncated-base", "tokenizer extend --base-tokenizer {w}/cut -i {w}/c.txt --vocab-size 500 -o {w}/ext",
         "cut/tokenizer.json: not valid JSON", {"c.txt": "hello world\n"}, setup=_copy_tokenizer("cut", cut=True)),
    Case("tok-extend-min-frequency", "tokenizer extend --base-tokenizer {tok} -i {w}/c.txt --vocab-size 500 "
         "--min-frequency -3 -o {w}/ext", "--min-frequency -3", {"c.txt": "hello world\n"}),
    Case("tok-compare-truncated", "tokenizer compare {w}/cut -i {w}/c.txt", "cut/tokenizer.json: cannot be read as a tokenizer",
         {"c.txt": "hello world\n"}, setup=_copy_tokenizer("cut", cut=True)),
    Case("tok-compare-code-only", "tokenizer compare {w}/code -i {w}/c.txt", "defined by Python code in the folder",
         {"c.txt": "hello world\n"}, setup=_copy_tokenizer("code", code_only=True)),
    # ---------------------------------------------------------------- checks before training or chat starts
    Case("pretrain-missing-tokenizer", "pretrain --model tiny --tokenizer {w}/nosuch --dataset {w}/d.jsonl -o {w}/run",
         "--tokenizer", {"d.jsonl": OK}),
    Case("pretrain-missing-dataset-file", "pretrain --model tiny --tokenizer {tok} --dataset {w}/nosuch.jsonl -o {w}/run",
         "nosuch.jsonl: no such file"),
    # ---------------------------------------------------------------- training: pretrain and sft
    Case("pretrain-truncated-tokenizer", "pretrain --model tiny --tokenizer {w}/cut " + RUN,
         "cut/tokenizer.json: cannot be loaded as a tokenizer", {"d.jsonl": OK}, setup=_copy_tokenizer("cut", cut=True)),
    Case("pretrain-tokenizer-code-only", "pretrain --model tiny --tokenizer {w}/code " + RUN,
         "defined by Python code in the folder", {"d.jsonl": OK}, setup=_copy_tokenizer("code", code_only=True)),
    Case("pretrain-seq-len-over-positions", PRETRAIN + " --seq-len 100000",
         "--seq-len 100000: longer than the 512 positions of the tiny preset (max_position_embeddings)",
         {"d.jsonl": OK}),
    Case("pretrain-seq-len-memory", "pretrain --model-config {w}/long.yaml --tokenizer {tok} " + RUN + " --seq-len 100000",
         "--seq-len 100000: needs about", {"d.jsonl": OK}, setup=_long_context),
    Case("pretrain-batch-size-memory", PRETRAIN + " --seq-len 64 --batch-size 10000000",
         "--batch-size 10000000: needs about", {"d.jsonl": OK}),
    Case("pretrain-output-unwritable", "pretrain --model tiny --tokenizer {tok} --dataset {w}/d.jsonl -o {w}/ro/run",
         "ro/run: cannot write there", {"d.jsonl": OK}, setup=_mounted("ro", "ro")),
    Case("pretrain-output-in-use", PRETRAIN + " --seq-len 64", "run is in use by moai pretrain (pid",
         {"d.jsonl": OK}, setup=_hold_lock("run", "moai pretrain")),
    Case("pretrain-disk-full", "pretrain --model tiny --tokenizer {tok} --dataset {w}/d.jsonl -o {w}/disk/run --seq-len 64",
         "one checkpoint needs about", {"d.jsonl": OK}, setup=_mounted("disk", size="256k")),
    Case("pretrain-fresh-over-checkpoints", PRETRAIN + " --seq-len 64", "holds checkpoints of an earlier run (newest step-10)",
         {"d.jsonl": OK}, setup=_checkpoint(10)),
    Case("pretrain-resume-past-max-steps", PRETRAIN + " --seq-len 64 --max-steps 5 --resume auto",
         "--max-steps 5: the run is already at step 10", {"d.jsonl": OK}, setup=_checkpoint(10)),
    Case("pretrain-resume-other-global-batch", PRETRAIN + " --seq-len 64 --max-steps 5 --global-batch 4 --resume auto",
         "it was trained with global batch 999", {"d.jsonl": OK}, setup=_checkpoint(2, global_batch=999)),
    Case("sft-missing-model", "sft --pretrained-model {w}/nosuch --dataset {w}/qa.jsonl -o {w}/run",
         "nosuch: no such folder", {"qa.jsonl": QA}),
    Case("sft-model-is-a-file", "sft --pretrained-model {w}/qa.jsonl --dataset {w}/qa.jsonl -o {w}/run",
         "qa.jsonl: is a file, not a model folder", {"qa.jsonl": QA}),
    Case("sft-only-pickled-weights", SFT, "has only pickled weights (pytorch_model.bin)", {"qa.jsonl": QA},
         setup=_model(_only_pickle)),
    Case("sft-llama-config", SFT, "architecture 'llama' (LlamaForCausalLM); moai trains Qwen3 models",
         {"qa.jsonl": QA}, setup=_model(lambda m: _config(m, model_type="llama", architectures=["LlamaForCausalLM"]))),
    Case("sft-truncated-safetensors", SFT, "model.safetensors is damaged or incomplete", {"qa.jsonl": QA},
         setup=_model(_cut("model.safetensors"))),
    Case("sft-bad-config-json", SFT, "config.json: not valid JSON", {"qa.jsonl": QA}, setup=_model(_cut("config.json"))),
    Case("sft-missing-weights", SFT, "no model.safetensors (no weights)", {"qa.jsonl": QA},
         setup=_model(lambda m: (m / "model.safetensors").unlink())),
    Case("sft-model-code", SFT, "config.json asks to run the folder's own Python code (auto_map: evil.EvilModel)",
         {"qa.jsonl": QA}, setup=_model(_model_code)),
    Case("sft-seq-len-over-positions", SFT + " --seq-len 1024", "--seq-len 1024: longer than the 512 positions of "
         "--pretrained-model", {"qa.jsonl": QA}, setup=_model()),
    Case("pretrain-lora-target-no-match", PRETRAIN + " --seq-len 64 --lora-rank 4 --lora-target q_proj,attn",
         "--lora-target q_proj,attn: attn matches no module; the model's Linear modules are down_proj, gate_proj",
         {"d.jsonl": OK}),
    Case("pretrain-stages-without-new-rows", PRETRAIN + " --seq-len 64 --stages new-embeddings:10,all",
         "--stages new-embeddings:10,all: the vocabulary did not grow", {"d.jsonl": OK}),
    Case("pretrain-stages-with-lora", PRETRAIN + " --seq-len 64 --stages new-embeddings:10,all --lora-rank 4",
         "--stages new-embeddings:10,all with --lora-rank 4: LoRA already freezes the base", {"d.jsonl": OK}),
    Case("sft-lora-4bit-without-bitsandbytes", SFT + " --lora-rank 4 --lora-4bit",
         "--lora-4bit needs bitsandbytes, which is not installed", {"qa.jsonl": QA},
         setup=_then(_model(), _hidden("bitsandbytes"))),
    # ---------------------------------------------------------------- dpo
    Case("dpo-orpo-with-reference", DPO + " --loss orpo --reference {w}/m", "--reference", {"p.jsonl": PAIR},
         setup=_model()),
    Case("dpo-reference-tokenizer", DPO + " --reference {w}/ref", "its tokenizer differs from the policy's",
         {"p.jsonl": PAIR}, setup=_two_tokenizers),
    Case("dpo-eval-pairs-missing", DPO + " --eval-pairs {w}/held.jsonl", "--eval-pairs", {"p.jsonl": PAIR},
         setup=_model()),
    Case("dpo-eval-pairs-fsdp2", DPO + " --nproc 2 --strategy fsdp2 --eval-pairs {w}/p.jsonl",
         "--eval-pairs", {"p.jsonl": PAIR}, setup=_model()),
    Case("dpo-identical-pair", DPO, "p.jsonl:1: 'chosen' and 'rejected' are identical",
         {"p.jsonl": b'{"prompt": "2+2?", "chosen": "4", "rejected": "4"}\n'}, setup=_model()),
    Case("sft-hub-name-offline", "sft --pretrained-model Qwen/Qwen3-0.6B --dataset {w}/qa.jsonl -o {w}/run",
         "--pretrained-model Qwen/Qwen3-0.6B: no such local folder, and the hub model cannot be downloaded",
         {"qa.jsonl": QA}, env={"HF_HUB_OFFLINE": "1"}),
    # ---------------------------------------------------------------- export
    Case("export-llama-config", EXPORT, "config.json says model_type 'llama'; moai exports Qwen3 models",
         setup=_model(lambda m: _config(m, model_type="llama", architectures=["LlamaForCausalLM"]))),
    Case("export-only-pickled-weights", EXPORT, "has only pickled .bin weights", setup=_model(_only_pickle)),
    Case("export-truncated-weights", EXPORT, "model.safetensors is damaged or incomplete",
         setup=_model(_cut("model.safetensors"))),
    Case("export-missing-tensor", EXPORT, "the weights have no tensor model.layers.0.mlp.up_proj.weight",
         setup=_model(_drop_tensor("model.layers.0.mlp.up_proj.weight"))),
    Case("export-unknown-split-pattern", EXPORT, "llama.cpp implements no pre-tokenizer with its split pattern",
         setup=_model(_split_pattern(r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+"))),
    Case("export-old-moai-split-pattern", EXPORT, "(moai's before 2026-12", setup=_model(_split_pattern(OLD_MOAI_SPLIT))),
    Case("export-kquant-without-extra", EXPORT + " --quant q4_k_m",
         "--quant k-quants need llama.cpp's quantizer, which is not installed", setup=_without_llama_cpp),
    Case("export-unknown-quant", EXPORT + " --quant q3_k", "--quant q3_k: unknown"),
    Case("export-output-not-moai", EXPORT, "m.gguf: exists and is not a GGUF moai exported", {"m.gguf": "my notes"},
         setup=_model()),
    Case("export-adapter-only-full-model", "export {w}/m --adapter-only -o {w}/a.gguf",
         "is a full model, not a LoRA adapter folder", setup=_model()),
    Case("export-ollama-not-chatml", "export {w}/m --format ollama -o {w}/o",
         "--format ollama: the chat template is not ChatML", setup=_model(_llama3_template)),
    Case("export-disk-full", "export {w}/m -o {w}/disk/m.gguf --quant f32", "disk/m.gguf: the GGUF needs about 7.6 MiB but only 2.0 MiB is free",
         setup=_big_model_small_disk),
    Case("chat-missing-model", "chat {w}/nosuch --prompt hi", "nosuch: no such folder"),
    Case("doctor-unknown-model", "doctor --model nosuch", "--model nosuch: not a preset"),
]


# ---------------------------------------------------------------- output folders moai did not make
def _moai_run(files: dict[str, str]):
    """A folder {w}/run marked as moai's run folder (moai_llm.ownership), holding `files`."""
    def setup(w: Path, tok: Path):
        from moai_llm.ownership import write_marker

        write_marker(w / "run", "run", "moai pretrain")
        for name, text in files.items():
            (w / "run" / name).parent.mkdir(parents=True, exist_ok=True)
            (w / "run" / name).write_text(text)
    return setup


def _manifest(**change):
    """A prepared-looking dataset {w}/ds whose manifest.json says `change`."""
    base = {"format": "moai-prepared/1", "complete": True, "mode": "pretrain", "seq_len": 64, "num_rows": 1,
            "shards": ["data-00000.arrow"], "tokenizer_hash": "0" * 16}
    return {"ds/manifest.json": json.dumps({**base, **change}), "x.arrow": "not arrow"}


DAMAGED = {"checkpoints/step-4/trainer_state.json": '{"step": "six"}'}
OWNERSHIP_CASES = [
    Case("data-output-holds-input", "data prepare --tokenizer {tok} --seq-len 64 -i {w}/src/d.jsonl -o {w}/src",
         "src: holds the input", {"src/d.jsonl": OK}),
    Case("data-output-inside-input", "data prepare --tokenizer {tok} --seq-len 64 -i {w}/src -o {w}/src/prep",
         "src/prep: is inside the input folder", {"src/d.jsonl": OK}),
    Case("data-output-foreign-manifest", f"{PREP} -i {{w}}/d.jsonl".replace("{w}/out", "{w}/app"),
         "app: exists and is not a prepared dataset (it holds NOTES.txt, manifest.json, src)",
         {"d.jsonl": OK, "app/manifest.json": "{}", "app/src/main.js": "x", "app/NOTES.txt": "mine"}),
    Case("data-output-is-a-tokenizer", f"{PREP} -i {{w}}/d.jsonl".replace("{w}/out", "{w}/t"),
         "t: exists and is not a prepared dataset (it is moai's tokenizer folder)", {"d.jsonl": OK},
         setup=_copy_tokenizer("t")),
    Case("tok-output-model-folder", "tokenizer train -i {w}/c.txt --vocab-size 300 -o {w}/m",
         "m: exists and is not a tokenizer folder (it holds", {"c.txt": "hello world\n"}, setup=_model()),
    Case("tok-extend-into-checkpoint", "tokenizer extend --base-tokenizer {tok} -i {w}/c.txt --vocab-size 500 "
         "-o {w}/run/checkpoints/step-3", "step-3: exists and is not a tokenizer folder",
         {"c.txt": "hello world\n", "run/checkpoints/step-3/trainer_state.json": '{"step": 3}',
          "run/checkpoints/step-3/tokenizer.json": "{}", "run/checkpoints/step-3/model.safetensors": "w"}),
    Case("tok-output-holds-input", "tokenizer train -i {w}/c.txt --vocab-size 300 -o {w}", "holds the input",
         {"c.txt": "hello world\n"}),
    Case("tok-model-prefix-path", "tokenizer train -i {w}/c.txt --vocab-size 300 -o {w}/out --model-prefix ../../x",
         "--model-prefix '../../x': must be a folder name, not a path", {"c.txt": "hello world\n"}),
    Case("pretrain-output-users-folder", PRETRAIN + " --seq-len 64",
         "run: exists and is not a run folder (it holds metrics.jsonl, run.yaml, tb)",
         {"d.jsonl": OK, "run/run.yaml": "my: notes\n", "run/metrics.jsonl": "{}\n", "run/tb/events": "x"}),
    Case("pretrain-fresh-over-finished-run", PRETRAIN + " --seq-len 64",
         "run: holds a finished run (final_model/ from step 5)", {"d.jsonl": OK},
         setup=_moai_run({"final_model/training_state.json": '{"step": 5}', "metrics.jsonl": "{}\n"})),
    Case("pretrain-output-root", "pretrain --model tiny --tokenizer {tok} --dataset {w}/d.jsonl -o /",
         "--output-dir /: is the root folder", {"d.jsonl": OK}),
    Case("pretrain-output-inside-input", "pretrain --model tiny --tokenizer {tok} --dataset {w}/src -o {w}/src/run",
         "src/run: is inside the input folder", {"src/d.jsonl": OK}),
    Case("pretrain-resume-all-damaged", PRETRAIN + " --seq-len 64 --resume auto",
         'can be resumed from (newest step-4: trainer_state.json: "step" is "six", not the integer 4)',
         {"d.jsonl": OK}, setup=_moai_run(DAMAGED)),
    Case("pretrain-resume-named-damaged", PRETRAIN + " --seq-len 64 --resume {w}/run/checkpoints/step-4",
         "step-4 cannot be resumed from", {"d.jsonl": OK}, setup=_moai_run(DAMAGED)),
    Case("pretrain-manifest-absolute-shard", "pretrain --model tiny --tokenizer {tok} --dataset {w}/ds -o {w}/run",
         "shard '/etc/passwd' lies outside", _manifest(shards=["/etc/passwd"])),
    Case("pretrain-manifest-dotdot-shard", "pretrain --model tiny --tokenizer {tok} --dataset {w}/ds -o {w}/run",
         "shard '../x.arrow' lies outside", _manifest(shards=["../x.arrow"])),
    Case("pretrain-manifest-rows-not-a-count", "pretrain --model tiny --tokenizer {tok} --dataset {w}/ds -o {w}/run",
         '"num_rows" is "many", not a count', _manifest(num_rows="many")),
    Case("quickstart-users-folder", "quickstart --tiny -o {w}/proj",
         "proj: exists and is not a quickstart folder (it holds notes.txt, tokenizer)",
         {"proj/notes.txt": "mine", "proj/tokenizer/NOTES.md": "mine"}),
]
CASES += OWNERSHIP_CASES
CASES += [Case(**case) for case in VALUE_CASES]  # numbers, model folders, templates, records (bad_input_values.py)


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    from moai_llm.tokenizer import train_tokenizer

    texts = [f"hello world {i} 가나다라 the quick brown fox" for i in range(200)]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok", vocab_size=300)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for folders): the 'unchanged' check."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)  # a FIFO is not read
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=c.broken, strict=True))
                                  if c.broken else c for c in CASES], ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, tok, tmp_path, monkeypatch):
    w = tmp_path / "case"
    w.mkdir()
    for name, content in case.files.items():
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_bytes(content.encode() if isinstance(content, str) else content)
    cleanup = case.setup(w, tok) if case.setup else None
    try:
        env = dict(case.env)
        if "budget_mib" in env:
            env = _memory_budget(int(env.pop("budget_mib")))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        before = snapshot(w)
        args = shlex.split(case.args.format(w=w, tok=tok))
        result = CliRunner().invoke(app, args, input="y\n")
        after = snapshot(w)
    finally:
        if cleanup:
            cleanup()
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}"
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert case.expect in " ".join(output.split()), output
    assert before == after, f"changed: {sorted(set(before) ^ set(after))}"
    assert not list(w.rglob("MARKER")), "a folder's code ran"


def test_the_table_in_docs_lists_every_case():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(rows) == sorted(c.id for c in CASES)
