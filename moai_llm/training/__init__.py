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

    >>> from moai_llm.training.settings import resolve_settings
    >>> from moai_llm.training.runner import prepare_run, launch_run
    >>> settings, reasons = resolve_settings("pretrain", flags={"model": "tiny", ...})
    >>> code, result = launch_run(prepare_run(settings, reasons))
"""
