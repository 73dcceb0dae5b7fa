"""How a model score (reward model or LLM judge) and the rule score become one reward per response.

`reward_model.combine`:
- `rm` (verl): the model score alone. verl's reward manager returns the reward model's `rm_scores` when they are in
  the batch and does not call the rule function; strive does the same (no rule score is computed);
- `sum` (strive): model score + rule score, for every response;
- `by_data_source` (strive): rows whose data_source is in `reward_model.data_sources` get the model score, the
  others the rule score (a mixed dataset: chat rows judged by a model, math rows checked by a rule).

Pure functions on (B,) tensors; `pytest tests/unit/test_reward_combine.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

MODES = ("rm", "sum", "by_data_source")


def model_rows(data_sources: Sequence[str], mode: str, model_sources: Sequence[str]) -> list[bool]:
    """Per row: does the model score it."""
    if mode == "by_data_source":
        chosen = set(map(str, model_sources))
        return [str(s) in chosen for s in data_sources]
    return [True] * len(data_sources)


def rule_rows(data_sources: Sequence[str], mode: str, model_sources: Sequence[str]) -> list[bool]:
    """Per row: does the rule function score it."""
    if mode == "rm":
        return [False] * len(data_sources)
    if mode == "sum":
        return [True] * len(data_sources)
    return [not m for m in model_rows(data_sources, mode, model_sources)]


def combine(model: torch.Tensor, rule: Optional[torch.Tensor], data_sources: Sequence[str], mode: str,
            model_sources: Sequence[str] = ()) -> torch.Tensor:
    """(B,) reward. model (B,): the model score (read only where the model scores); rule (B,) or None: the rule score
    (read only where the rule scores; None when no row does)."""
    if mode not in MODES:
        raise ValueError(f"reward_model.combine={mode!r}; expected one of {', '.join(MODES)}")
    if mode == "rm":
        return model.float()
    if mode == "sum":
        return model.float() + rule.float()
    use_model = torch.tensor(model_rows(data_sources, mode, model_sources))  # (B,) bool
    if rule is None:
        rule = torch.zeros_like(model)
    return torch.where(use_model, model.float(), rule.float())


def on_last_token(scores: torch.Tensor, response_valid: torch.Tensor) -> torch.Tensor:
    """(B, T) token scores: each response's scalar at its last real token (verl's placement); 0 elsewhere and on a
    response with no tokens."""
    lengths = response_valid.long().sum(-1)  # (B,)
    out = torch.zeros(response_valid.shape, dtype=torch.float32)  # (B, T)
    rows = (lengths > 0).nonzero().flatten()
    out[rows, lengths[rows] - 1] = scores[rows].float()
    return out
