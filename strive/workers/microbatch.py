"""Cutting a rank's batch into micro-batches: by count, or by a token budget (use_dynamic_bsz).

Each micro-batch comes with its weight in the mini-batch (its share of the sequences), so gradient
accumulation over uneven micro-batches gives the same update as one pass over the mini-batch.
"""

from __future__ import annotations

from typing import Optional

import torch

from strive.batch import Batch
from strive.models.forward import TokenIndex, token_index


def split_micro(batch: Batch, micro: Optional[int], max_tokens: Optional[int]) -> list[tuple[Batch, float]]:
    n = len(batch)
    if n == 0:
        return []
    if micro is not None:
        bounds = list(range(0, n, micro)) + [n]
    else:
        bounds = _token_bounds(batch.attention_mask.sum(-1), max_tokens or 1)
    return [(batch.select(slice(a, b)), (b - a) / n) for a, b in zip(bounds, bounds[1:])]


def on_device(mb: Batch, device: torch.device) -> tuple[Batch, TokenIndex]:
    """The micro-batch on `device` and its TokenIndex, built on the host first (see TokenIndex)."""
    return mb.to(device), token_index(mb.attention_mask, mb.response_mask, torch.device(device))


class WeightedSums:
    """Per-key sums of micro-batch metrics times their weights, kept where they are (device scalars stay on the
    device) until `read`: reading a device scalar per micro-batch would make the host wait for the device."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor | float] = {}

    def add(self, parts: dict[str, torch.Tensor | float], weight: float) -> None:
        for k, v in parts.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self._sums[k] = self._sums.get(k, 0.0) + v * weight

    def read(self) -> dict[str, float]:
        """Plain floats, with one device read for all of them."""
        keys = [k for k, v in self._sums.items() if isinstance(v, torch.Tensor)]
        values = torch.stack([self._sums[k] for k in keys]).tolist() if keys else []
        out = {k: float(v) for k, v in self._sums.items() if not isinstance(v, torch.Tensor)}
        out.update(zip(keys, values))
        return {k: out[k] for k in self._sums}


def _token_bounds(lengths: torch.Tensor, budget: int) -> list[int]:
    """Consecutive groups whose real-token total stays within the budget (a longer row goes alone)."""
    bounds, total = [0], 0
    for i, length in enumerate(lengths.tolist()):
        if i > bounds[-1] and total + length > budget:
            bounds.append(i)
            total = 0
        total += length
    bounds.append(len(lengths))
    return bounds


def mini_orders(n: int, mini: int, shuffle: bool, seed: int) -> list[torch.Tensor]:
    """The row indices of each mini-batch of `mini` sequences (the last may be smaller), optionally in a seeded
    random order."""
    order = torch.arange(n)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[i: i + mini] for i in range(0, n, mini)]


def split_mini(batch: Batch, mini: int, shuffle: bool, seed: int) -> list[Batch]:
    """Mini-batches of `mini_orders`."""
    return [batch.select(rows) for rows in mini_orders(len(batch), mini, shuffle, seed)]
