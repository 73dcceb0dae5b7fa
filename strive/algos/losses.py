"""PPO policy and value losses and the four ways verl aggregates a token-loss matrix.

Why this module exists: the actor and critic workers differ in model and plumbing but share
the loss math, and `loss_agg_mode` decides what "mean" means (spec §4.5-4.7), which changes the
effective learning rate. Keeping it here, as pure functions, lets the float64 unit tests pin it.

Choices:
- Aggregation is per call (one micro-batch, verl's legacy FSDP path). For gradient accumulation
  the caller multiplies each micro-batch loss by micro/mini (sequences), as verl does.
- An all-masked micro-batch aggregates to 0 instead of verl's 0/0 = NaN.
- ppo_kl uses the log-ratio after the ±20 clamp, as verl does (differs only beyond |d| > 20).
- The mode names are strive.algos.names.AGG_MODES, which config checks without importing torch.

Shapes: B = sequences, T = response tokens.
Exercised by: pytest tests/unit/test_algos_losses.py
"""

from __future__ import annotations

import torch

from strive.algos.names import AGG_MODES


def aggregate_loss(loss: torch.Tensor, mask: torch.Tensor, mode: str,
                   scale: float | None = None) -> torch.Tensor:
    """Agg(L, m) for verl's `loss_agg_mode`; returns a scalar.

    token-mean:               Σ_{i,t} L·m / Σ_{i,t} m
    seq-mean-token-sum:       mean over sequences with Σ_t m > 0 of Σ_t L·m
    seq-mean-token-mean:      mean over sequences with Σ_t m > 0 of Σ_t L·m / Σ_t m
    seq-mean-token-sum-norm:  Σ_{i,t} L·m / scale, scale defaulting to T (Dr.GRPO)
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid modes: {', '.join(AGG_MODES)}")
    masked = loss * mask  # (B, T)
    if mode == "token-mean":
        return masked.sum() / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (loss.shape[-1] if scale is None else scale)
    tokens = mask.sum(-1)  # (B,)
    per_seq = masked.sum(-1)  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / tokens.clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise NotImplementedError(f"loss_agg_mode {mode!r} is in strive.algos.names.AGG_MODES "
                                  "but aggregate_loss has no branch for it")
    has_tokens = (tokens > 0).to(per_seq.dtype)  # (B,)
    return (per_seq * has_tokens).sum() / has_tokens.sum().clamp(min=1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return aggregate_loss(x, mask, "token-mean")


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, clip_c: float = 3.0,
                agg: str = "token-mean",
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO surrogate with dual clip (`loss_mode=vanilla`); returns (loss, metrics).

    ρ = exp(clamp(logp − old_logp, −20, 20))
    L1 = −A·ρ,  L2 = −A·clip(ρ, 1 − ε_low, 1 + ε_high),  L_clip = max(L1, L2),  L3 = −A·c
    L = min(L_clip, L3) where A < 0 (caps the loss at c·|A|), else L_clip;  loss = Agg(L, m),
    or Agg(w·L, m) with rollout-correction importance weights w (B, T), detached (strive.algos.rollout_correction).
    metrics (masked token means, detached): pg_clipfrac = [L2 > L1],
    pg_clipfrac_lower = [L_clip > L3 and A < 0], ppo_kl = old_logp − logp (after the clamp).
    """
    if clip_c <= 1.0:
        raise ValueError(f"dual-clip PPO needs clip_ratio_c > 1, got {clip_c}")
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    loss_unclipped = -advantages * ratio  # (B, T)
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    loss_ppo = torch.maximum(loss_unclipped, loss_clipped)  # (B, T)
    loss_cap = -advantages * clip_c  # (B, T)
    negative = advantages < 0  # (B, T)
    per_token = torch.where(negative, torch.minimum(loss_ppo, loss_cap), loss_ppo)  # (B, T)
    if weights is not None:
        per_token = per_token * weights.detach()
    loss = aggregate_loss(per_token, mask, agg)
    with torch.no_grad():
        metrics = {
            "pg_clipfrac": _masked_mean((loss_clipped > loss_unclipped).float(), mask),
            "pg_clipfrac_lower": _masked_mean(((loss_ppo > loss_cap) & negative).float(), mask),
            "ppo_kl": _masked_mean(-log_ratio, mask),
        }
    return loss, metrics


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.5, agg: str = "token-mean") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped critic loss; returns (loss, metrics).

    V_clip = clip(V, V_old − ε, V_old + ε);  loss = ½·Agg(max((V − R)², (V_clip − R)²), m).
    metrics (masked token means, detached): vf_clipfrac = [(V_clip − R)² > (V − R)²],
    vpred_mean = mean of V.
    """
    clipped = torch.clamp(values, old_values - clip, old_values + clip)  # (B, T)
    err = (values - returns).square()  # (B, T)
    err_clipped = (clipped - returns).square()  # (B, T)
    loss = 0.5 * aggregate_loss(torch.maximum(err, err_clipped), mask, agg)
    with torch.no_grad():
        metrics = {
            "vf_clipfrac": _masked_mean((err_clipped > err).float(), mask),
            "vpred_mean": _masked_mean(values, mask),
        }
    return loss, metrics
