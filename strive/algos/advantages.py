"""Advantage estimators: token rewards (and critic values) in, per-token advantages and returns out.

Why this module exists: the trainer calls exactly one estimator per step, picked by verl's
`algorithm.adv_estimator` name, and the numbers must match verl's (spec §4.1) so that a verl
command line trains the same way here. Everything is pure tensor math: no Ray, no config.

Choices:
- Both outputs are 0 wherever mask == 0. verl leaves some padded positions non-zero, but every
  consumer (losses, metrics) masks them, so zeroing changes nothing observable and reads better.
- Groups are integer ids (one per prompt); group statistics are vectorised with index_add.
- Advantages are constants for the optimiser, so the estimators run under torch.no_grad.
- The estimator names are strive.algos.names.ESTIMATORS, which config checks without importing torch.

Shapes: B = sequences, T = response tokens.
Exercised by: pytest tests/unit/test_algos_advantages.py
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch

from strive.algos.names import ESTIMATORS, GROUP_ESTIMATORS

WHITEN_EPS = 1e-8

GroupIds = torch.Tensor | Sequence[int]  # (B,) one integer per sample, equal within a prompt's group
_V = TypeVar("_V")


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Masked whitening over the whole batch, each valid token counted once.

    μ = Σ x·m / Σ m,   σ² = Σ (x − μ)²·m / (Σ m − 1)   (Bessel-corrected)
    out = (x − μ) / sqrt(σ² + 1e-8), plus μ again when shift_mean=False (rescale, keep the mean).

    Masked positions get the same formula; callers that care multiply by the mask.
    Raises ValueError with fewer than 2 valid tokens (the unbiased variance is undefined).
    """
    n = mask.sum()
    if n.item() < 2:
        raise ValueError(f"whiten needs at least 2 valid tokens in the batch, got {n.item():g}")
    mean = (x * mask).sum() / n
    var = ((x - mean).square() * mask).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPS)  # (B, T)
    return out if shift_mean else out + mean


def _group_stats(scores: torch.Tensor, group_ids: GroupIds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample statistics of the sample's group: (mean μ_G, unbiased std σ_G, size n_G), each (B,).

    μ_G = Σ_{j∈G} s_j / n_G,  σ_G = sqrt(Σ_{j∈G} (s_j − μ_G)² / (n_G − 1)).
    A group of size 1 gets μ = 0 and σ = 1 (verl's convention: no baseline, no rescaling).
    """
    group_ids = torch.as_tensor(group_ids, device=scores.device)  # (B,)
    uniq, inv = torch.unique(group_ids, return_inverse=True)  # inv: (B,) in [0, num_groups)
    zeros = scores.new_zeros(uniq.numel())  # (num_groups,)
    size = zeros.index_add(0, inv, torch.ones_like(scores))  # (num_groups,)
    mean = zeros.index_add(0, inv, scores) / size  # (num_groups,)
    sq_dev = zeros.index_add(0, inv, (scores - mean[inv]).square())  # (num_groups,)
    std = (sq_dev / (size - 1).clamp(min=1)).sqrt()  # (num_groups,)
    single = size == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return mean[inv], std[inv], size[inv]


@torch.no_grad()
def compute_gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, backward over t, skipping masked positions.

    δ_t = r_t + γ·V_next − V_t,   G_t = δ_t + γλ·G_next,
    then V_next ← m_t·V_t + (1 − m_t)·V_next and G_next ← m_t·G_t + (1 − m_t)·G_next
    (both start at 0 beyond T), so rewards, values and TD errors at masked positions are ignored
    and the recursion jumps over them (e.g. tool-output tokens in multi-turn rollouts).
    returns = G + V;  advantages = whiten(G) (whole batch);  both times m.
    """
    batch, length = token_rewards.shape
    mask = mask.to(values.dtype)  # (B, T); bool/int masks would break 1 − m
    next_value = values.new_zeros(batch)  # (B,)
    next_gae = values.new_zeros(batch)  # (B,)
    gaes = [None] * length
    for t in reversed(range(length)):
        m = mask[:, t]  # (B,)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        gae = delta + gamma * lam * next_gae  # (B,)
        next_value = m * values[:, t] + (1 - m) * next_value
        next_gae = m * gae + (1 - m) * next_gae
        gaes[t] = next_gae
    gae = torch.stack(gaes, dim=1)  # (B, T)
    returns = (gae + values) * mask  # (B, T)
    advantages = whiten(gae, mask) * mask  # (B, T)
    return advantages, returns


@torch.no_grad()
def compute_grpo(scores: torch.Tensor, mask: torch.Tensor, group_ids: GroupIds, norm_by_std: bool = True,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage, one value per sequence broadcast over its valid tokens.

    A_i = (s_i − μ_G) / (σ_G + eps)  if norm_by_std,  else  A_i = s_i − μ_G  (Dr.GRPO);
    A_{i,t} = A_i·m_{i,t}; returns = advantages. σ_G is unbiased; groups of 1 use μ = 0, σ = 1.
    """
    mean, std, _ = _group_stats(scores, group_ids)  # (B,)
    adv = scores - mean  # (B,)
    if norm_by_std:
        adv = adv / (std + eps)
    adv = adv.unsqueeze(-1) * mask  # (B, T)
    return adv, adv.clone()


@torch.no_grad()
def compute_rloo(scores: torch.Tensor, mask: torch.Tensor, group_ids: GroupIds) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE leave-one-out: A_i = s_i − mean of the other n_G − 1 scores = n/(n−1)·(s_i − μ_G).

    A group of size 1 has no other sample: A_i = s_i. A_{i,t} = A_i·m_{i,t}; returns = advantages.
    """
    mean, _, size = _group_stats(scores, group_ids)  # (B,)
    loo = size / (size - 1).clamp(min=1) * (scores - mean)  # (B,)
    adv = torch.where(size > 1, loo, scores)  # (B,)
    adv = adv.unsqueeze(-1) * mask  # (B, T)
    return adv, adv.clone()


@torch.no_grad()
def compute_reinforce_pp_baseline(scores: torch.Tensor, mask: torch.Tensor,
                                  group_ids: GroupIds) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ with a group baseline: A = whiten((s_i − μ_G)·m)·m over the batch.

    Groups of size 1 use μ = 0. Returns = advantages.
    """
    mean, _, _ = _group_stats(scores, group_ids)  # (B,)
    centred = (scores - mean).unsqueeze(-1) * mask  # (B, T)
    adv = whiten(centred, mask) * mask  # (B, T)
    return adv, adv.clone()


@torch.no_grad()
def compute_reinforce_pp(token_rewards: torch.Tensor, mask: torch.Tensor,
                         gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted return-to-go that restarts at every masked position.

    R_t = r_t + γ·R_{t+1}·m_{t+1} (R_{T+1} = 0): a valid token sees only the rewards of the run
    of valid tokens that starts at it. advantages = whiten(R)·m; returns = R·m.
    """
    returns = torch.zeros_like(token_rewards)  # (B, T)
    running = token_rewards.new_zeros(token_rewards.shape[0])  # (B,)
    for t in reversed(range(token_rewards.shape[1])):
        running = token_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * mask[:, t]
    advantages = whiten(returns, mask) * mask  # (B, T)
    return advantages, returns * mask


@torch.no_grad()
def compute_remax(token_rewards: torch.Tensor, mask: torch.Tensor,
                  baselines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax: reward-to-go minus the greedy response's score b_i.

    R_t = Σ_{t' ≥ t} r_{t'}·m_{t'};  A_t = (R_t − b_i)·m_t;  returns = R·m.
    """
    reward_to_go = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)  # (B, T)
    advantages = (reward_to_go - baselines.unsqueeze(-1)) * mask  # (B, T)
    return advantages, reward_to_go * mask


def _required(value: _V | None, name: str, estimator: str) -> _V:
    if value is None:
        raise ValueError(f"advantage estimator {estimator!r} needs {name}")
    return value


def compute_advantages(
    estimator: str,
    *,
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: GroupIds | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    reward_baselines: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on verl's `algorithm.adv_estimator` name; returns (advantages, returns), each (B, T).

    The names are strive.algos.names.ESTIMATORS. Group estimators (GROUP_ESTIMATORS: grpo, rloo,
    reinforce_plus_plus_baseline) use the outcome score s_i = Σ_t r_{i,t}.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if estimator == "gae":
        values = _required(values, "values (a critic)", estimator)
        return compute_gae(token_rewards, values, mask, gamma, lam)
    if estimator == "reinforce_plus_plus":
        return compute_reinforce_pp(token_rewards, mask, gamma)
    if estimator == "remax":
        baselines = _required(reward_baselines, "reward_baselines (greedy scores)", estimator)
        return compute_remax(token_rewards, mask, baselines)
    if estimator in GROUP_ESTIMATORS:
        group_ids = _required(group_ids, "group_ids", estimator)
        scores = token_rewards.sum(-1)  # (B,)
        if estimator == "grpo":
            return compute_grpo(scores, mask, group_ids, norm_by_std=norm_adv_by_std_in_grpo)
        if estimator == "rloo":
            return compute_rloo(scores, mask, group_ids)
        if estimator == "reinforce_plus_plus_baseline":
            return compute_reinforce_pp_baseline(scores, mask, group_ids)
    raise NotImplementedError(f"advantage estimator {estimator!r} is in strive.algos.names.ESTIMATORS "
                              "but compute_advantages has no branch for it")
