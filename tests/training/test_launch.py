"""launch: one process runs in-process, several run under torchrun; a first-step OOM halves the
micro batch, hands the new plan to `on_retry` (run.yaml) and retries with the global batch
unchanged; --dry-run shows the exact command."""

from __future__ import annotations

import textwrap

import pytest

from moai_llm.hardware.plan import Plan
from moai_llm.training.launcher.launch import (
    EXIT_FIRST_STEP_OOM,
    FirstStepOOM,
    describe,
    format_description,
    launch,
)


def _plan(**kw) -> Plan:
    base = dict(seq_len=64, micro_batch_size=8, gradient_accumulation_steps=2, env={"MOAI_TEST_VAR": "planned"},
                reasons={"micro_batch_size": "largest that fits"})
    base.update(kw)
    return Plan(**base)


def test_one_process_runs_in_process_with_the_plan_env(monkeypatch):
    monkeypatch.delenv("MOAI_TEST_VAR", raising=False)
    seen = {}

    def train(plan):
        import os

        seen["var"] = os.environ.get("MOAI_TEST_VAR")
        seen["plan"] = plan.micro_batch_size
        seen["plan_in_env"] = any(k.startswith("MOAI_PLAN") for k in os.environ)  # run.yaml only
        return 0

    assert launch(_plan(), ["--run-yaml", "x.yaml"], in_process=train) == 0
    assert seen == {"var": "planned", "plan": 8, "plan_in_env": False}
    import os

    assert "MOAI_TEST_VAR" not in os.environ  # restored afterwards


def test_first_step_oom_halves_micro_batch_and_keeps_global_batch(capsys):
    tried, recorded = [], []

    def train(plan):
        tried.append((plan.micro_batch_size, plan.gradient_accumulation_steps, plan.global_batch))
        if plan.micro_batch_size > 2:
            raise FirstStepOOM("CUDA out of memory")
        return 0

    def on_retry(plan, reason):
        recorded.append((plan.micro_batch_size, reason.split(":")[0]))

    assert launch(_plan(), [], in_process=train, on_retry=on_retry) == 0
    assert tried == [(8, 2, 16), (4, 4, 16), (2, 8, 16)]
    assert recorded == [(4, "out of memory at the first step with micro batch 8"),
                        (2, "out of memory at the first step with micro batch 4")]
    assert "retrying with micro batch 4" in " ".join(capsys.readouterr().err.split())


def test_the_failed_attempts_tensors_are_gone_when_memory_is_released(monkeypatch):
    """The failed attempt's model and activations live in the frames its exception's traceback
    holds; the cached memory is handed back after they are gone (else it stays reserved)."""
    import weakref

    import torch

    from moai_llm.training.launcher import launch as launch_module

    refs, alive_at_release = [], []
    release = launch_module._release_cuda_memory

    def observed_release():  # the real release, and what was still alive when it ran
        release()
        alive_at_release.append([ref() is not None for ref in refs])

    monkeypatch.setattr(launch_module, "_release_cuda_memory", observed_release)

    def train(plan):
        if plan.micro_batch_size > 4:
            activations = torch.zeros(1024, 1024)  # held only by this frame
            refs.append(weakref.ref(activations))
            raise FirstStepOOM("out of memory")
        return 0

    assert launch(_plan(), [], in_process=train) == 0
    assert alive_at_release == [[False]]


def test_oom_retries_are_bounded():
    calls = []

    def train(plan):
        calls.append(plan.micro_batch_size)
        raise FirstStepOOM("oom")

    assert launch(_plan(micro_batch_size=64), [], in_process=train, max_retries=2) == EXIT_FIRST_STEP_OOM
    assert calls == [64, 32, 16]


def test_odd_micro_batch_divides_by_smallest_factor():
    p = _plan(micro_batch_size=3, gradient_accumulation_steps=4, nproc_per_node=2).halved()
    assert (p.micro_batch_size, p.gradient_accumulation_steps, p.global_batch) == (1, 12, 24)
    with pytest.raises(ValueError):
        p.halved()


def test_dry_run_describes_torchrun_with_free_port_and_env(capsys, monkeypatch):
    monkeypatch.delenv("MOAI_TEST_VAR", raising=False)
    plan = _plan(nproc_per_node=4)
    desc = describe(plan, ["--run-yaml", "out/run.yaml"])
    cmd = desc["command"]
    assert desc["mode"] == "torchrun"
    assert cmd[cmd.index("--nproc_per_node") + 1] == "4"
    assert int(cmd[cmd.index("--master_port") + 1]) > 0
    assert cmd[-3:] == ["moai_llm.training.worker", "--run-yaml", "out/run.yaml"]
    assert desc["env"] == {"MOAI_TEST_VAR": "planned"}
    assert launch(plan, ["--run-yaml", "out/run.yaml"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert "export MOAI_TEST_VAR=planned" in out and "--nproc_per_node 4" in out
    assert "# micro_batch_size: largest that fits" in out


def test_user_environment_wins_and_is_reported(monkeypatch):
    monkeypatch.setenv("MOAI_TEST_VAR", "mine")
    desc = describe(_plan(nproc_per_node=2), [])
    assert desc["kept_from_environment"] == {"MOAI_TEST_VAR": "mine"}
    assert "kept from your environment" in format_description(desc)


def test_multi_node_rendezvous_flags_are_passed_through():
    plan = _plan(nproc_per_node=8, nnodes=2)
    cmd = describe(plan, [], rendezvous={"nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.1",
                                          "master_port": 29600})["command"]
    joined = " ".join(cmd)
    assert "--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29600" in joined
    cmd = describe(plan, [], rendezvous={"nnodes": 2, "rdzv_endpoint": "head:29400"})["command"]
    assert "--rdzv_endpoint head:29400" in " ".join(cmd) and "--rdzv_backend c10d" in " ".join(cmd)


@pytest.mark.slow
def test_torchrun_workers_read_the_plan_from_run_yaml_and_an_oom_retry_rewrites_it(tmp_path, monkeypatch):
    """Two gloo processes under real torchrun: rank 1 reports OOM while micro batch > 2; the
    retry's plan reaches the workers through the run.yaml that `on_retry` rewrote."""
    from moai_llm.training.record import RunRecord, read_record, record_retry

    (tmp_path / "fake_worker.py").write_text(textwrap.dedent("""
        import os, sys
        from moai_llm.training.worker.exits import exit_first_step_oom
        from moai_llm.training.record import read_record
        plan = read_record(sys.argv[2]).plan()
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.environ['RANK']} {plan.micro_batch_size} {plan.gradient_accumulation_steps} {os.environ['WORLD_SIZE']}\\n")
        if plan.micro_batch_size > 2 and os.environ["RANK"] == "1":
            exit_first_step_oom()
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    log, run_yaml = tmp_path / "log.txt", tmp_path / "run.yaml"
    plan = _plan(nproc_per_node=2, micro_batch_size=4, env={"OMP_NUM_THREADS": "1"})
    RunRecord(mode="pretrain", planned=plan.to_dict(), defaults={"seq_len": 64}).write(tmp_path)
    rc = launch(plan, [str(log), str(run_yaml)], module="fake_worker",
                on_retry=lambda p, why: record_retry(run_yaml, p, why))
    assert rc == 0
    lines = log.read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("1 ")] == ["1 4 2 2", "1 2 4 2"]
    assert "0 2 4 2" in lines
    record = read_record(run_yaml)
    assert record.plan().micro_batch_size == 2
    assert record.plan_retries[0]["micro_batch_size"] == 4
    assert "out of memory" in record.plan_retries[0]["reason"]
