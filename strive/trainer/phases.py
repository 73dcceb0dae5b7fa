"""The phases of a step as the controller runs them: each splits the batch across ranks, calls one worker
method, and joins the results; the math phases (reward, KL, advantages) run here on the controller.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch

from strive.algos import compute_advantages, kl_penalty
from strive.batch import Batch, balance_order
from strive.controller.group import WorkerGroup
from strive.engines import SamplingParams


@dataclass
class Meta:
    """Text-side information, one entry per sequence, in the batch's row order."""

    data_sources: list[str]
    ground_truths: list[Any]
    extra_infos: list[Any]
    uids: list[int]
    """Index of the prompt each sequence came from (its group)."""
    extras: dict[str, list[Any]] = field(default_factory=dict)

    def select(self, order: list[int]) -> "Meta":
        pick = lambda xs: [xs[i] for i in order]  # noqa: E731
        return Meta(pick(self.data_sources), pick(self.ground_truths), pick(self.extra_infos), pick(self.uids),
                    {k: pick(v) for k, v in self.extras.items()})

    @staticmethod
    def cat(metas: list["Meta"]) -> "Meta":
        join = lambda name: [x for m in metas for x in getattr(m, name)]  # noqa: E731
        keys = set.intersection(*(set(m.extras) for m in metas)) if metas else set()
        return Meta(join("data_sources"), join("ground_truths"), join("extra_infos"), join("uids"),
                    {k: [x for m in metas for x in m.extras[k]] for k in keys})


def split_list(items: list, parts: int) -> list[list]:
    sizes = [len(items) // parts + (1 if i < len(items) % parts else 0) for i in range(parts)]
    out, start = [], 0
    for size in sizes:
        out.append(items[start: start + size])
        start += size
    return out


def generate(group: WorkerGroup, rows: list[dict], params: SamplingParams, release_after: bool) -> tuple[Batch, Meta]:
    """Sample params.n responses for every row's prompt on the rollout engines; prompt-major order."""
    prompts = [list(r["raw_prompt_ids"]) for r in rows]
    shards = split_list(prompts, group.world_size)
    parts = group.call("generate", shards, params, release_after)
    n = params.n
    uids = [i // n for i in range(len(rows) * n)]
    batch = Batch.cat(parts).with_fields(group_ids=torch.tensor(uids, dtype=torch.long))
    meta = Meta([rows[u]["data_source"] for u in uids], [rows[u]["ground_truth"] for u in uids],
                [rows[u].get("extra_info") for u in uids], uids)
    return batch, meta


def score(reward_fn, batch: Batch, meta: Meta) -> tuple[Batch, dict[str, list[Any]]]:
    result = reward_fn.score(batch.responses, batch.response_mask, meta.data_sources, meta.ground_truths,
                             meta.extra_infos, prompts=batch.prompts,
                             prompt_mask=batch.attention_mask[:, : batch.prompts.shape[1]])
    return batch.with_fields(token_level_scores=result.token_scores), result.extra


def filter_values(batch: Batch, extra: dict[str, list[Any]], metric: str) -> torch.Tensor:
    """(B,) the value algorithm.filter_groups compares: a named entry of the reward function's dict result,
    else the response's summed score."""
    if metric in ("acc", "score") and metric in extra:
        return torch.tensor([float(v) for v in extra[metric]], dtype=torch.float64)
    return batch.token_level_scores.sum(-1).double()


def informative_groups(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Group ids, in order of first appearance, whose responses do not all share one value (values (B,),
    group_ids (B,)); a group whose values are all equal has zero advantage under GRPO and RLOO."""
    groups = torch.unique_consecutive(group_ids)  # (G,) prompt-major order
    keep = [g for g in groups.tolist() if values[group_ids == g].unique().numel() > 1]
    return torch.tensor(keep, dtype=torch.long)


def take_groups(batch: Batch, meta: Meta, groups: torch.Tensor, first_id: int) -> tuple[Batch, Meta]:
    """The rows of `groups` (in that order), their group ids renumbered first_id, first_id + 1, ..."""
    rows = [i for g in groups.tolist() for i in (batch.group_ids == g).nonzero().flatten().tolist()]
    renumber = {g: first_id + k for k, g in enumerate(groups.tolist())}
    ids = torch.tensor([renumber[int(batch.group_ids[i])] for i in rows], dtype=torch.long)
    picked = meta.select(rows)
    picked.uids = ids.tolist()
    return batch.select(rows).with_fields(group_ids=ids), picked


def balance(batch: Batch, meta: Meta, parts: int) -> tuple[Batch, Meta, dict[str, float]]:
    """Reorder so each rank gets about the same number of tokens (trainer.balance_batch)."""
    lengths = batch.attention_mask.sum(-1)  # (B,)
    order = balance_order(lengths, parts)
    before = torch.stack([c.sum() for c in lengths.chunk(parts)]) if len(lengths) >= parts else lengths
    after = torch.stack([c.sum() for c in lengths[order].chunk(parts)]) if len(lengths) >= parts else lengths
    metrics = {"global_seqlen/min": before.min().item(), "global_seqlen/max": before.max().item(),
               "global_seqlen/minmax_diff": (before.max() - before.min()).item(),
               "global_seqlen/balanced_min": after.min().item(), "global_seqlen/balanced_max": after.max().item(),
               "global_seqlen/mean": lengths.float().sum().item() / parts}
    return batch.select(order), meta.select(order.tolist()), metrics


def run_on_shards(group: WorkerGroup, method: str, batch: Batch, send: tuple[str, ...], *args) -> Batch:
    """Call `method` on every rank with its contiguous share of the batch; merge returned fields."""
    shards = [b.only(*send) for b in batch.chunk(group.world_size)]
    results = group.call(method, shards, *args)
    fields = {name: torch.cat([r[name] for r in results]) for name in results[0]}
    return batch.with_fields(**fields)


def update_on_shards(group: WorkerGroup, method: str, batch: Batch, send: tuple[str, ...], step: int) -> list[dict]:
    shards = [b.only(*send) for b in batch.chunk(group.world_size)]
    return group.call(method, shards, step)


def apply_kl_in_reward(batch: Batch, kl_ctrl, kind: str) -> tuple[Batch, dict[str, float]]:
    """r_t = score_t − β·KL_t (old vs. reference log-probs); β then moves with the controller."""
    mask = batch.response_mask  # (B, T)
    kl = kl_penalty(batch.old_log_probs, batch.ref_log_probs, kind) * mask  # (B, T)
    rewards = batch.token_level_scores - kl_ctrl.value * kl  # (B, T)
    current = ((kl.sum(-1) / mask.sum(-1).clamp(min=1))).mean().item()
    metrics = {"actor/reward_kl_penalty": current, "actor/reward_kl_penalty_coeff": kl_ctrl.value}
    kl_ctrl.update(current, n_steps=len(batch))
    return batch.with_fields(token_level_rewards=rewards), metrics


def advantages(batch: Batch, algo, reward_baselines: Optional[torch.Tensor]) -> Batch:
    adv, ret = compute_advantages(algo.adv_estimator, token_rewards=batch.token_level_rewards,
                                  mask=batch.response_mask, group_ids=batch.group_ids, values=batch.values,
                                  gamma=algo.gamma, lam=algo.lam, norm_adv_by_std_in_grpo=algo.norm_adv_by_std_in_grpo,
                                  reward_baselines=reward_baselines)
    return batch.with_fields(advantages=adv, returns=ret)


def masked_mean(x: Optional[torch.Tensor], mask: torch.Tensor) -> float:
    if x is None:
        return 0.0
    return ((x * mask).sum() / mask.sum().clamp(min=1)).item()


def step_params(params: SamplingParams, seed: int, step: int, round_: int = 0) -> SamplingParams:
    """Sampling seeded by (data seed, step, generation round): a resumed run samples exactly what an
    uninterrupted one did."""
    return replace(params, seed=seed * 100_003 + step + round_ * 7_919_993)


def dump_generations(directory: str, step: int, tokenizer, batch: Batch, meta: Meta, scores: torch.Tensor) -> None:
    os.makedirs(directory, exist_ok=True)
    P = batch.prompts.shape[1]
    with open(os.path.join(directory, f"{step}.jsonl"), "w") as fh:
        for i in range(len(batch)):
            prompt = batch.prompts[i][batch.attention_mask[i, :P].bool()].tolist()
            response = batch.responses[i][batch.response_mask[i].bool()].tolist()
            fh.write(json.dumps({"input": tokenizer.decode(prompt, skip_special_tokens=True),
                                 "output": tokenizer.decode(response, skip_special_tokens=True),
                                 "gts": str(meta.ground_truths[i]), "score": float(scores[i]), "step": step}) + "\n")
