"""What `moai eval MODEL ...` evaluates: model folders, run folders and their checkpoints.

A MODEL is a model folder, a run's output folder (its `final_model/`, else its newest complete
checkpoint, as `moai chat` resolves it) or any Qwen3 directory. `all_checkpoints=True` turns a
run folder into every `checkpoints/step-N/` in step order, then `final_model/` unless a
checkpoint already holds the run's last step. A target also knows its run (the `run.yaml`
beside it), which decides the defaults: the chat template for SFT models, the sequence length
the run trained with, and where results are written (`RUN/eval/`).

    >>> targets = resolve_targets(["outputs/pretrain"], all_checkpoints=True)   # doctest: +SKIP
    >>> [(t.label, t.step) for t in targets]                                    # doctest: +SKIP
    [('step-100', 100), ('step-200', 200), ('final_model', 250)]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moai_llm.defaults import SEQ_LEN
from moai_llm.errors import MoaiInputError
from moai_llm.inference.loading import has_weights, resolve_model_dir

STEP_DIR = re.compile(r"^step-(\d+)$")
RUN_YAML = "run.yaml"
DEFAULT_SEQ_LEN = SEQ_LEN  # rows for bits per byte when neither the run nor the user says


@dataclass
class EvalTarget:
    """One model to evaluate and what is known about where it came from."""

    spec: str  # what the user typed
    path: Path  # the model folder loaded
    source: str  # "model" | "final_model" | "checkpoint"
    label: str  # its column in the table
    step: int | None = None  # training step, when known
    run_dir: Path | None = None  # the run folder (holds run.yaml), when there is one
    run: dict[str, Any] = field(default_factory=dict)  # run.yaml's content

    @property
    def mode(self) -> str | None:
        """"pretrain" or "sft" when the run says so."""
        return run_setting(self.run, "mode")

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "path": str(self.path), "source": self.source, "label": self.label,
                "step": self.step, "run_dir": str(self.run_dir) if self.run_dir else None, "mode": self.mode}


def run_setting(run: dict[str, Any], name: str) -> Any:
    """A setting recorded in run.yaml: `mode` and `given` flags / config file / `derived` /
    `defaults` (merged in the order training merges them), or a flat `settings:` block."""
    if name == "mode" and run.get("mode"):
        return run["mode"]
    given = run.get("given") or {}
    derived = (run.get("derived") or {}).get(name)
    for found in ((derived or {}).get("value") if isinstance(derived, dict) else None,
                  (given.get("flags") or {}).get(name), (given.get("config") or {}).get(name),
                  (run.get("defaults") or {}).get(name), (run.get("settings") or {}).get(name)):
        if found is not None:
            return found
    return None


def read_run(folder: Path) -> dict[str, Any] | None:
    """A run folder's run.yaml, or None when the folder has none."""
    path = folder / RUN_YAML
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MoaiInputError(f"{path}: not valid YAML ({exc})") from exc
    return data if isinstance(data, dict) else {}


def find_run(model_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The run folder of a model folder (itself, its parent for final_model/, its grandparent
    for checkpoints/step-N/) and its run.yaml, or (None, {})."""
    for folder in (model_dir, model_dir.parent, model_dir.parent.parent):
        run = read_run(folder)
        if run is not None:
            return folder, run
    return None, {}


def last_logged_step(run_dir: Path) -> int | None:
    """The last step in a run's metrics.jsonl (where training stopped), if any."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    steps = [json.loads(line).get("step") for line in path.read_text().splitlines() if line.strip()]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete `checkpoints/step-N/` folders of a run, in step order."""
    root = run_dir / "checkpoints"
    found = [(int(m.group(1)), d) for d in root.glob("step-*") if (m := STEP_DIR.match(d.name)) and has_weights(d)] \
        if root.is_dir() else []
    return sorted(found)


def _one(spec: str) -> EvalTarget:
    path, source = resolve_model_dir(spec)
    run_dir, run = find_run(path)
    m = STEP_DIR.match(path.name)
    step = int(m.group(1)) if m else (last_logged_step(run_dir) if run_dir and source == "final_model" else None)
    return EvalTarget(spec, path, source, spec.rstrip("/") or spec, step, run_dir, run)


def _every_checkpoint(spec: str) -> list[EvalTarget]:
    root = Path(spec).expanduser()
    resolve_model_dir(spec)  # a missing folder or a folder without any model is refused here
    run_dir, run = root, read_run(root) or {}
    found = checkpoints(root)
    if not found:
        raise MoaiInputError(f"{spec}: --all-checkpoints found no complete checkpoints/step-N/",
                             hint="pass a run's output folder written with --save-steps")
    targets = [EvalTarget(spec, d, "checkpoint", f"step-{s}", s, run_dir, run) for s, d in found]
    if has_weights(root / "final_model"):
        last = last_logged_step(root)
        if last is None or last not in {s for s, _ in found}:
            targets.append(EvalTarget(spec, root / "final_model", "final_model", "final_model", last, run_dir, run))
    return targets


def resolve_targets(specs: list[str], all_checkpoints: bool = False) -> list[EvalTarget]:
    """Every model to evaluate, in order, with unique labels; refuses missing models."""
    if not specs:
        raise MoaiInputError("no model given", hint="moai eval MODEL [MODEL ...] (a model folder, a run folder or a Qwen3 folder)")
    targets: list[EvalTarget] = []
    for spec in specs:
        found = _every_checkpoint(spec) if all_checkpoints else [_one(spec)]
        if all_checkpoints and len(specs) > 1:
            for t in found:
                t.label = f"{spec.rstrip('/')}:{t.label}"
        targets.extend(found)
    seen: dict[str, int] = {}
    for t in targets:
        if t.label in seen:
            seen[t.label] += 1
            t.label = f"{t.label} ({seen[t.label]})"
        else:
            seen[t.label] = 1
    return targets


def chat_template_default(target: EvalTarget, tokenizer_has_template: bool) -> tuple[bool, str]:
    """Whether benchmarks go through the chat template when the user did not say, and why."""
    if not tokenizer_has_template:
        return False, "the tokenizer has no chat template"
    if target.mode == "sft":
        return True, f"{target.run_dir / RUN_YAML}: mode sft"
    if target.mode == "pretrain":
        return False, f"{target.run_dir / RUN_YAML}: mode pretrain (a base model)"
    return True, "no run.yaml beside the model and its tokenizer has a chat template"


def default_seq_len(target: EvalTarget, model_positions: int | None) -> tuple[int, str]:
    """Row length for bits per byte: the run's --seq-len, else the model's context up to 2048."""
    seq = run_setting(target.run, "seq_len")
    if isinstance(seq, int) and seq >= 2:
        return seq, "the run's seq_len"
    if model_positions:
        return min(model_positions, DEFAULT_SEQ_LEN), f"min(model context {model_positions}, {DEFAULT_SEQ_LEN})"
    return DEFAULT_SEQ_LEN, "default"
