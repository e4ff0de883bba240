"""Defaults and names that several rooms share, each written once here.

- `SEQ_LEN`: tokens per row when nobody says (training's --seq-len, data prepare's, eval's rows).
- `SAMPLING`: how chat answers when neither the flags nor the model's generation_config say
  (inference.SamplingParams, and the generation_config.json a training run writes).
- `ATTENTION_BACKENDS`: the attention implementations, fastest first (transformers' names): the
  config accepts them, the modeling code runs them, the planner picks one.

Imports nothing, so the CLI can read it for its help without importing torch.

    >>> SEQ_LEN, SAMPLING["temperature"], ATTENTION_BACKENDS[-1]
    (2048, 0.7, 'eager')
"""

SEQ_LEN = 2048
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1, "max_new_tokens": 512}
ATTENTION_BACKENDS = ("flash_attention_2", "flex_attention", "sdpa", "eager")
