"""Training: `moai pretrain`, `moai sft`. Two rooms, and what passes between them.

    launcher/        from flags to run.yaml: every input resolved once (the pretrained folder,
                     tokenizer, manifest, vocabulary growth, model config, schedule, resume
                     checkpoint, plan), guards, resume decisions, and the launch in-process or
                     through torchrun (launcher/__init__.py lists its files)
    worker/          one training process: reads run.yaml and trains; the loop and its step,
                     checkpoints, metrics, DDP/FSDP2 (worker/__init__.py lists its files)

Beside them, read by both (they import neither room):

    settings.py      TrainSettings: every default, once; mode differences; --config; flags
    record.py        run.yaml: given / defaults / derived / plan / schedule / resume, kept apart
    resolved.py      Resolved: the run as the launcher resolved it, as the workers take it
    schedule.py      WSD / cosine / linear / constant, resolved into steps
    adaptation.py    what a run does to its base model: vocabulary growth, stages, LoRA
    stages.py        --stages: the new embedding rows alone first, then everything
    lora.py          peft LoRA adapters and their sizes (the adapter folder: moai_llm/adapters.py)

Imports go one way: the launcher imports the worker (to run it in this process), the worker
never imports the launcher, and neither is imported by the modules beside them
(tests/test_import_graph.py). The quickstart (moai_llm/quickstart.py) uses the launcher.

The plan comes from moai_llm.hardware.planner (through `launcher.plan_for`); the workers read
it and never re-derive it. A two-step pretraining run of the `tiny` preset (seconds):

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
    >>> from moai_llm.training.launcher import prepare_run, launch_run
    >>> settings, sources = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 2, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> code, result = launch_run(prepare_run(settings, sources), show_progress=False)
    >>> code, result["step"], pathlib.Path(result["final_model"]).name
    (0, 2, 'final_model')
    >>> set_quiet(False)
"""
