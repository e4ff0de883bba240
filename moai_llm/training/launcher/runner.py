"""From settings to a launched run: check inputs, derive, plan, write run.yaml, launch.

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.progress import set_quiet
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> from moai_llm.training.settings import resolve_settings
    >>> set_quiet(True)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = train_tokenizer(texts, d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    >>> settings, sources = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 1, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> record = prepare_run(settings, sources)      # checks, plans, writes run.yaml
    >>> (d / "run" / "run.yaml").is_file(), record.plan().strategy
    (True, 'single')
    >>> code, result = launch_run(record, show_progress=False)   # 0 on success
    >>> code, result["step"]
    (0, 1)
    >>> set_quiet(False)

`plan_for` is what `moai doctor` calls too, so doctor, `--dry-run` and the run show one plan.
A dry run (`plan_only=True`) needs no tokenizer or dataset: the model preset's vocabulary and
the --seq-len setting are used, it says so, and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.hardware.plan import Plan
from moai_llm.training import adaptation
from moai_llm.training.launcher import guards, inputs, nodes, resolve, resume
from moai_llm.training.record import RUN_YAML, RunRecord, record_retry
from moai_llm.training.settings import SettingsSources, TrainSettings
from moai_llm.training.worker.checkpoint import remove_stale_temps


def facts_for(s: TrainSettings, output_dir: str | Path | None = None):
    """This machine's facts (probe), or recorded facts of `--simulate` hardware."""
    from moai_llm.hardware.probe import probe
    from moai_llm.hardware.simulate import simulate

    where = str(output_dir) if output_dir else None
    if s.simulate:
        return simulate(s.simulate, where)
    from moai_llm.resources import available_memory

    facts = probe(where)
    # The tightest of free RAM, a cgroup limit, ulimit -v and MOAI_MEMORY_LIMIT: what a run can get.
    room = available_memory().bytes
    facts.ram_available_bytes = min(facts.ram_available_bytes, room) if facts.ram_available_bytes else room
    return facts


def plan_for(s: TrainSettings, model_config: Any, facts: Any = None, growth: Any = None,
             lora: dict | None = None) -> Plan:
    """The plan for these settings: the planner with the settings' choices (and, for LoRA, the
    adapters' sizes: `lora`, or worked out here with `growth`'s new rows), nothing added."""
    from moai_llm.hardware.planner import make_plan
    from moai_llm.training.adaptation import lora_facts

    facts = facts if facts is not None else facts_for(s)
    if lora is None:
        lora = lora_facts(s, model_config, growth)
    return make_plan(facts, model_config, s.seq_len, s.global_batch, max_steps=s.max_steps,
                     lora=lora, **s.plan_choices())


def prepare_run(s: TrainSettings, sources: SettingsSources, argv: list[str] | None = None,
                plan_only: bool = False) -> RunRecord:
    """Resolve every input once (launcher/resolve.py), prepare data, plan; write run.yaml.
    Returns the record, which the workers read.

    Inputs are checked before the output folder is touched; a folder this call created is
    removed again when the run is refused, so bad input leaves nothing behind. The folder's
    lock is held from the first write (`holding`). A finished run asked to resume is not
    touched: the record returned says it is complete (`record.complete`). `plan_only` (a dry
    run): a missing tokenizer or dataset is allowed; then nothing is checked on disk or
    written, and the record holds the plan alone."""
    base = inputs.pretrained_folder(s)  # once; named first: "no such folder", not "no tokenizer"
    if plan_only and (not s.dataset or inputs.tokenizer_dir(s, {}, base, required=False) is None):
        return _plan_without_inputs(s, sources, argv, base)
    found = resolve.first(s, base)
    from moai_llm.ownership import refuse_unsafe

    refuse_unsafe(s.output_dir)  # `/`, home, the current folder: refused before a lock is made beside them
    with reading(prepared_input(s), s.mode):  # a rebuild of it waits until the run is over
        found = resolve.rest(found, sources.given())
        # a dry run of any node rank plans alone: it joins no live run and waits for no node 0
        with holding(s.output_dir, s.mode, None if plan_only else s) as lock:
            if isinstance(lock, nodes.Member):  # node rank > 0: node 0 wrote the record
                return nodes.joined_record(lock, s)
            resume.check_output_folder(s, _inputs_of(s))  # never into a user's folder
            done = resume.finished_run(s)
            if done is not None:
                nodes.publish(lock, Path(s.output_dir), complete=True)
                return done
            resume_from = resume.resolve(s)  # once: the workers read run.yaml
            entries = _entries(s.output_dir)
            out = inputs.check_output_dir(s.output_dir)
            try:
                _mark_run(out, s.mode)
                remove_stale_temps(out)  # what killed saves left: the lock says no live run owns it
                if found.manifest is None:
                    found.manifest = inputs.prepare_sources(found.settings, found.tokenizer_dir, out, found.derived)
                record = _record(found, sources, out, resume_from, argv, plan_only)
            except MoaiInputError:
                _remove_new(out, entries)  # made by this call: nothing of yours was there
                raise
            record.found_in_folder, record.made_folder = entries or frozenset(), entries is None
            record.write(out)
            nodes.publish(lock, out)  # the other nodes of a multi-node run read it now
    return record


def _inputs_of(s: TrainSettings) -> list[str]:
    """What this run reads from disk (the run folder may not hold them)."""
    return [p for p in (s.tokenizer, s.pretrained_model, s.model_config, *s.dataset, *s.eval_text) if p]


def _mark_run(out: Path, mode: str) -> None:
    """The ownership marker (moai_llm.ownership) of a run folder, once."""
    from moai_llm.ownership import kind_of, read_marker, write_marker

    if read_marker(out) is None and kind_of(out) in (None, "run"):
        write_marker(out, "run", f"moai {mode}")


def prepared_input(s: TrainSettings) -> str | None:
    """The prepared dataset folder a run reads (--dataset DIR, or the run's own data/ once
    derived), or None before it is known."""
    if s.prepared_dir:
        return s.prepared_dir
    return s.dataset[0] if inputs.is_prepared(s) else None


def _entries(folder: str | Path) -> frozenset[str] | None:
    """The names in `folder` now (None: it does not exist)."""
    path = Path(folder)
    return frozenset(os.listdir(path)) if path.is_dir() else None


def _remove_new(out: Path, found: frozenset[str] | None) -> None:
    """Remove what this launch added to `out` (the whole folder when it made it)."""
    if found is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in set(os.listdir(out)) - found:
        path = out / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


_HELD: dict[Path, Any] = {}


@contextlib.contextmanager
def holding(output_dir: str | Path, mode: str, s: TrainSettings | None = None) -> Iterator[Any]:
    """Hold the run folder's lock (moai_llm.locks.RunLock: a second launch into it is refused,
    one line naming the owner; a dead owner's lock is taken over, said so) for the block.
    Re-entrant in one process: the CLI holds it around `prepare_run` and `launch_run`, which take
    it themselves when called alone; torchrun workers and OOM retries run under the launcher's.
    With the settings `s` of a multi-node run, the lock carries the run's key and a node of rank
    > 0 joins node 0's lock instead (launcher/nodes.py)."""
    from moai_llm.locks import RunLock, lock_path

    key = lock_path(output_dir)
    if key in _HELD:
        yield _HELD[key]
        return
    run_key = nodes.run_key(s) if s is not None else None
    if s is not None and run_key is not None and nodes.is_member(s):
        lock = nodes.Member(output_dir, f"moai {mode}", run_key, settings=s)
    else:
        lock = RunLock(output_dir, command=f"moai {mode}", key=run_key)
    try:
        lock.acquire()
    except OSError as exc:  # a file where a folder should be, no permission, a read-only disk
        raise MoaiInputError(f"--output-dir {output_dir}: cannot write there ({exc.strerror or exc})",
                             hint="choose a folder you can write to") from None
    _HELD[key] = lock
    try:
        yield lock
    finally:
        _HELD.pop(key, None)
        lock.release()


@contextlib.contextmanager
def reading(folder: str | Path | None, mode: str) -> Iterator[None]:
    """Hold a shared lock (moai_llm.locks.ReadLock) on the prepared dataset `folder` for the
    block: `moai data prepare` refuses to rebuild it meanwhile, and this waits while one is
    being built. Re-entrant in one process, like `holding`; None holds nothing."""
    if folder is None:
        yield
        return
    from moai_llm.locks import ReadLock, readers_path

    key = readers_path(folder)
    if key in _HELD:
        yield
        return
    lock = ReadLock(folder, command=f"moai {mode}")
    try:
        lock.acquire()
    except OSError as exc:  # a read-only parent folder: nothing can rebuild it there either
        from moai_llm.progress import warn

        warn(f"{folder}: cannot hold it against rebuilds ({exc.strerror or exc})")
        yield
        return
    _HELD[key] = lock
    try:
        yield
    finally:
        _HELD.pop(key, None)
        lock.release()


def _record(found: resolve.Found, sources: SettingsSources, out: Path, resume_from: Path | None,
            argv: list[str] | None, plan_only: bool = False) -> RunRecord:
    """Plan, check memory and disk against the plan, and put what was resolved in a RunRecord."""
    from moai_llm.config import parameter_count
    from moai_llm.progress import info
    from moai_llm.training.resolved import BaseModel

    s, config, manifest = resolve.with_derived(found.settings, found.derived), found.config, found.manifest
    info(f"data: {manifest.get('num_rows', '?')} rows of {s.seq_len} tokens in {s.prepared_dir}")
    plan = plan_for(s, config, facts_for(s, out), lora=found.lora)
    adaptation.check_4bit(s, plan)
    resume.check_global_batch(resume_from, plan.global_batch)
    if not plan_only:  # a dry run allocates nothing: it shows the plan and its warnings
        guards.check_memory(plan, config)
        guards.check_disk(out, config, s.save_total_limit, found.tokenizer_dir)
    from moai_llm.training.launcher import dpo

    pairs = dpo.resolve(s, found, plan, out, plan_only)  # dpo: the reference's log-probs, stored
    return RunRecord.from_sources(
        sources, found.derived, plan, command=_argv(argv), schedule=found.schedule.to_dict(),
        resume=_resume_section(s.resume, resume_from), model_config=found.model_config,
        base_model=BaseModel.of(found.base).to_dict() if found.base is not None else None, preference=pairs,
        model={"parameters": parameter_count(config), "vocab_size": config.vocab_size,
               "from": s.pretrained_model or s.model_config or s.model},
        tokenizer={"path": str(found.tokenizer_dir), "size": len(found.tokenizer), "special_ids": found.special_ids},
        data={k: manifest.get(k) for k in ("num_rows", "num_tokens", "mode",
                                           "packing_efficiency", "tokenizer_hash")},
    )


def _plan_without_inputs(s: TrainSettings, sources: SettingsSources, argv: list[str] | None,
                         base: Any = None) -> RunRecord:
    """A dry run without tokenizer or dataset: the model's own vocabulary, the --seq-len
    setting; said so; nothing written."""
    from moai_llm.progress import info

    derived: dict[str, dict[str, Any]] = {}
    inputs.sequence_length(s, "seq_len" in sources.given(), derived, base)
    s = resolve.with_derived(s, derived)
    model_config, config = inputs.model_config_for(s, None, None, derived, inputs.pretrained_config(base))
    if not s.tokenizer:
        info(f"no tokenizer: planning with {derived['vocab_size']['reason'].split(' (')[0]} "
             f"({config.vocab_size:,} tokens)")
    if not s.dataset:
        info(f"no dataset: planning for --seq-len {s.seq_len} ({sources.source('seq_len')})")
    info("plan only: no run.yaml written (a run needs --tokenizer and --dataset)")
    return RunRecord.from_sources(sources, derived, plan_for(s, config), command=_argv(argv),
                                  schedule=resolve.schedule_of(s).to_dict(), model_config=model_config)


def _resume_section(requested: str | None, checkpoint: Path | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    from moai_llm.training.worker.checkpoint import checkpoint_step

    return {"requested": requested, "checkpoint": str(checkpoint), "step": checkpoint_step(checkpoint)}


def _argv(argv: list[str] | None) -> list[str]:
    import sys

    return list(argv if argv is not None else sys.argv)


def launch_description(record: RunRecord, in_process: bool = True) -> dict[str, Any]:
    """What `launch_run` would run (mode, command, environment, plan): --dry-run's output."""
    from moai_llm.training.launcher.launch import describe

    s = record.settings()
    return describe(record.plan(), ["--run-yaml", str(Path(s.output_dir) / RUN_YAML)],
                    rendezvous=_rendezvous(s), in_process=in_process)


def _rendezvous(s: TrainSettings) -> dict[str, Any] | None:
    several = s.nnodes > 1
    found = {k: v for k, v in {
        "nnodes": s.nnodes if several else None, "node_rank": s.node_rank if several else None,
        "master_addr": s.master_addr, "master_port": s.master_port, "rdzv_endpoint": s.rdzv_endpoint,
    }.items() if v is not None}
    return found or None


def launch_run(record: RunRecord, show_progress: bool = True) -> tuple[int, dict]:
    """Run the plan of `record`: in this process for one process, torchrun for several.
    A first-step OOM retry rewrites the plan in run.yaml before relaunching. A complete run
    (`record.complete`) is not run again. A run that fails before it saved anything leaves
    the folder as it found it (no lone run.yaml)."""
    from moai_llm.training.launcher.launch import launch
    from moai_llm.training.worker import train

    if record.complete:
        return 0, dict(record.complete)
    resolved = record.resolved()
    s = resolved.settings
    run_yaml = Path(s.output_dir) / RUN_YAML
    result: dict[str, Any] = {}

    def in_process(plan: Plan) -> int:
        result.update(train(dataclasses.replace(resolved, plan=plan), show_progress=show_progress))
        return 0

    with holding(s.output_dir, s.mode, s), reading(prepared_input(s), s.mode):
        try:
            code = launch(record.plan(), ["--run-yaml", str(run_yaml)], rendezvous=_rendezvous(s),
                          in_process=in_process,
                          on_retry=lambda plan, why: record_retry(run_yaml, plan, why))
        except BaseException:
            _forget_if_nothing_saved(record, Path(s.output_dir))
            raise
        if code != 0:
            _forget_if_nothing_saved(record, Path(s.output_dir))
    return code, result


def _forget_if_nothing_saved(record: RunRecord, out: Path) -> None:
    """After a failed fresh launch: when no checkpoint was saved and no step was logged, remove
    what this launch added to the folder (run.yaml, prepared data, empty logs), or the folder
    it made: a failed run leaves no lone run.yaml."""
    from moai_llm.training.worker.checkpoint import latest_checkpoint
    from moai_llm.training.worker.metrics import read_metrics

    if record.found_in_folder is None or record.resume is not None or not out.is_dir():
        return  # not prepared by this launch, or a resumed run: its folder is the user's
    if latest_checkpoint(out) is not None or read_metrics(out):
        return
    _remove_new(out, None if record.made_folder else record.found_in_folder)
