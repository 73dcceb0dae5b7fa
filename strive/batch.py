"""The typed batch that travels through one training step.

One dataclass with named tensor fields instead of a bag of string keys: a field is either there (a tensor of
the documented shape) or None. Splitting across data-parallel ranks and joining results back are methods here.
Text-side information (data source, ground truth, extra info) stays on the controller in plain lists.

Shapes: B = sequences, P = prompt tokens (left-padded), T = response tokens (right-padded), L = P + T.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

OPTIONAL_FIELDS = ("rollout_log_probs", "old_log_probs", "ref_log_probs", "entropy", "values", "token_level_scores",
                   "token_level_rewards", "advantages", "returns", "group_ids")


@dataclass
class Batch:
    prompts: torch.Tensor  # (B, P) long, left-padded
    responses: torch.Tensor  # (B, T) long, right-padded
    attention_mask: torch.Tensor  # (B, L) long, 1 on real tokens
    position_ids: torch.Tensor  # (B, L) long
    response_mask: torch.Tensor  # (B, T) float 0/1, 1 on generated tokens
    rollout_log_probs: Optional[torch.Tensor] = None  # (B, T) engine's log-probs of the sampled tokens
    old_log_probs: Optional[torch.Tensor] = None  # (B, T) actor before the update
    ref_log_probs: Optional[torch.Tensor] = None  # (B, T) reference policy
    entropy: Optional[torch.Tensor] = None  # (B, T) actor entropy before the update
    values: Optional[torch.Tensor] = None  # (B, T) critic values before the update
    token_level_scores: Optional[torch.Tensor] = None  # (B, T) reward on the last valid token
    token_level_rewards: Optional[torch.Tensor] = None  # (B, T) scores minus in-reward KL
    advantages: Optional[torch.Tensor] = None  # (B, T)
    returns: Optional[torch.Tensor] = None  # (B, T)
    group_ids: Optional[torch.Tensor] = None  # (B,) long, one id per prompt (its n samples share it)

    def __len__(self) -> int:
        return self.responses.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompts, self.responses], dim=1)  # (B, L)

    @property
    def response_length(self) -> int:
        return self.responses.shape[1]

    def _tensors(self) -> dict[str, Optional[torch.Tensor]]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def select(self, index: torch.Tensor | Sequence[int] | slice) -> "Batch":
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return Batch(**{k: (v[index] if v is not None else None) for k, v in self._tensors().items()})

    def with_fields(self, **fields: Optional[torch.Tensor]) -> "Batch":
        return dataclasses.replace(self, **fields)

    def only(self, *names: str) -> "Batch":
        """A copy carrying only the core tensors plus `names` (less to ship to a worker)."""
        keep = {f: getattr(self, f) for f in names}
        return Batch(self.prompts, self.responses, self.attention_mask, self.position_ids, self.response_mask, **keep)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: (v.to(device) if v is not None else None) for k, v in self._tensors().items()})

    def chunk(self, parts: int) -> list["Batch"]:
        """Split into `parts` contiguous pieces whose sizes differ by at most one."""
        sizes = [len(self) // parts + (1 if i < len(self) % parts else 0) for i in range(parts)]
        bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
        return [self.select(slice(bounds[i], bounds[i + 1])) for i in range(parts)]

    @staticmethod
    def cat(batches: Sequence["Batch"]) -> "Batch":
        first = batches[0]._tensors()
        out = {}
        for name, value in first.items():
            parts = [getattr(b, name) for b in batches]
            if value is None or any(p is None for p in parts):
                out[name] = None
            else:
                out[name] = torch.cat(parts, dim=0)
        return Batch(**out)


def merge_fields(base: Batch, results: Sequence[Batch], names: Sequence[str]) -> Batch:
    """Copy fields computed by the workers (in rank order) back onto the full batch."""
    joined = Batch.cat(list(results))
    return base.with_fields(**{name: getattr(joined, name) for name in names})


def balance_order(lengths: torch.Tensor, parts: int) -> torch.Tensor:
    """A permutation that gives each of `parts` contiguous chunks about the same token count.

    Longest first, each sequence to the currently lightest chunk that still has room (every chunk gets the
    same number of sequences, so `Batch.chunk` keeps working). Deterministic for equal inputs.
    """
    n = lengths.numel()
    per = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    loads = [0] * parts
    members: list[list[int]] = [[] for _ in range(parts)]
    for idx in torch.argsort(lengths, descending=True, stable=True).tolist():
        open_parts = [p for p in range(parts) if len(members[p]) < per[p]]
        target = min(open_parts, key=lambda p: (loads[p], p))
        members[target].append(idx)
        loads[target] += int(lengths[idx])
    return torch.tensor([i for m in members for i in sorted(m)], dtype=torch.long)
