"""What a run reports: metrics.jsonl, TensorBoard scalars, loss.png; MFU and where time went.

Only rank 0 writes. metrics.jsonl has one JSON object per logged step (`step`, `loss`, `lr`,
`grad_norm`, `tokens_per_s`, `tokens_per_s_per_device`, `data_wait`, `mfu` on GPUs with a
recorded peak, `eval_loss` / `eval_bpb` at evaluations, ...); a resumed run first drops the
lines after its checkpoint so the file reads as one clean run.

MFU = model FLOPs / (seconds x the device's dense peak at the run's precision x devices).
Model FLOPs of a batch (`FlopCounter`): 6 per weight of every matmul per token (forward and
backward; the embedding lookup is not a matmul, the LM head is) plus causal attention over the
documents actually in the rows: 12 x layers x query width x n(n+1)/2 for a document of n
tokens, not seq_len^2 (PaLM's appendix B counts 12·L·H·T per token for full attention). The
peak comes from the recorded hardware facts (`moai_llm.hardware.simulate.peak_flops`: exact
NVML name); a GPU without a record, and the CPU, get no MFU. `data_wait` is the share of the
window's wall time spent reading rows and moving them to the device.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai_llm.atomic import write_text_atomic
from moai_llm.hardware.plan import Plan


def attention_pairs(position_ids: Any, real: Any) -> int:
    """Query-key pairs causal attention computes over the documents of rows [B, T]: each
    document (position_ids restart at 0) of n real tokens (`real` [B, T] bool: not padding)
    contributes n(n+1)/2.

    >>> import torch
    >>> pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])         # documents of 3, 2 and 3 tokens
    >>> attention_pairs(pos, torch.ones(1, 8, dtype=torch.bool))   # 6 + 3 + 6
    15
    """
    import torch

    b, t = position_ids.shape
    starts = position_ids == 0
    starts[:, 0] = True
    segment = starts.cumsum(dim=1) + torch.arange(b, device=position_ids.device)[:, None] * (t + 1)
    n = torch.bincount(segment[real].flatten()).to(torch.int64)
    return int((n * (n + 1) // 2).sum())


@dataclass(frozen=True)
class FlopCounter:
    """Model FLOPs of training on a batch (forward + backward), see the module docstring.

    >>> import torch
    >>> from moai_llm.config import MoaiConfig
    >>> count = FlopCounter.from_config(MoaiConfig.from_preset("tiny"))
    >>> count.matmul_params, count.layers, count.q_dim
    (163840, 2, 64)
    >>> pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    >>> count(pos, torch.ones(1, 8, dtype=torch.bool)) == 6 * 163840 * 8 + 12 * 2 * 64 * 15
    True
    """

    matmul_params: int  # weights of every matmul: the layers' projections and the LM head
    layers: int
    q_dim: int  # query heads x head_dim

    @classmethod
    def from_config(cls, config: Any) -> FlopCounter:
        from moai_llm.hardware.memory import ModelShape

        shape = ModelShape.from_config(config)
        return cls(shape.matmul_params, shape.layers, shape.q)

    def __call__(self, position_ids: Any, real: Any) -> float:
        tokens = int(real.sum())
        pairs = attention_pairs(position_ids, real)
        return 6.0 * self.matmul_params * tokens + 12.0 * self.layers * self.q_dim * pairs


def peak_precision(plan: Plan) -> str:
    """The peak a run's matmuls run at: bf16 autocast, TF32 where the plan allows it, else fp32."""
    if plan.precision == "bf16":
        return "bf16"
    return "tf32" if plan.tf32 else "fp32"


def device_peak_flops(plan: Plan, device: Any) -> float | None:
    """The recorded dense peak of this process's GPU at the run's precision; None on the CPU
    and for GPUs without a record (no MFU then)."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch

    from moai_llm.hardware.simulate import peak_flops

    return peak_flops(torch.cuda.get_device_name(device), peak_precision(plan))


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
    steps (as Trainer logs it), tokens/s over the window (all processes, and per device), the
    share of wall time spent waiting for data, MFU where the peak is known.

    >>> w = LogWindow(every=2, max_steps=6, start_step=0)
    >>> for done, loss in enumerate([4.0, 2.0, 3.0, 1.0], start=1):
    ...     w.add(loss, tokens=100)
    ...     if w.due(done):                  # the first step, then every 2: mean of 3.0 and 1.0
    ...         print(done, w.take(done)["loss"])
    1 4.0
    2 2.0
    4 2.0
    """

    def __init__(self, every: int, max_steps: int, start_step: int, peak: float | None = None,
                 devices: int = 1):
        self.every, self.max_steps, self.start_step = every, max_steps, start_step
        self.peak, self.devices = peak, max(1, devices)
        self.t_start = self.t0 = time.perf_counter()
        self.tokens = self.tokens_total = 0
        self.loss, self.steps, self.flops, self.data_s = 0.0, 0, 0.0, 0.0

    def add(self, loss: float, tokens: int, flops: float = 0.0, data_s: float = 0.0) -> None:
        self.tokens += tokens
        self.tokens_total += tokens
        self.flops += flops
        self.data_s += data_s
        if math.isfinite(loss):
            self.loss, self.steps = self.loss + loss, self.steps + 1

    def due(self, done: int) -> bool:
        """Every `every` steps, the last step, and the first step of the run. A resumed run
        logs where the uninterrupted one would: with --save-steps a multiple of
        --logging-steps its lines (and their losses) are the same."""
        return done % self.every == 0 or done == self.max_steps or done == 1

    def take(self, done: int) -> dict[str, Any]:
        """The window's record (loss, tokens_per_s, tokens_per_s_per_device, data_wait, tokens,
        elapsed_s, cpu_s, mfu); starts a new window."""
        now = time.perf_counter()
        seconds = max(now - self.t0, 1e-9)
        tps = self.tokens / seconds
        record = {"loss": round(self.loss / self.steps, 6) if self.steps else float("nan"),
                  "tokens_per_s": round(tps, 1),
                  "tokens_per_s_per_device": round(tps / self.devices, 1),
                  "data_wait": round(self.data_s / seconds, 5), "tokens": self.tokens_total,
                  "elapsed_s": round(now - self.t_start, 2), "cpu_s": round(time.process_time(), 2)}
        if self.peak:
            record["mfu"] = round(self.flops / (seconds * self.peak * self.devices), 4)
        self.tokens, self.t0, self.loss, self.steps = 0, now, 0.0, 0
        self.flops = self.data_s = 0.0
        return record

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` spent outside training steps (an evaluation, a checkpoint) out of
        the window's rates (elapsed_s still counts them)."""
        self.t0 += seconds

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t_start


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(run_dir: str | Path) -> Path | None:
    """Draw loss (and eval loss, lr) against step into run_dir/loss.png (matplotlib Agg); with
    `eval_bpb` (--eval-text), bits per byte of the held-out text on its own axis below."""
    lines = read_metrics(run_dir)
    records = [r for r in lines if "loss" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bpb = [r for r in lines if "eval_bpb" in r]
    fig, axes = plt.subplots(2 if bpb else 1, 1, figsize=(7, 6 if bpb else 4), dpi=100,
                             sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train loss")
    evals = [r for r in lines if "eval_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if any("lr" in r for r in records):
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in records], [r.get("lr", 0) for r in records], color="gray",
                 alpha=0.4, label="lr")
        ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    if bpb:
        low = axes[1][0]
        low.plot([r["step"] for r in bpb], [r["eval_bpb"] for r in bpb], "o-", color="tab:green",
                 label="held-out text")
        low.set_ylabel("bits per byte")
        low.grid(alpha=0.3)
        low.legend(loc="upper right")
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
