"""The reward stage when a model scores responses: a reward model (reward_model.enable) or an LLM judge
(reward_model.judge.enable), and how its score meets the rule score (reward_model.combine, strive/reward/combine.py).

The controller builds what the model reads (strive/reward/rm_inputs.py, strive/reward/judge.py), the worker
processes run it (one share of the rows per rank: `WorkerProcess.compute_rm_scores`, `WorkerProcess.judge_replies`),
and the rule function (the RewardManager) scores the rows the combine mode gives it. The step's reward is the
combined score on each response's last real token; `rm_score` or `judge_score`, `rule_score` and `combined_score`
are returned beside the rule function's own extras (so they appear as reward_extra/<name>/{mean,max,min} in training
and per data source in validation).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from strive.batch import Batch, split_evenly
from strive.controller.group import WorkerGroup
from strive.controller.process import WorkerProcess
from strive.engines import SamplingParams
from strive.models.loading import load_tokenizer
from strive.reward.combine import combine, model_rows, on_last_token, rule_rows
from strive.reward.judge import judge_prompt, parse_score
from strive.reward.rm_inputs import prompt_text, render, rm_input_ids, same_tokenizer, truncate


def _pair(batch: Batch, i: int) -> tuple[list[int], list[int]]:
    """Row i's prompt and response ids, padding removed."""
    P = batch.prompts.shape[1]
    return (batch.prompts[i][batch.attention_mask[i, :P].bool()].tolist(),
            batch.responses[i][batch.response_valid[i].bool()].tolist())


def _raw(batch: Batch, i: int) -> Optional[list[dict]]:
    raw = batch.meta.raw_prompts
    return None if raw is None else raw[i]


class RewardModelScores:
    """The discriminative reward model: inputs in its tokens, scored on the workers."""

    key = "rm_score"

    def __init__(self, cfg, group: WorkerGroup, policy_tok: Any):
        rm = cfg.reward_model
        self.group, self.max_length = group, rm.max_length
        trust = bool(rm.model.trust_remote_code)
        self.rm_tok = load_tokenizer(rm.model.path, trust_remote_code=trust)
        self.policy_tok = load_tokenizer(rm.model.input_tokenizer, trust) if rm.model.input_tokenizer else policy_tok
        self.switch = not same_tokenizer(self.policy_tok, self.rm_tok)
        self.warned = False
        how = ("re-rendered with the reward model's chat template (its tokenizer differs from the policy's)"
               if self.switch else "the policy's token ids as they are (same tokenizer and chat template)")
        print(f"[strive] reward model inputs: {how}", flush=True)

    def __call__(self, batch: Batch, rows: list[int]) -> tuple[torch.Tensor, dict[str, list]]:
        inputs, cut = [], 0
        for i in rows:
            prompt, response = _pair(batch, i)
            ids, was_cut = truncate(rm_input_ids(prompt, response, _raw(batch, i), self.policy_tok, self.rm_tok,
                                                 self.switch), self.max_length)
            inputs.append(ids)
            cut += was_cut
        if cut and not self.warned:
            self.warned = True
            print(f"[strive] WARNING: {cut} of {len(rows)} reward-model inputs are longer than reward_model.max_length="
                  f"{self.max_length} tokens and were cut to their first {self.max_length} (verl's truncation; the "
                  "reward model does not see the end of those responses). Raise reward_model.max_length to score "
                  "them whole. This warning is printed once per run.", flush=True)
        parts = self.group.call(WorkerProcess.compute_rm_scores, split_evenly(inputs, self.group.world_size))
        return torch.cat(parts).float(), {}


class JudgeScores:
    """The LLM judge: a prompt per response, replies generated on the workers' judge engines, a number parsed."""

    key = "judge_score"

    def __init__(self, cfg, group: WorkerGroup, policy_tok: Any):
        self.cfg, self.group, self.policy_tok = cfg.reward_model.judge, group, policy_tok
        self.judge_tok = load_tokenizer(self.cfg.path)
        self.params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                                     do_sample=self.cfg.temperature > 0, seed=0)

    def __call__(self, batch: Batch, rows: list[int]) -> tuple[torch.Tensor, dict[str, list]]:
        prompts = []
        for i in rows:
            prompt, response = _pair(batch, i)
            text = judge_prompt(self.cfg.prompt_template, prompt_text(prompt, _raw(batch, i), self.policy_tok),
                                self.policy_tok.decode(response, skip_special_tokens=True),
                                batch.meta.ground_truths[i])
            prompts.append(render([{"role": "user", "content": text}], self.judge_tok, generation_prompt=True))
        shards = split_evenly(prompts, self.group.world_size)
        replies = [r for part in self.group.call(WorkerProcess.judge_replies, shards, self.params) for r in part]
        parsed = [parse_score(self.judge_tok.decode(r, skip_special_tokens=True), self.cfg.score_regex,
                              self.cfg.max_score) for r in replies]
        return torch.tensor([s for s, _ in parsed]), {"judge_parsed": [ok for _, ok in parsed]}


def build_model_scores(cfg, group: WorkerGroup, policy_tok: Any):
    """The run's model scorer, or None when rewards are rule-based only; `mode` and `sources` are
    reward_model.combine and reward_model.data_sources."""
    if cfg.reward_model.enable:
        model = RewardModelScores(cfg, group, policy_tok)
    elif cfg.reward_model.judge.enable:
        model = JudgeScores(cfg, group, policy_tok)
    else:
        return None
    model.mode, model.sources = cfg.reward_model.combine, [str(s) for s in cfg.reward_model.data_sources]
    return model


def score_with_model(reward_fn, model, batch: Batch, rule_score) -> tuple[Batch, dict[str, list[Any]]]:
    """The batch with its combined token scores; the extras (see module doc). `rule_score(reward_fn, batch)` scores a
    sub-batch with the rule function and returns (batch with token_level_scores, extras)."""
    B, sources, mode, model_sources = len(batch), batch.meta.data_sources, model.mode, model.sources
    by_model = [i for i, m in enumerate(model_rows(sources, mode, model_sources)) if m]
    by_rule = [i for i, r in enumerate(rule_rows(sources, mode, model_sources)) if r]
    model_scores = torch.zeros(B)  # (B,)
    extra: dict[str, list[Any]] = {}
    if by_model:
        scores, model_extra = model(batch, by_model)
        model_scores[by_model] = scores
        for key, values in model_extra.items():
            extra[key] = _spread(values, by_model, B)
    rule_scores = None
    if by_rule:
        scored, rule_extra = rule_score(reward_fn, batch.select(by_rule))
        rule_scores = torch.zeros(B)  # (B,)
        rule_scores[by_rule] = scored.token_level_scores.sum(-1)
        for key, values in rule_extra.items():
            extra[key] = _spread(values, by_rule, B)
        extra["rule_score"] = _spread(rule_scores[by_rule].tolist(), by_rule, B)
    combined = combine(model_scores, rule_scores, sources, mode, model_sources)  # (B,)
    extra[model.key] = _spread(model_scores[by_model].tolist(), by_model, B)
    extra["combined_score"] = combined.tolist()
    return batch.with_fields(token_level_scores=on_last_token(combined, batch.response_valid)), extra


def _spread(values: list, rows: list[int], size: int) -> list:
    """Values of `rows` placed in a list of `size` (None elsewhere)."""
    out: list = [None] * size
    for i, v in zip(rows, values):
        out[i] = v
    return out
