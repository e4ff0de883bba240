"""Training: `moai pretrain`, `moai sft`, `moai quickstart`.

One module per concern; the runner composes the run, the loop composes its parts:

    settings.py          TrainSettings: every default, once; mode differences; --config; flags
    inputs.py            checks of tokenizer, data, output folder; values derived from them
    record.py            run.yaml: given / defaults / derived / plan / resume, kept apart
    runner.py            prepare_run (check, derive, plan, record) and launch_run, under the folder's lock
    launch.py            in-process or torchrun, first-step OOM retry (FirstStepOOM)
    worker.py            torchrun entry: python -m moai_llm.training.worker --run-yaml OUT/run.yaml
    loop.py              the training loop: builds the parts below and steps through the run
    step.py              one optimizer step (accumulation, global-token loss, NaN skip)
    evaluation.py        held-out rows, eval_loss every --eval-steps
    checkpoint_policy.py when to save; checkpoint.py: atomic checkpoints/step-N, resume, final_model/
    trainer_state.py     TrainerState: where a run stands (step, data position, ...), one value
    resume.py            which checkpoint to resume, a finished run left alone, --max-steps raised
    guards.py            memory and disk checked against the plan before anything is allocated
    faults.py            named fault points where tests kill runs (MOAI_FAULT_KILL_AT)
    metrics.py           metrics.jsonl, the logging window, TensorBoard, loss.png, MFU
    distributed.py       rank/device, process group, DDP/FSDP2 wrapping, gathered states
    model_setup.py       the model (the plan's attention backend, fp32 masters) and fused AdamW
    schedule.py          WSD / cosine / linear / constant with steps or fractions
    batches.py           deterministic data order; the data position is one number
    quickstart.py        the whole path on one machine

The plan comes from moai_llm.hardware.planner (through `runner.plan_for`); training reads it
and never re-derives it. A two-step pretraining run of the `tiny` preset (seconds):

    >>> import json, pathlib, tempfile
    >>> from moai_llm import corpora
    >>> from moai_llm.progress import set_quiet
    >>> from moai_llm.tokenizer import train_tokenizer
    >>> set_quiet(True)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> texts = list(corpora.iter_texts("en"))[:50]
    >>> tok = train_tokenizer(texts, d / "tok", vocab_size=300, show_progress=False)
    >>> _ = (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\\n" for t in texts))
    >>> from moai_llm.training.settings import resolve_settings
    >>> from moai_llm.training.runner import prepare_run, launch_run
    >>> settings, sources = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 2, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> code, result = launch_run(prepare_run(settings, sources), show_progress=False)
    >>> code, result["step"], pathlib.Path(result["final_model"]).name
    (0, 2, 'final_model')
    >>> set_quiet(False)
"""
