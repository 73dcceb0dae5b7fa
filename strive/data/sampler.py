"""Batch sampler whose (epoch, position) goes into the checkpoint.

Why it exists: a resumed run must see exactly the batches an uninterrupted run would have
seen (verl uses torchdata's StatefulDataLoader for this, spec §2.2). Rather than pickling
RNG state, each epoch's order is a pure function of `seed + epoch`, so the state is just two
integers.

Semantics: iterating yields the *remaining* batches of the current epoch, then moves to the
next epoch. `position` counts batches already handed out in this epoch, so a state taken
after the trainer finished batch k resumes at batch k+1. `len()` is batches per epoch
(floor with drop_last, like verl's `drop_last=True` train loader).

    sampler = ResumableSampler(len(dataset), batch_size=train_batch_size, seed=data.seed)
    for epoch in range(sampler.epoch, total_epochs):
        for indices in sampler:
            rows = [dataset[i] for i in indices]

Exercised by `pytest tests/unit/test_data_sampler.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch


class ResumableSampler:
    """Index batches over `range(n)`, epoch by epoch, with a tiny resumable state."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and n < batch_size:
            raise ValueError(
                f"dataset has {n} rows, fewer than one batch of {batch_size} (train_batch_size); "
                "with drop_last there would be 0 steps per epoch"
            )
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """The index order of `epoch`: a permutation seeded by `seed + epoch`, or 0..n-1."""
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order(self.epoch)
        while self.position < len(self):
            start = self.position * self.batch_size
            self.position += 1  # counted before yielding: a state saved after using the batch skips it
            yield order[start:start + self.batch_size]
        self.epoch += 1
        self.position = 0

    def next_batch(self) -> list[int]:
        """The next batch of indices, moving to the next epoch when this one is used up."""
        if self.position >= len(self):
            self.epoch += 1
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self.epoch_order(self.epoch)[start:start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "n": self.n,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore (epoch, position); refuses a state from a different dataset/batch setup,
        since its position would then point at different rows."""
        for key in ("seed", "n", "batch_size", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler checkpoint has {key}={state[key]!r} but this run has {key}={getattr(self, key)!r}; "
                    "resuming would replay different batches"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
