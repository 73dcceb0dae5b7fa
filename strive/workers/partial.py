"""Partial rollout: a generation that a weight push interrupts, then continues (or restarts) under the new weights.

With split placement and `async_training.partial_rollout=True`, a rollout process asks the weight-transfer store
every `async_training.partial_rollout_chunk` new tokens whether the trainer is waiting to push the next policy
version (transfer.py sets `want/<version>` when a push starts). If so, the generation stops where it is and is
handed back unfinished; the process takes the new weights, and the controller's next call on it
(`WorkerProcess.continue_ahead`) goes on, by `partial_rollout_mode`:

- `continue`: an unfinished response goes on from its last token under the new weights. Its earlier tokens keep the
  log-probs they were sampled with (the behaviour policy's, which rollout correction needs) and their version.
- `resubmit`: an unfinished response is dropped and sampled again from its prompt under the new weights.

Finished responses are kept as they are in both modes. Every token records the policy version that sampled it
(`Batch.token_versions`), so the staleness bound and the metrics read what happened, not what was planned.

How a generation is stopped depends on the engine:
- an Interruptible engine (strive.engines.base; the hf engines, plain and fast) asks inside its decode loop and
  returns what each response has so far ('abort'), so without a push a generation is one call, as it would be
  without partial rollout, and a push costs one more prefill of prompt + tokens so far when it continues;
- any other engine is called in pieces of at most `partial_rollout_chunk` new tokens through its ordinary batch
  `generate`, asked before each piece. A continued request is its prompt plus the tokens so far, so each piece
  recomputes that prefix (vLLM and SGLang find it in their prefix cache), paid whether or not a push comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from strive.config.placement import PartialSettings
from strive.engines.base import Completion, SamplingParams
from strive.engines.requests import cut


@dataclass
class Generation:
    """Responses being generated, one entry per response (prompt-major, n per prompt)."""

    prompts: list[list[int]]
    tokens: list[list[int]]
    logprobs: list[list[float]]
    versions: list[list[int]]
    """The policy version that sampled each token."""
    finished: list[bool]
    interrupted: list[bool]
    """Whether a push stopped this response at least once while it had tokens."""
    calls: int = 0
    """Engine calls so far (each piece's seed is the step's seed plus a multiple of it)."""
    dropped_tokens: int = 0
    """Tokens thrown away by `resubmit`."""
    seconds: float = 0.0
    """Time spent generating, over every call on every piece."""
    pieces: list[int] = field(default_factory=list)
    """Responses in each engine call."""
    n: int = 1
    """Responses per prompt (consecutive entries share a prompt)."""

    @staticmethod
    def start(prompts: list[list[int]], n: int) -> "Generation":
        B = len(prompts) * n
        return Generation([list(prompts[i // n]) for i in range(B)], [[] for _ in range(B)], [[] for _ in range(B)],
                          [[] for _ in range(B)], [False] * B, [False] * B, n=n)

    @property
    def complete(self) -> bool:
        return all(self.finished)


Generate = Callable[[list[list[int]], SamplingParams], list[Completion]]
GenerateUntil = Callable[[list[list[int]], SamplingParams, Callable[[], bool], int], list[Completion]]


def advance(gen: Generation, generate: Generate, params: SamplingParams, version: int, settings: PartialSettings,
            push_pending: Callable[[], bool], generate_until: Optional[GenerateUntil] = None) -> Generation:
    """Generate under policy `version` until every response is finished or `push_pending()` says the trainer waits
    to push newer weights (then the unfinished ones are interrupted as `settings.mode` says). With `generate_until`
    (an Interruptible engine) one call runs to the end unless told to stop; else `generate` runs in pieces."""
    while not gen.complete:
        if push_pending():
            interrupt(gen, settings.mode)
            return gen
        todo = [i for i, done in enumerate(gen.finished) if not done]
        left = [params.max_new_tokens - len(gen.tokens[i]) for i in todo]
        seed = None if params.seed is None else params.seed + 1_000_003 * gen.calls
        fresh = gen.calls == 0 and gen.n > 1 and len(todo) == len(gen.prompts)  # the n samples share one prefill
        requests = gen.prompts[::gen.n] if fresh else [gen.prompts[i] + gen.tokens[i] for i in todo]
        call = replace(params, n=gen.n if fresh else 1, seed=seed)
        if generate_until is not None:  # to the end, unless told to stop
            piece = max(left)
            outs = generate_until(requests, replace(call, max_new_tokens=piece), push_pending, settings.chunk)
        else:  # one piece
            piece = min(settings.chunk, max(left))
            outs = generate(requests, replace(call, max_new_tokens=piece))
        if len(outs) != len(todo):
            raise RuntimeError(f"engine returned {len(outs)} completions for {len(todo)} requests")
        gen.calls += 1
        gen.pieces.append(len(todo))
        for i, limit, out in zip(todo, left, outs):
            _extend(gen, i, out, min(piece, limit), version, params.max_new_tokens)
        if any(out.finish_reason == "abort" for out in outs):
            interrupt(gen, settings.mode)
            return gen
    return gen


def _extend(gen: Generation, i: int, out: Completion, asked: int, version: int, max_new_tokens: int) -> None:
    """Response i takes a call's `out` (at most `asked` tokens of it, sampled by `version`)."""
    out = cut(out, asked)
    gen.tokens[i] += out.token_ids
    gen.logprobs[i] += out.logprobs
    gen.versions[i] += [version] * len(out.token_ids)
    # fewer tokens than asked without a stop: the engine's own length limit (max_model_len) ended it
    gen.finished[i] = out.finish_reason != "abort" and (
        out.finish_reason == "stop" or len(out.token_ids) < asked or len(gen.tokens[i]) >= max_new_tokens)


def interrupt(gen: Generation, mode: str) -> None:
    """A push is waiting: mark the unfinished responses that have tokens; `resubmit` also drops those tokens."""
    for i, done in enumerate(gen.finished):
        if done or not gen.tokens[i]:
            continue
        gen.interrupted[i] = True
        if mode == "resubmit":
            gen.dropped_tokens += len(gen.tokens[i])
            gen.tokens[i], gen.logprobs[i], gen.versions[i] = [], [], []


def token_versions(versions: list[list[int]], T: int) -> torch.Tensor:
    """(B, T) long: each response token's policy version, -1 on padding (and past T)."""
    out = torch.full((len(versions), T), -1, dtype=torch.long)
    for i, v in enumerate(versions):
        if v[:T]:
            out[i, : len(v[:T])] = torch.tensor(v[:T], dtype=torch.long)
    return out


def stats(gen: Generation) -> dict[str, float]:
    """What partial rollout did to this generation (summed over responses; the controller averages)."""
    return {"responses": float(len(gen.finished)), "interrupted": float(sum(gen.interrupted)),
            "dropped_tokens": float(gen.dropped_tokens), "engine_calls": float(gen.calls)}
