"""Training: `moai pretrain`, `moai sft`, `moai quickstart`.

One module per concern; the runner composes them:

    settings.py     TrainSettings: presets/training/<mode>.yaml ← --config ← flags, with reasons
    runner.py       checks input, prepares data, sizes the model, plans, writes run.yaml, launches
    worker.py       torchrun entry: python -m moai_llm.training.worker --run-yaml OUT/run.yaml
    loop.py         the training loop (DDP/FSDP2, accumulation, NaN skip, metrics, checkpoints)
    model_setup.py  model (fp32 masters, vocabulary from the tokenizer), fused AdamW, wrapping
    schedule.py     WSD / cosine / linear / constant with steps or fractions
    batches.py      deterministic data order; the data position is one number
    checkpoint.py   atomic checkpoints/step-N, keep-last-K, resume, final_model/
    metrics.py      metrics.jsonl, TensorBoard, loss.png, MFU
    quickstart.py   the whole path on one machine

A two-step pretraining run of the `tiny` preset on a few embedded documents (seconds):

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
    >>> settings, reasons = resolve_settings("pretrain", flags={
    ...     "model": "tiny", "tokenizer": str(tok), "dataset": [str(d / "docs.jsonl")],
    ...     "output_dir": str(d / "run"), "max_steps": 2, "seq_len": 64, "micro_batch_size": 2,
    ...     "gradient_accumulation_steps": 1, "nproc": 1})
    >>> code, result = launch_run(prepare_run(settings, reasons), show_progress=False)
    >>> code, result["step"], pathlib.Path(result["final_model"]).name
    (0, 2, 'final_model')
    >>> set_quiet(False)
"""
