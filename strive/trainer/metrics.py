"""verl's metric names, computed on the controller from the step's batch and timings (spec §5.3)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Optional

import torch

from strive.batch import Batch


def _stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    if x.numel() == 0:
        return {}
    x = x.float()
    return {f"{prefix}/mean": x.mean().item(), f"{prefix}/max": x.max().item(), f"{prefix}/min": x.min().item()}


def agent_metrics(stats: Optional[dict[str, list[float]]]) -> dict[str, float]:
    """`agent/*` of a multi-turn rollout from its per-episode counts (strive.agent.loop.episode_stats): turns per
    episode (verl counts the prompt as one), tool calls and errors (per episode and in all), truncated share."""
    if not stats or not stats.get("num_turns"):
        return {}
    out = _stats("agent/num_turns", torch.tensor(stats["num_turns"]))
    out.update(_stats("agent/assistant_turns", torch.tensor(stats["assistant_turns"])))
    for key in ("tool_calls", "tool_errors", "dropped_calls"):
        values = torch.tensor(stats[key])
        out[f"agent/{key}/mean"] = values.mean().item()
        out[f"agent/{key}/total"] = values.sum().item()
    out["agent/truncated_frac"] = torch.tensor(stats["truncated"]).mean().item()
    return out


def data_metrics(batch: Batch, max_response_length: int, use_critic: bool) -> dict[str, float]:
    mask = batch.response_mask.bool()  # (B, T)
    resp_len = batch.response_valid.sum(-1)  # (B,) every response token, tool turns included (verl's length)
    prompt_len = batch.attention_mask[:, : batch.prompts.shape[1]].sum(-1).float()  # (B,)
    alive = resp_len > 0
    out: dict[str, float] = {}
    out.update(_stats("critic/score", batch.token_level_scores.sum(-1)[alive]))
    out.update(_stats("critic/rewards", batch.token_level_rewards.sum(-1)[alive]))
    out.update(_stats("critic/advantages", batch.advantages[mask]))
    out.update(_stats("critic/returns", batch.returns[mask]))
    if use_critic and batch.values is not None:
        values, returns = batch.values[mask], batch.returns[mask]
        out.update(_stats("critic/values", values))
        var_r = returns.var() if returns.numel() > 1 else torch.tensor(0.0)
        out["critic/vf_explained_var"] = (1 - (returns - values).var() / (var_r + 1e-5)).item() if returns.numel() > 1 else 0.0
    out.update(_stats("response_length", resp_len))
    out["response_length/clip_ratio"] = (resp_len >= max_response_length).float().mean().item()
    out["response/aborted_ratio"] = (~alive).float().mean().item()
    out.update(_stats("prompt_length", prompt_len))
    out.update(rollout_consistency(batch))
    out["prompt_length/clip_ratio"] = (prompt_len >= batch.prompts.shape[1]).float().mean().item()
    return out


def reward_extra_metrics(extra: dict[str, list]) -> dict[str, float]:
    """`reward_extra/<key>/{mean,max,min}` of each numeric entry of the reward function's dict results (and the
    dapo manager's `overlong_reward`/`overlong`; the mean of a bool is the fraction that is True). Samples
    without the entry and non-numeric entries are skipped. verl logs these only at validation; strive also logs
    them per training step, over every response scored in it."""
    out: dict[str, float] = {}
    for key, values in extra.items():
        nums = [float(v) for v in values if isinstance(v, (int, float, bool))]
        if nums and len(nums) == sum(v is not None for v in values):
            out.update(_stats(f"reward_extra/{key}", torch.tensor(nums, dtype=torch.float64)))
    return out


def rollout_consistency(batch: Batch) -> dict[str, float]:
    """How far the engine's log-probs are from the actor's on the same tokens and weights (a weight-sync check)."""
    if batch.rollout_log_probs is None or batch.old_log_probs is None or batch.old_log_probs is batch.rollout_log_probs:
        return {}  # the last: rollout-correction bypass mode, where the old log-probs are the engine's
    mask = batch.response_mask.bool()
    if not mask.any():
        return {}
    p_diff = (batch.rollout_log_probs.exp() - batch.old_log_probs.exp()).abs()[mask]
    lp_diff = (batch.rollout_log_probs - batch.old_log_probs).abs()[mask]
    return {"training/rollout_probs_diff_max": p_diff.max().item(), "training/rollout_probs_diff_mean": p_diff.mean().item(),
            "training/rollout_probs_diff_std": p_diff.std().item() if p_diff.numel() > 1 else 0.0,
            "training/rollout_logprob_diff_mean": lp_diff.mean().item()}


def throughput_metrics(batch: Batch, timings: dict[str, float], n_workers: int) -> dict[str, float]:
    tokens = batch.attention_mask.sum().item()
    response_tokens = batch.response_mask.sum().item()
    step = timings.get("step", 0.0)
    out = {"perf/total_num_tokens": float(tokens), "perf/time_per_step": step,
           "perf/throughput": tokens / max(step, 1e-9) / max(n_workers, 1)}
    for name, seconds in timings.items():
        out[f"timing_s/{name}"] = seconds
        if name == "gen" and response_tokens:
            out["timing_per_token_ms/gen"] = 1000 * seconds / response_tokens
        elif name in ("ref", "values", "adv", "update_critic", "update_actor", "old_log_prob") and tokens:
            out[f"timing_per_token_ms/{name}"] = 1000 * seconds / tokens
    return out


@contextmanager
def timer(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def mean_over_ranks(results: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in results for k in r}
    return {k: sum(r[k] for r in results if k in r) / sum(1 for r in results if k in r) for k in keys}


def max_over_ranks(results: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in results for k in r}
    return {k: max(r[k] for r in results if k in r) for k in keys}
