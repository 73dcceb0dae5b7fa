"""Rollout correction (verl's `algorithm.rollout_correction`): importance weights and rejection masks between the
policy that sampled a batch (the engine's log-probs, π_rollout) and the trainer's policy (π_old, recomputed).

Why this module exists: the engine and the trainer never compute exactly the same distribution (other kernels,
other precision, stale weights in asynchronous training), so the samples are slightly off-policy. Two remedies,
usable together, both pure functions here, pinned by float64 loop references in the unit tests:

- truncated importance sampling (TIS): multiply each token's policy loss by w = min(ρ, threshold), ρ = π_old/π_rollout
  per token (`rollout_is=token`) or Π_t ρ_t per sequence (`sequence`); w is detached (it reweights the samples,
  it is not part of the objective);
- rejection (`rollout_rs`): drop tokens or whole sequences whose divergence statistic is out of bounds. They leave
  the response mask, so they leave every loss's denominator too, not only its numerator.

Bypass mode (π_old := π_rollout, no recompute pass) moves the same computation into the actor's loss, with the
current policy π_θ in place of π_old: `bypass_policy_loss`.

Choices (verl's, spec §1.9 / §5.2): log-ratios are clamped to ±20 before exp; IS metrics are taken before the
truncation; a k1 rejection band bounds −δ = log(π_rollout/π_old) (verl's convention; symmetric bands, the default,
read the same either way); the batch normalisation divides by the mean weight (of tokens, or of sequences).
Metrics come back as detached 0-d tensors (one device read for all of them, by the caller), unprefixed.

Shapes: B = sequences, T = response tokens. δ = log π_old − log π_rollout (B, T); m = response mask (B, T).
Exercised by: pytest tests/unit/test_algos_rollout_correction.py
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from strive.algos.losses import aggregate_loss, policy_loss
from strive.algos.names import parse_rejection

SAFETY_BOUND = 20.0

Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Correction:
    """What `algorithm.rollout_correction` asks for, already checked (strive.config) and parsed."""

    rollout_is: Optional[str] = None  # None, "token" or "sequence"
    rollout_is_threshold: float = 2.0
    rollout_is_batch_normalize: bool = False
    rejection: tuple[tuple[str, Optional[float], float], ...] = ()  # names.parse_rejection's (option, lower, upper)
    loss_type: str = "ppo_clip"  # bypass mode only

    @staticmethod
    def from_settings(rc) -> "Correction":
        """From an `algorithm.rollout_correction` section (duck-typed: this package imports no config)."""
        rules = parse_rejection(rc.rollout_rs, rc.rollout_rs_threshold) if rc.rollout_rs is not None else ()
        return Correction(rc.rollout_is, rc.rollout_is_threshold, rc.rollout_is_batch_normalize, rules, rc.loss_type)


def _row_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(-1)  # (B,)


def _row_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)  # ()


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(mask == 0, float("-inf")).max()


def _masked_min(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(mask == 0, float("inf")).min()


def is_weights(log_ratio: torch.Tensor, mask: torch.Tensor, level: str, threshold: float,
               batch_normalize: bool = False) -> tuple[torch.Tensor, Metrics]:
    """Truncated importance weights w (B, T), detached, 0 on padding; and their metrics.

    token:    w_t = min(exp(clamp(δ_t, ±20)), threshold)
    sequence: w_t = min(exp(clamp(Σ_s δ_s·m_s, ±20)), threshold) on every token of the sequence
    batch_normalize: w /= mean(w) (over tokens for token, over sequences with tokens for sequence).
    Metrics (verl's rollout_is_*): mean/max/min/std, eff_sample_size, ratio_fraction_high/low, seq_* of the
    untruncated weights (std and ESS of the weights clamped to [1/threshold, threshold]).
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"rollout_is must be token or sequence, got {level!r}")
    if threshold <= 0:
        raise ValueError(f"rollout_is_threshold must be > 0, got {threshold}")
    log_ratio, mask = log_ratio.detach(), mask.to(log_ratio.dtype)
    has_tokens = mask.sum(-1) > 0  # (B,)
    if level == "token":
        log_w = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)  # (B, T)
    else:
        log_w = _row_sum(log_ratio, mask).clamp(-SAFETY_BOUND, SAFETY_BOUND)[:, None].expand_as(log_ratio)  # (B, T)
    raw = log_w.exp() * mask  # (B, T)
    lower = 1.0 / threshold
    clamped = raw.clamp(lower, threshold)  # (B, T) for std and ESS only
    seq_w = _row_mean(raw, mask)[has_tokens]  # (B',) mean weight of each sequence
    metrics = {
        "rollout_is_mean": _mean(raw, mask), "rollout_is_max": _masked_max(raw, mask),
        "rollout_is_min": _masked_min(raw, mask),
        "rollout_is_std": (_mean(clamped.square(), mask) - _mean(clamped, mask).square()).clamp(min=0).sqrt(),
        "rollout_is_eff_sample_size": 1.0 / _mean((clamped / (_mean(clamped, mask) + 1e-8)).square(), mask),
        "rollout_is_ratio_fraction_high": _mean((raw > threshold).to(mask.dtype), mask),
        "rollout_is_ratio_fraction_low": _mean((raw < lower).to(mask.dtype), mask),
    }
    if seq_w.numel():
        metrics.update({"rollout_is_seq_mean": seq_w.mean(), "rollout_is_seq_max": seq_w.max(),
                        "rollout_is_seq_min": seq_w.min(), "rollout_is_seq_max_deviation": (seq_w - 1).abs().max(),
                        "rollout_is_seq_fraction_high": (seq_w > threshold).to(mask.dtype).mean(),
                        "rollout_is_seq_fraction_low": (seq_w < lower).to(mask.dtype).mean()})
    weights = raw.clamp(max=threshold)  # (B, T)
    if batch_normalize:
        norm = _mean(weights, mask) if level == "token" else _row_mean(weights, mask)[has_tokens].mean()
        if norm.numel() and norm > 1e-8:
            weights = weights / norm
            metrics["rollout_is_batch_norm_factor"] = norm
    return weights, metrics


def _rejection_statistic(name: str, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The statistic option `name` bounds: (B, T) for token_* options, (B,) for seq_* options."""
    d = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)  # (B, T)
    per_token = {"k1": -d, "k2": 0.5 * d.square(), "k3": d.exp() - 1.0 - d}[name[-2:]]  # (B, T)
    if name.startswith("token_"):
        return per_token
    if name.startswith("seq_sum_"):
        return _row_sum(per_token, mask)
    if name.startswith("seq_mean_"):
        return _row_mean(per_token, mask)
    if name.startswith("seq_max_"):
        best = per_token.masked_fill(mask == 0, float("-inf")).max(-1).values  # (B,)
        return torch.where(torch.isinf(best), torch.zeros_like(best), best)
    raise ValueError(f"unknown rejection option {name!r}")


def rejection_mask(log_ratio: torch.Tensor, mask: torch.Tensor,
                   rules: tuple[tuple[str, Optional[float], float], ...]) -> tuple[torch.Tensor, Metrics]:
    """The response mask with rejected tokens set to 0 (B, T), and metrics.

    Each rule (option, lower, upper) keeps a token when its statistic s (see strive.algos.names) satisfies
    log(lower) ≤ s ≤ log(upper) for k1 options, s ≤ upper for k2/k3; a sequence option keeps or drops all of its
    tokens together. A token stays only if every rule keeps it. Bounds are inclusive.
    Metrics: rollout_rs_{option}_{mean,max,min,fraction_high,fraction_low,masked_fraction,seq_masked_fraction}
    and overall rollout_rs_masked_fraction (tokens) and rollout_rs_seq_masked_fraction (sequences with any).
    """
    log_ratio, mask = log_ratio.detach(), mask.to(log_ratio.dtype)
    has_tokens = mask.sum(-1) > 0  # (B,)
    keep = torch.ones_like(mask)  # (B, T)
    metrics: Metrics = {}
    for name, lower, upper in rules:
        stat = _rejection_statistic(name, log_ratio, mask)  # (B, T) or (B,)
        hi = math.log(upper) if name.endswith("k1") else upper
        lo = math.log(lower) if name.endswith("k1") else None
        ok = stat <= hi if lo is None else (stat >= lo) & (stat <= hi)  # like stat
        high, low = stat > hi, (stat < lo) if lo is not None else torch.zeros_like(ok)
        prefix = f"rollout_rs_{name}"
        if stat.dim() == 1:  # one value per sequence, over the sequences with tokens
            s, n = stat[has_tokens], has_tokens.sum().clamp(min=1)
            metrics.update({f"{prefix}_mean": s.mean() if s.numel() else stat.new_zeros(()),
                            f"{prefix}_max": s.max() if s.numel() else stat.new_zeros(()),
                            f"{prefix}_min": s.min() if s.numel() else stat.new_zeros(()),
                            f"{prefix}_fraction_high": (high & has_tokens).sum() / n,
                            f"{prefix}_fraction_low": (low & has_tokens).sum() / n})
            ok = ok[:, None].expand_as(mask)
        else:
            metrics.update({f"{prefix}_mean": _mean(stat, mask), f"{prefix}_max": _masked_max(stat, mask),
                            f"{prefix}_min": _masked_min(stat, mask),
                            f"{prefix}_fraction_high": _mean(high.to(mask.dtype), mask),
                            f"{prefix}_fraction_low": _mean(low.to(mask.dtype), mask)})
        dropped = (~ok).to(mask.dtype) * mask  # (B, T)
        metrics[f"{prefix}_masked_fraction"] = _mean(dropped, mask)
        metrics[f"{prefix}_seq_masked_fraction"] = (dropped.sum(-1) > 0).to(mask.dtype).mean()
        keep = keep * ok.to(mask.dtype)
    dropped = (1 - keep) * mask  # (B, T)
    metrics["rollout_rs_masked_fraction"] = _mean(dropped, mask)
    metrics["rollout_rs_seq_masked_fraction"] = (dropped.sum(-1) > 0).to(mask.dtype).mean()
    return mask * keep, metrics


def offpolicy_metrics(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor) -> Metrics:
    """How far π_old is from π_rollout on the sampled tokens (verl's names, means over sequences with tokens):

    kl = mean_t(log π_rollout − log π_old) (k1 of KL(π_rollout‖π_old)), k3_kl = mean_t(ρ − 1 − log ρ);
    training_ppl / rollout_ppl = mean_i exp(−mean_t log π); *_log_ppl the same without exp;
    log_ppl_diff_i = mean_t log π_rollout − mean_t log π_old (mean, |·| mean, max, min); ppl_ratio = mean_i e^diff_i;
    chi2_token = mean_t ρ² − 1, chi2_seq = mean_i (Π_t ρ_t)² − 1 (log-ratios clamped to ±20).
    """
    old_logp, rollout_logp = old_logp.detach(), rollout_logp.detach()
    mask = mask.to(old_logp.dtype)
    rows = mask.sum(-1) > 0  # (B,)
    if not rows.any():
        return {}
    log_ratio = old_logp - rollout_logp  # (B, T)
    safe = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)  # (B, T)
    train_nll = -_row_mean(old_logp, mask)[rows]  # (B',)
    roll_nll = -_row_mean(rollout_logp, mask)[rows]  # (B',)
    diff = train_nll - roll_nll  # (B',) = mean log π_rollout − mean log π_old
    seq = _row_sum(log_ratio, mask)[rows].clamp(-SAFETY_BOUND, SAFETY_BOUND)  # (B',)
    return {
        "training_ppl": train_nll.exp().mean(), "training_log_ppl": train_nll.mean(),
        "rollout_ppl": roll_nll.exp().mean(), "rollout_log_ppl": roll_nll.mean(),
        "kl": _mean(-log_ratio, mask), "k3_kl": _mean(log_ratio.exp() - log_ratio - 1, mask),
        "log_ppl_diff": diff.mean(), "log_ppl_abs_diff": diff.abs().mean(), "log_ppl_diff_max": diff.max(),
        "log_ppl_diff_min": diff.min(), "ppl_ratio": diff.exp().mean(),
        "chi2_token": _mean(safe.exp().square(), mask) - 1.0, "chi2_seq": (2 * seq).exp().mean() - 1.0,
    }


def correct(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
            corr: Correction) -> tuple[Optional[torch.Tensor], torch.Tensor, Metrics]:
    """Everything `algorithm.rollout_correction` computes for one batch: (IS weights (B, T) or None, the response
    mask after rejection (B, T), metrics named rollout_corr/...). The off-policy metrics are always there."""
    if old_logp.shape != rollout_logp.shape or old_logp.shape != mask.shape:
        raise ValueError(f"shapes differ: old {tuple(old_logp.shape)}, rollout {tuple(rollout_logp.shape)}, "
                         f"mask {tuple(mask.shape)}")
    log_ratio = (old_logp - rollout_logp).detach()  # (B, T)
    metrics: Metrics = {}
    weights = None
    if corr.rollout_is is not None:
        weights, m = is_weights(log_ratio, mask, corr.rollout_is, corr.rollout_is_threshold,
                                corr.rollout_is_batch_normalize)
        metrics.update(m)
    new_mask = mask
    if corr.rejection:
        new_mask, m = rejection_mask(log_ratio, mask, corr.rejection)
        metrics.update(m)
    metrics.update(offpolicy_metrics(old_logp, rollout_logp, mask))
    return weights, new_mask.to(mask.dtype), {f"rollout_corr/{k}": v.detach() for k, v in metrics.items()}


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                   weights: Optional[torch.Tensor] = None, agg: str = "token-mean") -> torch.Tensor:
    """REINFORCE: Agg(−A·w·log π_θ, m), w detached (1 without IS weights). No ratio, no clipping."""
    per_token = -advantages * logp  # (B, T)
    if weights is not None:
        per_token = per_token * weights.detach()
    return aggregate_loss(per_token, mask, agg)


def bypass_policy_loss(logp: torch.Tensor, rollout_logp: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, corr: Correction, clip_low: float = 0.2, clip_high: float = 0.2,
                       clip_c: float = 3.0, agg: str = "token-mean") -> tuple[torch.Tensor, Metrics]:
    """Policy loss of bypass mode (π_old := π_rollout): the correction of `correct` with the current policy π_θ
    (detached) in place of π_old, then

    ppo_clip:  the PPO loss with ratio π_θ/π_rollout on the kept tokens, no IS weights (the ratio is the IS);
    reinforce: Agg(−A·w·log π_θ) on the kept tokens, w = the truncated IS weights (1 if rollout_is is null).
    Metrics: ppo_kl = mean(log π_rollout − log π_θ), the PPO metrics for ppo_clip, and rollout_corr/*.
    """
    weights, kept, metrics = correct(logp.detach(), rollout_logp, mask, corr)
    if corr.loss_type == "ppo_clip":
        loss, pg_metrics = policy_loss(logp, rollout_logp, advantages, kept, clip_low=clip_low, clip_high=clip_high,
                                       clip_c=clip_c, agg=agg)
    elif corr.loss_type == "reinforce":
        loss = reinforce_loss(logp, advantages, kept, weights, agg)
        pg_metrics = {"ppo_kl": _mean((rollout_logp - logp).detach(), kept.to(logp.dtype))}
    else:
        raise ValueError(f"loss_type must be ppo_clip or reinforce, got {corr.loss_type!r}")
    return loss, {**pg_metrics, **metrics}
