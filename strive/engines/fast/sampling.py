"""Token sampling for the fast rollout path: one uniform per (completion, token), drawn on the host from
(seed, completion index, token index), turned into a token on the device by inverse CDF.

Why: the sampler runs inside a CUDA graph, so it cannot consult a torch.Generator's host-side state, and a call
with SamplingParams.seed must replay exactly. Drawing the uniforms from a counter-based hash makes each
completion's randomness a function of (seed, its index in the call, token index) alone: the same tokens come out
whatever max_num_seqs is, whichever slot a completion lands in and however often the host checks for finished
slots. The graph reads `u[slot, tokens generated so far]`: one gather, no RNG kernel.

What it computes (hf.py's conventions): greedy is the argmax of the logits, its log-prob taken at T = 1.
Otherwise z = logits / T; top-k keeps the k largest; top-p (nucleus) keeps the shortest prefix of the sorted,
renormalised probabilities whose mass reaches top_p (the first token always); the token is drawn from what is
left, and its log-prob is log_softmax(z) at that token, not renormalised after the filters: the quantity the
trainer recomputes. Ties at the k-th value keep exactly k tokens (the plain loop keeps every tied one).
Costs per step on (b, V) logits: plain sampling ~5 passes (scale, logsumexp, exp, cumsum, gather); top-k adds a
topk and then works on (b, k); top-p without top-k sorts the whole vocabulary every step.

    pytest tests/integration/test_fast_engine.py -q -k sampl
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (arithmetic wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_keys(seed: int, rows: list[int]) -> np.ndarray:
    """One 64-bit key per completion index of a call, from the call's seed."""
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed % 2**64], dtype=np.uint64))
        return _mix64(base ^ (np.asarray(rows, dtype=np.uint64) * _GOLDEN + np.uint64(1)))


def uniforms(keys: np.ndarray, steps: int) -> torch.Tensor:
    """(n, steps) float32 in (0, 1): u[i, t] drives token t of the completion with key i (24 bits each)."""
    with np.errstate(over="ignore"):
        counters = _mix64(np.arange(steps, dtype=np.uint64) * _GOLDEN + np.uint64(7))  # (steps,)
        z = _mix64(keys[:, None] ^ counters[None, :])  # (n, steps)
    return torch.from_numpy(((z >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) / np.float32(2**24))


@dataclass(frozen=True)
class SamplerKind:
    """What decides the sampler's kernels (one CUDA graph per kind and batch bucket); T and top_p are tensors."""

    greedy: bool = False
    top_k: int = 0
    top_p: bool = False

    @staticmethod
    def of(params, vocab: int) -> "SamplerKind":
        if params.greedy:
            return SamplerKind(greedy=True)
        return SamplerKind(top_k=params.top_k if 0 < params.top_k < vocab else 0, top_p=params.top_p < 1.0)


def sample(logits: torch.Tensor, u: torch.Tensor, kind: SamplerKind, temperature: torch.Tensor,
           top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (b,) drawn from logits (b, V) with uniforms u (b,); their log-probs (b,) under log_softmax(logits/T)."""
    z = logits.float()  # (b, V)
    if kind.greedy:
        token = z.argmax(-1)  # (b,)
        return token, z.gather(-1, token[:, None])[:, 0] - torch.logsumexp(z, -1)
    z = z / temperature
    lse = torch.logsumexp(z, -1)  # (b,)
    order = None
    if kind.top_k:
        z_kept, order = torch.topk(z, kind.top_k, dim=-1)  # (b, k), sorted descending
    elif kind.top_p:
        z_kept, order = torch.sort(z, dim=-1, descending=True)  # (b, V)
    else:
        z_kept = z
    # (b, N): after top-k, renormalised over the k kept (the hf engine's softmax of the filtered logits)
    probs = torch.exp(z - lse[:, None]) if order is None else torch.softmax(z_kept, -1)
    last = None
    if kind.top_p:
        keep = (probs.cumsum(-1) - probs) < top_p  # mass strictly ahead of each token below top_p
        keep[:, 0] = True
        probs = probs * keep
        last = keep.sum(-1) - 1  # (b,) the kept entries are a prefix of the sorted order
    index = _inverse_cdf(probs, u, last)  # (b,)
    token = index if order is None else order.gather(-1, index[:, None])[:, 0]
    return token, z.gather(-1, token[:, None])[:, 0] - lse


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor, last) -> torch.Tensor:
    """The first index whose cumulative mass reaches u × total; never past `last` (b,) or the end, so rounding in
    a parallel cumsum cannot land on a filtered entry."""
    cdf = probs.cumsum(-1)  # (b, N)
    if last is None:
        total = cdf[:, -1:]  # (b, 1)
        bound = cdf.shape[-1] - 1
    else:
        total = cdf.gather(-1, last[:, None])  # (b, 1)
        bound = last
    index = torch.searchsorted(cdf, u[:, None] * total)[:, 0]  # (b,)
    return index.clamp(max=bound) if last is None else torch.minimum(index, bound)
