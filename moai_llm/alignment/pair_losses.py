"""The DPO family: losses of a preference pair from sequence log-probabilities.

With pi = the policy's summed answer log-prob, ref = the reference's, n = answer tokens, and
the log-ratios c = pi_c - ref_c, r = pi_r - ref_r (chosen, rejected):

  sigmoid  DPO (Rafailov et al. 2023):   -log sigmoid(beta * (c - r))
  ipo      IPO (Azar et al. 2023):       (c / n_c - r / n_r - 1 / (2 beta))^2, log-ratios averaged per
                                          token as TRL does (confirmed with the IPO authors)
  simpo    SimPO (Meng et al. 2024):     -log sigmoid(beta * (pi_c / n_c - pi_r / n_r) - gamma), no reference
  orpo     ORPO (Hong et al. 2024):      NLL(chosen answer) - beta * log sigmoid(log odds(p_c) - log odds(p_r)),
                                          p = exp(pi / n), no reference; beta is the paper's lambda

Rewards (logged, as TRL logs them): beta * log-ratio for sigmoid and ipo, beta * pi / n for
simpo and orpo; margins = rewards/chosen - rewards/rejected; accuracy = share of pairs whose
chosen reward is higher. The loss is summed over pairs and divided by `num_pairs` (the global
count across accumulation steps and processes, like `num_items_in_batch`), else by the pairs
here; ORPO's NLL is divided by `num_chosen_tokens` the same way.

    >>> import torch
    >>> out = preference_loss(PreferenceObjective("sigmoid", beta=0.1), torch.tensor([-5.0]), torch.tensor([-7.0]),
    ...                       torch.tensor([2]), torch.tensor([2]), torch.tensor([-6.0]), torch.tensor([-6.0]))
    >>> round(out.loss.item(), 4), round(out.margins.item(), 2)
    (0.5981, 0.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from moai_llm.errors import MoaiInputError

LOSSES = ("sigmoid", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
DEFAULT_BETA = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0, "orpo": 0.1}


@dataclass(frozen=True)
class PreferenceObjective:
    """Which loss, and its knobs (`beta=None`: the loss's usual value, DEFAULT_BETA)."""

    loss: str = "sigmoid"
    beta: float | None = None
    simpo_gamma: float = 1.0  # SimPO's target reward margin (the paper's gamma; gamma/beta = 0.5 at beta 2)
    label_smoothing: float = 0.0  # sigmoid only: conservative DPO (cDPO), the share of flipped labels

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise MoaiInputError(f"--loss {self.loss}: unknown loss", hint=f"use one of {', '.join(LOSSES)}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise MoaiInputError(f"--beta {self.beta}: must be a positive number")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise MoaiInputError(f"--label-smoothing {self.label_smoothing}: must be in [0, 0.5)")
        if self.label_smoothing and self.loss != "sigmoid":
            raise MoaiInputError(f"--label-smoothing applies to --loss sigmoid only, not {self.loss}")
        if not math.isfinite(self.simpo_gamma):
            raise MoaiInputError(f"--simpo-gamma {self.simpo_gamma}: must be a finite number")

    @property
    def b(self) -> float:
        return DEFAULT_BETA[self.loss] if self.beta is None else self.beta

    @property
    def needs_reference(self) -> bool:
        return self.loss not in REFERENCE_FREE


@dataclass
class PreferenceOutput:
    """The loss (scalar, with gradient) and per-pair figures to log (detached)."""

    loss: torch.Tensor
    rewards_chosen: torch.Tensor
    rewards_rejected: torch.Tensor
    margins: torch.Tensor
    accuracy: torch.Tensor  # [P] 1.0 where the chosen reward is higher
    nll: torch.Tensor | None = None  # ORPO's SFT term

    def metrics(self) -> dict[str, float]:
        """Means over the pairs here, under the names TRL logs."""
        out = {"rewards/chosen": self.rewards_chosen.mean().item(), "rewards/rejected": self.rewards_rejected.mean().item(),
               "rewards/margins": self.margins.mean().item(), "rewards/accuracies": self.accuracy.mean().item()}
        if self.nll is not None:
            out["nll_loss"] = self.nll.item()
        return out


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both sides of -log 2."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def preference_loss(objective: PreferenceObjective, chosen: torch.Tensor, rejected: torch.Tensor,
                    chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor,
                    ref_chosen: torch.Tensor | None = None, ref_rejected: torch.Tensor | None = None,
                    num_pairs: int | torch.Tensor | None = None,
                    num_chosen_tokens: int | torch.Tensor | None = None) -> PreferenceOutput:
    """The objective's loss for pairs with summed answer log-probs `chosen`/`rejected` [P] and
    answer lengths `chosen_tokens`/`rejected_tokens` [P]; `ref_*` are the reference's [P]."""
    beta = objective.b
    chosen, rejected = chosen.float(), rejected.float()
    n_c = chosen_tokens.to(chosen.device, chosen.dtype).clamp(min=1)
    n_r = rejected_tokens.to(chosen.device, chosen.dtype).clamp(min=1)
    nll = None
    if objective.needs_reference:
        if ref_chosen is None or ref_rejected is None:
            raise ValueError(f"--loss {objective.loss} needs the reference's log-probs")
        c = chosen - ref_chosen.to(chosen.device, chosen.dtype)
        r = rejected - ref_rejected.to(chosen.device, chosen.dtype)
        if objective.loss == "sigmoid":
            eps = objective.label_smoothing
            z = beta * (c - r)
            per_pair = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        else:
            per_pair = (c / n_c - r / n_r - 1 / (2 * beta)) ** 2
        reward_c, reward_r = beta * c, beta * r
    else:
        avg_c, avg_r = chosen / n_c, rejected / n_r
        if objective.loss == "simpo":
            per_pair = -F.logsigmoid(beta * (avg_c - avg_r) - objective.simpo_gamma)
        else:
            log_odds = (avg_c - avg_r) - (_log1mexp(avg_c) - _log1mexp(avg_r))
            per_pair = -beta * F.logsigmoid(log_odds)
            tokens = num_chosen_tokens if num_chosen_tokens is not None else n_c.sum()
            nll = -chosen.sum() / _count(tokens, chosen)
        reward_c, reward_r = beta * avg_c, beta * avg_r
    loss = per_pair.sum() / _count(num_pairs if num_pairs is not None else per_pair.numel(), per_pair)
    if nll is not None:
        loss = loss + nll
    reward_c, reward_r = reward_c.detach(), reward_r.detach()
    return PreferenceOutput(loss, reward_c, reward_r, reward_c - reward_r, (reward_c > reward_r).float(),
                            None if nll is None else nll.detach())


def _count(value, like: torch.Tensor) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.to(like.device, like.dtype).clamp(min=1)
    return float(max(value, 1))
