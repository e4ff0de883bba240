"""Preference tuning's shared parts: sequence log-probs from hidden states (logprobs.py), the
DPO-family losses (pair_losses.py) and the reference log-probs stored with prepared data
(reference.py). The training loop composes them; nothing here imports training/."""
