"""Sampling the batch a step trains on: generate, score, and the variants that change what is kept.

- Plain: one generation of data.train_batch_size prompts × rollout.n responses, scored.
- DAPO's dynamic sampling (algorithm.filter_groups): rounds of data.gen_batch_size prompts, keeping only prompts
  whose responses scored differently (the others have zero GRPO/RLOO advantage), until data.train_batch_size
  prompts are kept; the first ones kept are trained on.
- ReMax (algorithm.adv_estimator=remax): one greedy response per prompt first; its summed reward is the
  prompt's baseline, stored per sequence in `Batch.reward_baselines`.

The loop calls `StepSampler.sample` once per step and gets the batch and the sampling metrics back.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch

from strive.agent.settings import agent_loop_of
from strive.batch import Batch
from strive.controller.group import WorkerGroup
from strive.controller.process import WorkerProcess
from strive.data.rl_dataset import PromptRow
from strive.trainer import phases
from strive.trainer.metrics import reward_extra_metrics, timer
from strive.workers.rollout import sampling_params


class StepSampler:
    def __init__(self, cfg, group: WorkerGroup, reward_fn, next_rows: Callable[[], list[PromptRow]], seed: int,
                 model_scores=None):
        self.cfg, self.group, self.reward_fn = cfg, group, reward_fn
        self.model_scores = model_scores
        """The reward model or LLM judge (strive/trainer/model_reward.py), or None."""
        self.next_rows = next_rows
        """The next data.gen_batch_size rows of the data sampler (dynamic sampling's further rounds)."""
        self.seed = seed
        self.agent_loop = agent_loop_of(cfg.actor_rollout_ref.rollout)
        self.router = cfg.actor_rollout_ref.rollout.multi_turn.router

    def sample(self, rows: list[PromptRow], step: int, timings: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        """The step's scored batch (prompt-major, group ids 0..prompts-1) and the metrics of sampling it, with
        reward/errors and reward/timeouts: the responses scored 0 because the reward function failed on them."""
        failures, timeouts = self.reward_fn.failures, self.reward_fn.timeouts
        batch, metrics = self._sample(rows, step, timings)
        metrics["reward/errors"] = float(self.reward_fn.failures - failures)
        metrics["reward/timeouts"] = float(self.reward_fn.timeouts - timeouts)
        return batch, metrics

    def _sample(self, rows: list[PromptRow], step: int, timings: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        if self.cfg.algorithm.filter_groups.enable:
            return self._dynamic(rows, step, timings)
        with timer("gen", timings):
            baselines = self._remax_baselines(rows, step) if self.cfg.algorithm.adv_estimator == "remax" else None
            params = phases.step_params(sampling_params(self.cfg.actor_rollout_ref, validate=False), self.seed, step)
            batch = phases.generate(self.group, rows, params, release_after=True, agent_loop=self.agent_loop,
                                    router=self.router)
        with timer("reward", timings):
            batch, extra = phases.score(self.reward_fn, batch, self.model_scores)
        if baselines is not None:
            batch = batch.with_fields(reward_baselines=baselines[batch.group_ids])
        return batch, reward_extra_metrics(extra)

    def _remax_baselines(self, rows: list[PromptRow], step: int) -> torch.Tensor:
        """(prompts,) the summed reward of one greedy response per prompt, indexed by group id."""
        greedy = sampling_params(self.cfg.actor_rollout_ref, validate=True)
        greedy.n, greedy.do_sample = 1, False
        batch = phases.generate(self.group, rows, greedy, release_after=False, agent_loop=self.agent_loop,
                                router=self.router)
        batch, _ = phases.score(self.reward_fn, batch, self.model_scores)
        return batch.token_level_scores.sum(-1)

    def _dynamic(self, rows: list[PromptRow], step: int, timings: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        fg, want = self.cfg.algorithm.filter_groups, self.cfg.data.train_batch_size
        base = sampling_params(self.cfg.actor_rollout_ref, validate=False)
        kept: list[Batch] = []
        n_kept, generated, score_sum = 0, 0, 0.0
        extras: dict[str, list[Any]] = {}  # every scored response's reward extras, all rounds
        for round_ in itertools.count():
            with timer("gen", timings):
                params = phases.step_params(base, self.seed, step, round_)
                batch = phases.generate(self.group, rows, params, release_after=False,
                                        agent_loop=self.agent_loop, router=self.router)
            with timer("reward", timings):
                batch, extra = phases.score(self.reward_fn, batch, self.model_scores)
            for key, values in extra.items():
                extras.setdefault(key, [None] * generated).extend(values)
            score_sum += float(batch.token_level_scores.sum())
            values = filter_values(batch, extra, fg.metric)
            groups = informative_groups(values, batch.group_ids)[: want - n_kept]
            kept.append(take_groups(batch, groups, first_id=n_kept))
            n_kept, generated = n_kept + len(groups), generated + len(values)
            if n_kept == want:
                break
            if fg.max_num_gen_batches and round_ + 1 >= fg.max_num_gen_batches:
                raise RuntimeError(
                    f"step {step}: only {n_kept} of data.train_batch_size={want} prompts had responses with "
                    f"differing {fg.metric} after algorithm.filter_groups.max_num_gen_batches="
                    f"{fg.max_num_gen_batches} rounds; raise it (0: no limit) or use easier data")
            print(f"[strive] step {step}: dynamic sampling kept {n_kept}/{want} prompts after round {round_ + 1} "
                  f"({generated} responses, {timings['gen']:.0f} s generating)", flush=True)
            rows = self.next_rows()
        self.group.call_all(WorkerProcess.release_rollout)
        metrics = {"train/num_gen_batches": round_ + 1, "train/generated_score_mean": score_sum / generated,
                   "train/kept_prompt_frac": want * params.n / generated, **reward_extra_metrics(extras)}
        return Batch.cat(kept), metrics


def filter_values(batch: Batch, extra: dict[str, list[Any]], metric: str) -> torch.Tensor:
    """(B,) the value algorithm.filter_groups compares: a named entry of the reward function's dict result,
    else the response's summed score (also for `score` when a reward model or judge scored: the combined
    reward, not the rule function's own entry). A response without the entry (scored 0 after a reward error, with
    reward_manager.on_error=zero) counts as 0."""
    if metric in ("acc", "score") and metric in extra and not (metric == "score" and "combined_score" in extra):
        return torch.tensor([float(v) if v is not None else 0.0 for v in extra[metric]], dtype=torch.float64)
    return batch.token_level_scores.sum(-1).double()


def informative_groups(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Group ids, in order of first appearance, whose responses do not all share one value (values (B,),
    group_ids (B,)); a group whose values are all equal has zero advantage under GRPO and RLOO."""
    groups = torch.unique_consecutive(group_ids)  # (G,) prompt-major order
    keep = [g for g in groups.tolist() if values[group_ids == g].unique().numel() > 1]
    return torch.tensor(keep, dtype=torch.long)


def take_groups(batch: Batch, groups: torch.Tensor, first_id: int) -> Batch:
    """The rows of `groups` (in that order), their group ids renumbered first_id, first_id + 1, ..."""
    rows = [i for g in groups.tolist() for i in (batch.group_ids == g).nonzero().flatten().tolist()]
    renumber = {g: first_id + k for k, g in enumerate(groups.tolist())}
    ids = torch.tensor([renumber[int(batch.group_ids[i])] for i in rows], dtype=torch.long)
    return batch.select(rows).with_fields(group_ids=ids)
