"""The phases of a step as the controller runs them, and the table that says what each one moves.

A worker phase is one method of `WorkerProcess` called on every rank of a group with that rank's contiguous share
of the batch. The `Phase` constants below declare, once, which batch fields a phase ships to the workers
(besides the core tensors every phase gets) and which fields it returns; the loop names only the constant:

    batch = phases.compute(rt.group, phases.OLD_LOG_PROBS, batch, timings)

and go-to-definition on `OLD_LOG_PROBS` lands on the method the workers run. The math phases (KL in the reward,
advantages) run here on the controller.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch

from strive.algos import compute_advantages, kl_penalty
from strive.algos.rollout_correction import Correction, correct
from strive.batch import Batch, Meta, balance_order, rank_loads, split_evenly
from strive.controller.group import WorkerGroup
from strive.controller.process import WorkerProcess
from strive.controller.router import route
from strive.data.rl_dataset import PromptRow
from strive.engines import SamplingParams
from strive.trainer.metrics import mean_over_ranks, timer


@dataclass(frozen=True)
class Phase:
    """One worker phase: the method every rank runs, and the batch fields that travel each way."""

    method: Callable
    """A `WorkerProcess` method taking (batch shard, *args)."""
    timer: str
    """Its name in `timing_s/*` (verl's names)."""
    sends: tuple[str, ...] = ()
    """Batch fields shipped besides prompts, responses and the masks (a field that is None ships as None)."""
    returns: tuple[str, ...] = ()
    """Batch fields the workers compute (forward phases); an update phase returns metrics instead."""


OLD_LOG_PROBS = Phase(WorkerProcess.compute_log_probs, "old_log_prob", returns=("old_log_probs", "entropy"))
REF_LOG_PROBS = Phase(WorkerProcess.compute_ref_log_probs, "ref", returns=("ref_log_probs",))
VALUES = Phase(WorkerProcess.compute_values, "values", returns=("values",))
UPDATE_CRITIC = Phase(WorkerProcess.update_critic, "update_critic", sends=("values", "returns"))
UPDATE_ACTOR = Phase(WorkerProcess.update_actor, "update_actor",
                     sends=("old_log_probs", "advantages", "ref_log_probs", "rollout_is_weights"))
UPDATE_ACTOR_ON_POLICY = Phase(WorkerProcess.update_actor_on_policy, "update_actor",
                               sends=("advantages", "ref_log_probs"), returns=("old_log_probs", "entropy"))
"""The on-policy bypass: with one optimizer step per batch the old log-probs are the update forward's own, so
OLD_LOG_PROBS does not run and this phase brings them back."""


def compute(group: WorkerGroup, phase: Phase, batch: Batch, timings: dict[str, float]) -> Batch:
    """Run a forward phase on every rank's share and put the fields it returns onto the batch."""
    with timer(phase.timer, timings):
        shards = [b.only(*phase.sends) for b in batch.chunk(group.world_size)]
        return _merge(batch, phase, group.call(phase.method, shards))


def update(group: WorkerGroup, phase: Phase, batch: Batch, step: int, timings: dict[str, float],
           metrics: dict[str, float]) -> Batch:
    """Run an update phase on every rank's share; adds its metrics (averaged over ranks) to `metrics` and the
    fields it returns (if any) to the batch."""
    with timer(phase.timer, timings):
        shards = [b.only(*phase.sends) for b in batch.chunk(group.world_size)]
        results = group.call(phase.method, shards, step)
        metrics.update(mean_over_ranks([m for m, _ in results]))
        return _merge(batch, phase, [fields for _, fields in results])


def _merge(batch: Batch, phase: Phase, results: list[dict[str, torch.Tensor]]) -> Batch:
    """The batch with each rank's returned fields joined in rank order; the fields must be the declared ones."""
    if set(results[0]) != set(phase.returns):
        raise RuntimeError(f"{phase.method.__qualname__} returned {sorted(results[0])}; its phase declares "
                           f"{sorted(phase.returns)}")
    if not phase.returns:
        return batch
    return batch.with_fields(**{name: torch.cat([r[name] for r in results]) for name in phase.returns})


def sync_weights(group: WorkerGroup, timings: dict[str, float]) -> dict[str, float]:
    """Push the actor's new weights into every rank's rollout engine."""
    with timer("update_weights", timings):
        return mean_over_ranks(group.call_all(WorkerProcess.sync_weights))


def generate(group: WorkerGroup, rows: list[PromptRow], params: SamplingParams, release_after: bool,
             agent_loop: Optional[str] = None, router: str = "static") -> Batch:
    """Sample params.n responses for every row's prompt on the rollout engines; prompt-major order, group id = row.
    With `agent_loop` (multi_turn.enable: the default loop's name) every sample is a trajectory of the agent loop
    its row names (column `agent_name`, else `agent_loop`) and `meta.agent` holds each one's turn counts;
    `router` (multi_turn.router) says how those episodes reach the ranks (strive/controller/router.py)."""
    uids = [i // params.n for i in range(len(rows) * params.n)]
    agent = None
    if agent_loop is None:
        shards = split_evenly([r.prompt_ids for r in rows], group.world_size)
        parts = group.call(WorkerProcess.generate, shards, params, release_after)
    else:
        requests = [agent_request(rows[u], agent_loop) for u in uids]
        if router == "least_loaded":
            results = route(group, WorkerProcess.generate_agent, requests, params)
            if release_after:
                group.call_all(WorkerProcess.release_rollout)
        else:
            results = group.call(WorkerProcess.generate_agent, split_evenly(requests, group.world_size), params,
                                 release_after)
        parts = [batch for batch, _ in results]
        agent = {k: [x for _, stats in results for x in stats[k]] for k in results[0][1]}
    return assemble(rows, parts, params.n, agent)


def assemble(rows: list[PromptRow], parts: list[Batch], n: int, agent: Optional[dict] = None) -> Batch:
    """The ranks' generated parts (rank order, prompt-major) as one batch: group id = row, the rows' metadata."""
    uids = [i // n for i in range(len(rows) * n)]
    meta = Meta([rows[u].data_source for u in uids], [rows[u].ground_truth for u in uids],
                [rows[u].extra_info for u in uids], agent, [rows[u].raw_prompt for u in uids])
    return Batch.cat(parts).with_fields(group_ids=torch.tensor(uids, dtype=torch.long), meta=meta)


def agent_request(row: PromptRow, default_loop: str):
    """A row as an agent-loop request: its prompt ids, `agent_name` column and `extra_info.tools_kwargs`."""
    from strive.agent.loop import AgentRequest

    extra = row.extra_info if isinstance(row.extra_info, dict) else {}
    tools_kwargs = extra.get("tools_kwargs") or row.columns.get("tools_kwargs") or {}
    return AgentRequest(list(row.prompt_ids), row.columns.get("agent_name") or default_loop, dict(tools_kwargs))


def score(reward_fn, batch: Batch, model=None) -> tuple[Batch, dict[str, list[Any]]]:
    """The reward of every response; the reward function's extra dict entries come back beside it. `model`: the
    run's reward model or LLM judge (strive/trainer/model_reward.py), whose score meets the rule score as
    reward_model.combine says; None: the rule/custom reward alone."""
    if model is not None:
        from strive.trainer.model_reward import score_with_model

        return score_with_model(reward_fn, model, batch, score)
    meta = batch.meta
    result = reward_fn.score(batch.responses, batch.response_valid, meta.data_sources, meta.ground_truths,
                             meta.extra_infos, prompts=batch.prompts,
                             prompt_mask=batch.attention_mask[:, : batch.prompts.shape[1]])
    return batch.with_fields(token_level_scores=result.token_scores), result.extra


def balance(batch: Batch, parts: int, metrics: dict[str, float]) -> Batch:
    """Reorder so each rank gets about the same number of tokens (trainer.balance_batch); adds the loads to
    `metrics`."""
    lengths = batch.attention_mask.sum(-1)  # (B,)
    order = balance_order(lengths, parts)
    before, after = rank_loads(lengths, parts), rank_loads(lengths[order], parts)  # (parts,) each
    metrics.update({"global_seqlen/min": before.min().item(), "global_seqlen/max": before.max().item(),
                    "global_seqlen/minmax_diff": (before.max() - before.min()).item(),
                    "global_seqlen/balanced_min": after.min().item(),
                    "global_seqlen/balanced_max": after.max().item(),
                    "global_seqlen/mean": lengths.float().sum().item() / parts})
    return batch.select(order)


def apply_kl_in_reward(batch: Batch, kl_ctrl, kind: str) -> tuple[Batch, dict[str, float]]:
    """r_t = score_t − β·KL_t (old vs. reference log-probs); β then moves with the controller."""
    mask = batch.response_mask  # (B, T)
    kl = kl_penalty(batch.old_log_probs, batch.ref_log_probs, kind) * mask  # (B, T)
    rewards = batch.token_level_scores - kl_ctrl.value * kl  # (B, T)
    current = ((kl.sum(-1) / mask.sum(-1).clamp(min=1))).mean().item()
    metrics = {"actor/reward_kl_penalty": current, "actor/reward_kl_penalty_coeff": kl_ctrl.value}
    kl_ctrl.update(current, n_steps=len(batch))
    return batch.with_fields(token_level_rewards=rewards), metrics


def rollout_correction(batch: Batch, rc, metrics: dict[str, float]) -> Batch:
    """algorithm.rollout_correction outside bypass mode: importance weights and rejection between the old log-probs
    and the engine's, once per step on the whole batch (so batch normalisation is over the step). Rejected tokens
    leave `response_mask`, hence the advantages, every loss and its denominator; the weights ride to the actor."""
    missing = [name for name in ("rollout_log_probs", "old_log_probs") if getattr(batch, name) is None]
    if missing:
        raise RuntimeError(f"algorithm.rollout_correction needs the engine's and the old log-probs; the batch lacks "
                           f"{', '.join(missing)}")
    weights, mask, corr_metrics = correct(batch.old_log_probs, batch.rollout_log_probs, batch.response_mask,
                                          Correction.from_settings(rc))
    if corr_metrics:
        metrics.update(zip(corr_metrics, torch.stack(list(corr_metrics.values())).double().tolist()))
    return batch.with_fields(response_mask=mask, rollout_is_weights=weights)


def rewards_and_advantages(batch: Batch, algo, kl_ctrl, timings: dict[str, float],
                           metrics: dict[str, float]) -> Batch:
    """Token rewards (the scores, minus β·KL with algorithm.use_kl_in_reward), rollout correction (if on, outside
    bypass mode), then the advantage estimator."""
    with timer("adv", timings):
        batch = batch.with_fields(token_level_rewards=batch.token_level_scores)
        if algo.use_kl_in_reward:
            batch, kl_metrics = apply_kl_in_reward(batch, kl_ctrl, algo.kl_penalty)
            metrics.update(kl_metrics)
        rc = algo.rollout_correction
        if (rc.rollout_is is not None or rc.rollout_rs is not None) and not rc.bypass_mode:
            batch = rollout_correction(batch, rc, metrics)
        adv, ret = compute_advantages(algo.adv_estimator, token_rewards=batch.token_level_rewards,
                                      mask=batch.response_mask, group_ids=batch.group_ids, values=batch.values,
                                      gamma=algo.gamma, lam=algo.lam,
                                      norm_adv_by_std_in_grpo=algo.norm_adv_by_std_in_grpo,
                                      reward_baselines=batch.reward_baselines)
        return batch.with_fields(advantages=adv, returns=ret)


def masked_mean(x: Optional[torch.Tensor], mask: torch.Tensor) -> float:
    if x is None:
        return 0.0
    return ((x * mask).sum() / mask.sum().clamp(min=1)).item()


def step_params(params: SamplingParams, seed: int, step: int, round_: int = 0) -> SamplingParams:
    """Sampling seeded by (data seed, step, generation round): a resumed run samples exactly what an
    uninterrupted one did."""
    return replace(params, seed=seed * 100_003 + step + round_ * 7_919_993)


def generation_rows(tokenizer, batch: Batch, max_response_length: Optional[int] = None) -> list[dict]:
    """One dict per response: prompt and response text, ground truth, summed score and the response's length in
    tokens; with `max_response_length`, also why it ended: "length" when it used the whole budget (or a multi-turn
    episode was cut), else "stop"."""
    P = batch.prompts.shape[1]
    scores = batch.token_level_scores.sum(-1)  # (B,)
    agent = batch.meta.agent or {}
    cut = agent.get("truncated")
    rows = []
    for i in range(len(batch)):
        prompt = batch.prompts[i][batch.attention_mask[i, :P].bool()].tolist()
        response = batch.responses[i][batch.response_valid[i].bool()].tolist()
        row = {"input": tokenizer.decode(prompt, skip_special_tokens=True),
               "output": tokenizer.decode(response, skip_special_tokens=True),
               "gts": str(batch.meta.ground_truths[i]), "score": float(scores[i]), "response_length": len(response)}
        if max_response_length is not None:
            full = len(response) >= max_response_length or (cut is not None and bool(cut[i]))
            row["finish_reason"] = "length" if full else "stop"
        rows.append(row)
    return rows


def trained_segments(tokenizer, ids: list[int], mask: list[int]) -> list[dict]:
    """A response cut into runs of trained (mask 1: the engine's tokens) and context (mask 0: tool and user turns)
    tokens, each decoded with its special tokens, so a dump shows exactly what the loss sees."""
    segments: list[dict] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            segments.append({"trained": bool(mask[start]), "tokens": i - start,
                             "text": tokenizer.decode(ids[start:i], skip_special_tokens=False)})
            start = i
    return segments


def dump_generations(directory: str, step: int, tokenizer, batch: Batch, max_response_length: int) -> None:
    """One JSON line per response (trainer.*_data_dir): `generation_rows`, so truncation is counted from the dump
    (`finish_reason`), not guessed. A multi-turn response (some of its tokens are context, not trained) also gets
    `segments` (`trained_segments`)."""
    os.makedirs(directory, exist_ok=True)
    valid, trained = batch.response_valid.bool(), batch.response_mask.bool()
    with open(os.path.join(directory, f"{step}.jsonl"), "w") as fh:
        for i, row in enumerate(generation_rows(tokenizer, batch, max_response_length)):
            if not torch.equal(valid[i], trained[i]):
                row["segments"] = trained_segments(tokenizer, batch.responses[i][valid[i]].tolist(),
                                                   trained[i][valid[i]].int().tolist())
            fh.write(json.dumps({**row, "step": step}) + "\n")
