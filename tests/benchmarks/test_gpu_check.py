"""benchmarks/gpu_check.py in its CPU mode: the one GPU check keeps working while no GPU runs it.

The script is run as a user runs it (`python benchmarks/gpu_check.py --cpu --out DIR`, one
thread); its JSON is read back. Every part must run: attention backends equal on packed rows,
the memory model against measured peaks, moai's own training step timed (tokens/s, data wait),
and a first-step out-of-memory retry that ends in a finished run with a smaller plan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_cpu_mode_runs_every_part(tmp_path):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    parts = data["parts"]
    assert data["mode"] == "cpu"
    assert {name: p["status"] for name, p in parts.items()} == dict.fromkeys(
        ("attention", "memory", "throughput", "oom"), "ok"), json.dumps(parts)[-3000:]
    assert "## oom: ok" in (out / "gpu_check.md").read_text()

    attention = parts["attention"]
    assert attention["all_equal"] is True
    ran = {r["backend"]: r for r in attention["rows"] if "skipped" not in r}
    assert {"flex_attention", "sdpa", "eager"} <= set(ran)
    assert all(r["out_max_diff"] <= 1e-4 for r in ran.values())

    memory = [r for r in parts["memory"]["rows"] if "ratio" in r]
    assert len(memory) == 2 and all(r["measured_gib"] > 0 and r["predicted_gib"] > 0 for r in memory)

    rows = parts["throughput"]["rows"]
    assert {(r["model"], r["compiled"]) for r in rows} == {("tiny", False), ("tiny", True), ("small", False)}
    for r in rows:
        assert r["tokens_per_s"] > 0, r
        assert 0 <= r["data_wait"] < 1, r
        assert r["mfu"] is None  # no recorded peak for a CPU

    oom = parts["oom"]
    assert oom["exit_code"] == 0 and oom["finished"] is True and oom["retried"] is True
    assert oom["final_micro"] < oom["first_micro"]
    assert len(oom["retries"]) >= 1 and oom["retries"][0]["micro_batch_size"] == oom["first_micro"]
    assert all("out of memory at the first step" in r["reason"] for r in oom["retries"])
