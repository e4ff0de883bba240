"""What an evaluation leaves behind: one JSON per evaluation, a table, a bits-per-byte curve.

Each evaluation is written to `RUN/eval/<time>-<label>.json` (or `--output DIR`) atomically,
with the model, the settings, every figure and the versions of moai, torch, transformers and
lm-eval, so a number can be traced to what produced it. `table` lays several evaluations side
by side (a column per model); `plot_bpb` draws bits per byte against training step.

    >>> records = [{"label": "step-10", "text": {"bits_per_byte": 2.5, "bytes_per_token": 3.1,
    ...             "token_perplexity": 200.0}, "tasks": []}]
    >>> table(records)["rows"][0]
    ['bits per byte', '2.500']
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_text_atomic

TEXT_ROWS = (("bits per byte", "bits_per_byte", "{:.3f}"), ("bytes per token", "bytes_per_token", "{:.3f}"),
             ("token perplexity", "token_perplexity", "{:.2f}"))


def versions() -> dict[str, str | None]:
    """Versions of everything that decides a figure."""
    from importlib import metadata

    import moai_llm

    out: dict[str, str | None] = {"moai": moai_llm.__version__, "python": platform.python_version()}
    for name, dist in (("torch", "torch"), ("transformers", "transformers"), ("lm_eval", "lm_eval")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _slug(label: str) -> str:
    return re.sub(r"[^\w.-]+", "_", label).strip("_")[:80] or "model"


def write_record(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write one evaluation as JSON into `folder` (created), atomically; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}-{_slug(record['label'])}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}-{_slug(record['label'])}-{n}.json"
    return write_text_atomic(path, json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


def check_writable(folder: Path) -> str | None:
    """Why results cannot be written into `folder` (None when they can); creates nothing."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file"
    if not os.access(probe, os.W_OK):
        return f"{probe} is not writable"
    return None


def _task_label(row: dict[str, Any]) -> str:
    shots = f", {row['shots']}-shot" if row.get("shots") is not None else ""
    flt = f" [{row['filter']}]" if row.get("filter") not in (None, "none") else ""
    return f"{row['task']} {row['metric']}{flt}{shots}"


def table(records: list[dict[str, Any]]) -> dict[str, Any]:
    """{"columns": [metric, label, ...], "rows": [[name, value, ...], ...]} over evaluations."""
    columns = ["metric"] + [r["label"] for r in records]
    rows: list[list[str]] = []
    if any(r.get("text") for r in records):
        for title, key, fmt in TEXT_ROWS:
            rows.append([title] + [fmt.format(r["text"][key]) if r.get("text") else "-" for r in records])
    order: list[str] = []
    values: dict[str, list[str]] = {}
    for i, record in enumerate(records):
        for row in record.get("tasks") or []:
            name = _task_label(row)
            if name not in values:
                order.append(name)
                values[name] = ["-"] * len(records)
            err = f" ± {row['stderr']:.3f}" if row.get("stderr") is not None else ""
            values[name][i] = f"{row['value']:.3f}{err}"
    rows += [[name] + values[name] for name in order]
    if any(r.get("pairs") for r in records):  # --pairs: preference accuracy and mean margin
        for title, key, fmt in (("pairs: accuracy", "accuracy", "{:.3f}"), ("pairs: margin", "margin", "{:+.4f}")):
            rows.append([title] + [fmt.format(r["pairs"][key]) if r.get("pairs") else "-" for r in records])
    return {"columns": columns, "rows": rows}


def plot_bpb(points: list[tuple[int, float]], path: str | Path, title: str = "") -> Path:
    """Bits per byte against training step, as a PNG (matplotlib Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps, values = zip(*sorted(points), strict=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(steps, values, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte (held-out text)")
    ax.set_title(title or "bits per byte over training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
