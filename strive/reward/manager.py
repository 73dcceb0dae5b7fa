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
- scoring is sequential; async scorers (see `strive.reward.custom`) are gathered concurrently, at most
  `max_concurrency` in flight (reward_manager.max_concurrency); every call goes
  through `strive.reward.guard`, so a call that raises or runs past `timeout` seconds is caught per sample. With
  `on_error="raise"` (reward_manager.on_error, default) the first such sample stops the run with a RewardError
  naming its position in the batch, its row index, data_source and the exception; with `"zero"` it scores 0, its
  dict entries are None, one line is printed per batch, and `failures` / `timeouts` count it (the trainer logs
  them as reward/errors and reward/timeouts);
- verl's `dapo` manager is this one with `overlong` set: DAPO's overlong penalty (`strive.reward.overlong`) is
  added to each score after the scorer ran, so `extra["score"]` keeps the scorer's own value; with
  `overlong.log` the per-response `overlong_reward` and `overlong` join `extra`.

Exercised by `pytest tests/unit/test_reward_manager.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from strive.reward import default_compute_score, normalize_score
from strive.reward.guard import Outcome, RewardTimeout, call_all
from strive.reward.overlong import OverlongBuffer, overlong_penalty


ON_ERROR = ("raise", "zero")


class RewardError(RuntimeError):
    """The reward function raised or timed out on a sample, with reward_manager.on_error=raise."""


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
        on_error: str = "raise",
        timeout: float | None = 300.0,
        max_concurrency: int | None = 64,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"reward_manager.on_error={on_error!r}; expected one of {', '.join(ON_ERROR)}")
        self.on_error, self.timeout = on_error, timeout
        self.max_concurrency = max_concurrency
        """Async reward functions: calls in flight at once (reward_manager.max_concurrency)."""
        self.failures = 0
        """Running count of samples scored 0 because the reward function raised or timed out (on_error=zero)."""
        self.timeouts = 0
        """Of those, the ones that timed out."""
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
        outcomes = call_all(self.compute_score, calls, self.timeout, self.max_concurrency)
        results = [normalize_score(o.value, calls[i]["data_source"]) if o.error is None else 0.0
                   for i, o in enumerate(outcomes)]
        self._handle_failures(outcomes, calls)

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

    def _handle_failures(self, outcomes: list[Outcome], calls: list[dict[str, Any]]) -> None:
        failed = [i for i, o in enumerate(outcomes) if o.error is not None]
        if not failed:
            return
        first = failed[0]
        error = outcomes[first].error
        info = calls[first]["extra_info"]
        row = f", row index {info['index']}" if isinstance(info, dict) and "index" in info else ""
        where = (f"sample {first} of the batch{row}, data_source={calls[first]['data_source']!r}: "
                 f"{type(error).__name__}: {error}")
        if self.on_error == "raise":
            verb = "timed out" if isinstance(error, RewardTimeout) else "raised"
            raise RewardError(f"the reward function {verb} on {where} (set reward_manager.on_error=zero to score "
                              "such samples 0 and count them instead)") from error
        timeouts = sum(isinstance(outcomes[i].error, RewardTimeout) for i in failed)
        self.failures += len(failed)
        self.timeouts += timeouts
        print(f"[strive] reward: {len(failed)} of {len(outcomes)} responses scored 0 after an error "
              f"({timeouts} timed out); first: {where}", flush=True)

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
