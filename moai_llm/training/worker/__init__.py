"""The worker: one training process, reading what the launcher resolved and training.

Started in the launcher's process (one process) or by torchrun as
`python -m moai_llm.training.worker --run-yaml OUT/run.yaml` (__main__.py). It reads the run
record and derives nothing from flags or hardware: the model config, the plan, the schedule,
the vocabulary growth, the pretrained folder and the checkpoint to resume from are all there.

    __main__.py          the torchrun entry: read run.yaml, train, exit with a code the launcher reads
    exits.py             FirstStepOOM and the exit codes and markers a worker leaves for its launcher
    loop.py              train(): builds the parts below and steps through the run
    step.py              one optimizer step (accumulation, global-token loss, NaN skip)
    batches.py           deterministic data order; the data position is one number
    evaluation.py        held-out rows and --eval-text, every --eval-steps
    dpo_step.py          moai dpo: the preference loss of pair rows, --eval-pairs
    model_setup.py       the model (the plan's attention backend, fp32 masters) and fused AdamW
    distributed.py       rank/device, process group, DDP/FSDP2 wrapping, gathered states
    checkpoint_policy.py when to save: checkpoints/step-N and final_model/ (and final_adapter/)
    checkpoint.py        atomic checkpoints/step-N, final_model/; read back on resume
    checkpoint_check.py  whether a checkpoint can be resumed from, without loading it
    trainer_state.py     TrainerState: where a run stands (step, data position, ...), one value
    metrics.py           metrics.jsonl, the logging window, TensorBoard, loss.png, MFU

    >>> from moai_llm.training.worker import train, TrainerState
    >>> TrainerState().step
    0
"""

from moai_llm.training.worker.exits import FirstStepOOM
from moai_llm.training.worker.loop import train
from moai_llm.training.worker.trainer_state import TrainerState

__all__ = ["FirstStepOOM", "TrainerState", "train"]
