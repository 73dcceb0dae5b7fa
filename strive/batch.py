"""The typed batch that travels through one training step.

One dataclass with named tensor fields instead of a bag of string keys: a field is either there (a tensor of
the documented shape) or None. The text side of each sequence (data source, ground truth, extra info) rides
along in `meta`, in the same row order, so selecting, reordering or joining rows can never separate the two;
`only()` drops it, so workers receive tensors and nothing else. Splitting across data-parallel ranks and joining
results back are methods here, and `even_sizes` is the one rule for how many rows each rank gets.

Shapes: B = sequences, P = prompt tokens (left-padded), T = response tokens (right-padded), L = P + T.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TypeVar

import torch

Item = TypeVar("Item")


def even_sizes(n: int, parts: int) -> list[int]:
    """How many of n items each of `parts` contiguous pieces holds: sizes differ by at most one, larger first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def split_evenly(items: Sequence[Item], parts: int) -> list[list[Item]]:
    """`items` cut into `parts` contiguous lists of `even_sizes`."""
    out, start = [], 0
    for size in even_sizes(len(items), parts):
        out.append(list(items[start: start + size]))
        start += size
    return out


@dataclass
class Meta:
    """Text-side information of each sequence, in the batch's row order (controller only)."""

    data_sources: list[str]
    ground_truths: list[Any]
    extra_infos: list[Any]
    agent: Optional[dict[str, list[float]]] = None
    """Multi-turn rollouts: per-sequence agent-loop counts (num_turns, tool_calls, ...), else None."""
    raw_prompts: Optional[list[Any]] = None
    """Each prompt's chat messages (data.return_raw_chat), read by a reward model or judge; else None."""

    def select(self, rows: Sequence[int]) -> "Meta":
        agent = None if self.agent is None else {k: [v[i] for i in rows] for k, v in self.agent.items()}
        raw = None if self.raw_prompts is None else [self.raw_prompts[i] for i in rows]
        return Meta([self.data_sources[i] for i in rows], [self.ground_truths[i] for i in rows],
                    [self.extra_infos[i] for i in rows], agent, raw)

    @staticmethod
    def cat(metas: Sequence["Meta"]) -> "Meta":
        agent = raw = None
        if metas and all(m.agent is not None for m in metas):
            agent = {k: [x for m in metas for x in m.agent[k]] for k in metas[0].agent}
        if metas and all(m.raw_prompts is not None for m in metas):
            raw = [x for m in metas for x in m.raw_prompts]
        return Meta([x for m in metas for x in m.data_sources], [x for m in metas for x in m.ground_truths],
                    [x for m in metas for x in m.extra_infos], agent, raw)


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
    rollout_is_weights: Optional[torch.Tensor] = None  # (B, T) rollout-correction importance weights, detached
    values: Optional[torch.Tensor] = None  # (B, T) critic values before the update
    token_level_scores: Optional[torch.Tensor] = None  # (B, T) reward on the last valid token
    token_level_rewards: Optional[torch.Tensor] = None  # (B, T) scores minus in-reward KL
    reward_baselines: Optional[torch.Tensor] = None  # (B,) ReMax: the greedy response's summed reward
    advantages: Optional[torch.Tensor] = None  # (B, T)
    returns: Optional[torch.Tensor] = None  # (B, T)
    group_ids: Optional[torch.Tensor] = None  # (B,) long, one id per prompt (its n samples share it)
    policy_versions: Optional[torch.Tensor] = None  # (B,) long, the oldest policy version among its response tokens
    token_versions: Optional[torch.Tensor] = None  # (B, T) long, the version that sampled each token, -1 on padding
    meta: Optional[Meta] = None  # text side, one entry per sequence; never shipped to workers

    def __len__(self) -> int:
        return self.responses.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompts, self.responses], dim=1)  # (B, L)

    @property
    def response_valid(self) -> torch.Tensor:
        """(B, T) 1 on every real response token (generated, or a tool/user turn of a multi-turn rollout), 0 on
        padding. Single-turn rollouts: equal to response_mask."""
        return self.attention_mask[:, self.prompts.shape[1]:]

    @property
    def response_length(self) -> int:
        return self.responses.shape[1]

    def _tensors(self) -> dict[str, Optional[torch.Tensor]]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "meta"}

    def select(self, index: torch.Tensor | Sequence[int] | slice) -> "Batch":
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        meta = None
        if self.meta is not None:
            meta = self.meta.select(range(len(self))[index] if isinstance(index, slice) else index.tolist())
        return Batch(**{k: (v[index] if v is not None else None) for k, v in self._tensors().items()}, meta=meta)

    def with_fields(self, **fields: Any) -> "Batch":
        return dataclasses.replace(self, **fields)

    def only(self, *names: str) -> "Batch":
        """A copy carrying only the core tensors plus `names` (less to ship to a worker); no meta."""
        keep = {f: getattr(self, f) for f in names}
        return Batch(self.prompts, self.responses, self.attention_mask, self.position_ids, self.response_mask, **keep)

    def to(self, device: torch.device | str) -> "Batch":
        """A copy on `device`. Host-to-GPU copies go through pinned memory and do not block the host: a copy from
        pageable memory would first wait for everything queued on the device."""
        device = torch.device(device)
        tensors = {k: (_move(v, device) if v is not None else None) for k, v in self._tensors().items()}
        return Batch(**tensors, meta=self.meta)

    def chunk(self, parts: int) -> list["Batch"]:
        """Split into `parts` contiguous pieces of `even_sizes`."""
        bounds = torch.tensor([0] + even_sizes(len(self), parts)).cumsum(0).tolist()
        return [self.select(slice(bounds[i], bounds[i + 1])) for i in range(parts)]

    @staticmethod
    def cat(batches: Sequence["Batch"]) -> "Batch":
        out: dict[str, Any] = {}
        for name in batches[0]._tensors():
            parts = [getattr(b, name) for b in batches]
            out[name] = None if any(p is None for p in parts) else torch.cat(parts, dim=0)
        metas = [b.meta for b in batches]
        out["meta"] = None if any(m is None for m in metas) else Meta.cat(metas)
        return Batch(**out)


def balance_order(lengths: torch.Tensor, parts: int) -> torch.Tensor:
    """A permutation that gives each of `parts` contiguous chunks about the same token count.

    Longest first, each sequence to the currently lightest chunk that still has room (every chunk gets its
    `even_sizes` share of sequences, so `Batch.chunk` keeps working). Deterministic for equal inputs.
    """
    per = even_sizes(lengths.numel(), parts)
    loads = [0] * parts
    members: list[list[int]] = [[] for _ in range(parts)]
    for idx in torch.argsort(lengths, descending=True, stable=True).tolist():
        open_parts = [p for p in range(parts) if len(members[p]) < per[p]]
        target = min(open_parts, key=lambda p: (loads[p], p))
        members[target].append(idx)
        loads[target] += int(lengths[idx])
    return torch.tensor([i for m in members for i in sorted(m)], dtype=torch.long)


def rank_loads(lengths: torch.Tensor, parts: int) -> torch.Tensor:
    """(parts,) the token count each rank receives from `Batch.chunk` of a batch with these (B,) lengths."""
    return torch.stack([piece.sum() for piece in lengths.split(even_sizes(lengths.numel(), parts))])


def _move(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
