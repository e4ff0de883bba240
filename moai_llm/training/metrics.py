"""What a run reports: metrics.jsonl, TensorBoard scalars, loss.png, and MFU on GPUs.

Only rank 0 writes. metrics.jsonl has one JSON object per logged step (`step`, `loss`, `lr`,
`grad_norm`, `tokens_per_s`, `mfu` on GPU, ...); a resumed run first drops the lines after
its checkpoint so the file reads as one clean run.

    >>> import pathlib, tempfile
    >>> run_dir = pathlib.Path(tempfile.mkdtemp())
    >>> w = MetricsWriter(run_dir)
    >>> w.log(10, {"loss": 3.2, "lr": 1e-4})
    >>> w.log(20, {"loss": 2.9, "lr": 1e-4})
    >>> w.close(); plot_loss(run_dir).name
    'loss.png'
    >>> read_metrics(run_dir)[-1]
    {'step': 20, 'loss': 2.9, 'lr': 0.0001}
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_text_atomic

# Dense bf16 peak FLOP/s of common accelerators, for MFU (model FLOPs / peak).
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
    "L40S": 362e12, "L40": 181e12, "A40": 150e12, "A10": 125e12, "L4": 121e12,
    "RTX 4090": 165e12, "RTX 5090": 210e12, "RTX 3090": 71e12, "V100": 125e12, "B200": 2250e12,
}


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weights plus attention's 12·L·H·T (PaLM appendix)."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


class MetricsWriter:
    """Append-only metrics.jsonl plus TensorBoard (tb/) scalars; a no-op on ranks other than 0."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None:  # a fresh start: what an earlier attempt logged is not this run's
            self.path.unlink(missing_ok=True)
            if tensorboard:
                shutil.rmtree(Path(run_dir) / "tb", ignore_errors=True)
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (open for the whole run)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: v for k, v in values.items() if v is not None}}
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}" if not key.startswith("eval") else key,
                                       value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


class LogWindow:
    """One metrics.jsonl line per logging window: the loss averaged over the window's finite
    steps (as Trainer logs it), tokens/s over the window, MFU where the peak is known.

    >>> w = LogWindow(every=2, max_steps=6, start_step=0)
    >>> for done, loss in enumerate([4.0, 2.0, 3.0, 1.0], start=1):
    ...     w.add(loss, tokens=100)
    ...     if w.due(done):                  # the first step, then every 2: mean of 3.0 and 1.0
    ...         print(done, w.take(done)["loss"])
    1 4.0
    2 2.0
    4 2.0
    """

    def __init__(self, every: int, max_steps: int, start_step: int, flops_per_token: float = 0.0,
                 peak: float | None = None):
        self.every, self.max_steps, self.start_step = every, max_steps, start_step
        self.flops_per_token, self.peak = flops_per_token, peak
        self.t_start = self.t0 = time.perf_counter()
        self.tokens = self.tokens_total = 0
        self.loss, self.steps = 0.0, 0

    def add(self, loss: float, tokens: int) -> None:
        self.tokens += tokens
        self.tokens_total += tokens
        if math.isfinite(loss):
            self.loss, self.steps = self.loss + loss, self.steps + 1

    def due(self, done: int) -> bool:
        """Every `every` steps, the last step, and the first step of the run. A resumed run
        logs where the uninterrupted one would: with --save-steps a multiple of
        --logging-steps its lines (and their losses) are the same."""
        return done % self.every == 0 or done == self.max_steps or done == 1

    def take(self, done: int) -> dict[str, Any]:
        """The window's record (loss, tokens_per_s, tokens, elapsed_s, mfu); starts a new one."""
        now = time.perf_counter()
        tps = self.tokens / max(now - self.t0, 1e-9)
        record = {"loss": round(self.loss / self.steps, 6) if self.steps else float("nan"),
                  "tokens_per_s": round(tps, 1), "tokens": self.tokens_total,
                  "elapsed_s": round(now - self.t_start, 2), "cpu_s": round(time.process_time(), 2)}
        if self.peak:
            record["mfu"] = round(tps * self.flops_per_token / self.peak, 4)
        self.tokens, self.t0, self.loss, self.steps = 0, now, 0.0, 0
        return record

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t_start


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(run_dir: str | Path) -> Path | None:
    """Draw loss (and eval loss, lr) against step into run_dir/loss.png (matplotlib Agg)."""
    records = [r for r in read_metrics(run_dir) if "loss" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train loss")
    evals = [r for r in read_metrics(run_dir) if "eval_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if any("lr" in r for r in records):
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in records], [r.get("lr", 0) for r in records], color="gray",
                 alpha=0.4, label="lr")
        ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
