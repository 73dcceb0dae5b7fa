"""Turn a batch of generated responses into token-level rule rewards (verl's `naive` manager).

Why it exists: the trainer holds responses as token ids, scorers want strings. This module
decodes each response, calls the scorer, and puts the scalar on the response's last valid
token (the EOS if one was generated), which is where PPO/GRPO expect an outcome reward
(spec §3.3).

What it chose:
- inputs are explicit tensors and lists, not a data bag; the result is a small dataclass;
- `scores` (B,) holds each scorer's value; `token_scores` (B, T) holds it at index
  `valid_len - 1`. A response with no valid tokens gets no token reward (verl would write to
  index -1, the last padding slot);
- every key of a dict result (including `score`) becomes a list in `extra`, aligned with the
  batch; samples whose result lacked that key hold None;
- scoring is sequential; async scorers (see `strive.reward.custom`) are gathered concurrently;
- verl's `dapo` manager is this one with `overlong` set: DAPO's overlong penalty (`strive.reward.overlong`) is
  added to each score after the scorer ran, so `extra["score"]` keeps the scorer's own value; with
  `overlong.log` the per-response `overlong_reward` and `overlong` join `extra`.

Exercised by `pytest tests/unit/test_reward_manager.py`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from strive.reward import default_compute_score, normalize_score
from strive.reward.custom import run_coroutine
from strive.reward.overlong import OverlongBuffer, overlong_penalty


@dataclass
class RewardResult:
    token_scores: torch.Tensor  # (B, T) float32, scalar at each response's last valid token
    scores: torch.Tensor  # (B,) float32, one scalar per response
    extra: dict[str, list[Any]] = field(default_factory=dict)  # dict-result keys, each a length-B list


class RewardManager:
    """Scores decoded responses with `compute_score` (default: the data_source dispatch).

    `reward_fn_key` names the dataset column whose values the caller passes as `data_sources`
    (verl's `data.reward_fn_key`); the manager only records it.
    """

    def __init__(
        self,
        tokenizer: Any,
        compute_score: Callable[..., Any] | None = None,
        reward_fn_key: str = "data_source",
        num_examine: int = 0,
        overlong: OverlongBuffer | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.overlong = overlong
        self.compute_score = compute_score or default_compute_score
        self.reward_fn_key = reward_fn_key
        self.num_examine = num_examine

    def score(
        self,
        responses: torch.Tensor,  # (B, T) response token ids, right-padded
        response_mask: torch.Tensor,  # (B, T) 1 on generated tokens
        data_sources: Sequence[str],
        ground_truths: Sequence[Any],
        extra_infos: Sequence[dict | None] | None = None,
        prompts: torch.Tensor | None = None,  # (B, P) prompt token ids, left-padded
        prompt_mask: torch.Tensor | None = None,  # (B, P)
    ) -> RewardResult:
        batch = responses.shape[0]
        for label, values in (("data_sources", data_sources), ("ground_truths", ground_truths)):
            if len(values) != batch:
                raise ValueError(f"RewardManager.score: {label} has {len(values)} entries for {batch} responses")
        extra_infos = list(extra_infos) if extra_infos is not None else [None] * batch
        valid_lens = response_mask.long().sum(dim=-1).tolist()  # (B,)
        texts = [
            self.tokenizer.decode(responses[i, :n].tolist(), skip_special_tokens=True)
            for i, n in enumerate(valid_lens)
        ]
        calls = [
            dict(data_source=data_sources[i], solution_str=texts[i], ground_truth=ground_truths[i], extra_info=extra_infos[i])
            for i in range(batch)
        ]
        results = [normalize_score(r, calls[i]["data_source"]) for i, r in enumerate(self._call_all(calls))]

        token_scores = torch.zeros(responses.shape, dtype=torch.float32)  # (B, T)
        scores = torch.zeros(batch, dtype=torch.float32)  # (B,)
        for i, result in enumerate(results):
            scores[i] = float(result["score"]) if isinstance(result, dict) else result
        extra = _collect_extra(results)
        if self.overlong is not None:
            penalty = overlong_penalty(torch.tensor(valid_lens), self.overlong)  # (B,)
            scores = scores + penalty
            if self.overlong.log:
                extra["overlong_reward"] = penalty.tolist()
                extra["overlong"] = (penalty < 0).tolist()
        for i, n in enumerate(valid_lens):
            if n > 0:
                token_scores[i, n - 1] = scores[i]
        self._print_examples(texts, calls, scores, prompts, prompt_mask)
        return RewardResult(token_scores=token_scores, scores=scores, extra=extra)

    def _call_all(self, calls: list[dict[str, Any]]) -> list[Any]:
        acall = getattr(self.compute_score, "acall", None)
        if acall is None and inspect.iscoroutinefunction(self.compute_score):
            acall = self.compute_score
        if acall is None:
            return [self.compute_score(**kwargs) for kwargs in calls]

        async def gather() -> list[Any]:
            return await asyncio.gather(*(acall(**kwargs) for kwargs in calls))

        return run_coroutine(gather())

    def _print_examples(self, texts, calls, scores, prompts, prompt_mask) -> None:
        if self.num_examine <= 0:
            return
        printed: dict[str, int] = {}
        for i, kwargs in enumerate(calls):
            source = kwargs["data_source"]
            if printed.get(source, 0) >= self.num_examine:
                continue
            printed[source] = printed.get(source, 0) + 1
            if prompts is not None:
                n = int(prompt_mask[i].sum()) if prompt_mask is not None else prompts.shape[1]
                valid_prompt = prompts[i, prompts.shape[1] - n:].tolist()
                print("[prompt]", self.tokenizer.decode(valid_prompt, skip_special_tokens=True))
            print("[response]", texts[i])
            print("[ground_truth]", kwargs["ground_truth"])
            print("[score]", float(scores[i]))


def _collect_extra(results: list[float | dict[str, Any]]) -> dict[str, list[Any]]:
    keys: list[str] = []
    for result in results:
        if isinstance(result, dict):
            keys.extend(k for k in result if k not in keys)
    return {k: [r.get(k) if isinstance(r, dict) else None for r in results] for k in keys}
