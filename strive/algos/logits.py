"""Token log-probabilities and entropies from logits.

Why this module exists: the actor, the reference model and the rollout-correction checks all
turn logits into log π(y_t) and H(π(·|y_<t)), and must agree to the last bit. Models usually run
in bf16; both functions upcast to float32 so the softmax normaliser is not rounded to 8 bits.

Shapes: any leading shape (...), V = vocabulary; e.g. (B, T, V) logits give (B, T) outputs.
Exercised by: pytest tests/unit/test_algos_logits.py
"""

from __future__ import annotations

import torch


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) − Σ_v softmax(z)_v · z_v over the last dim, in float32. (..., V) -> (...).

    z is first shifted so its max is 0 (H is shift-invariant); otherwise the two terms are both
    ≈ max(z) and their difference loses float32 digits for large logits.
    """
    z = logits.float()  # (..., V)
    z = z - z.max(dim=-1, keepdim=True).values  # (..., V)
    probs = torch.softmax(z, dim=-1)  # (..., V)
    return torch.logsumexp(z, dim=-1) - (probs * z).sum(-1)  # (...)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(z)[y] = z_y − logsumexp(z), in float32. (..., V), (...) -> (...)."""
    z = logits.float()  # (..., V)
    picked = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (...)
    return picked - torch.logsumexp(z, dim=-1)  # (...)
