"""A request-level, asynchronous front for any batch engine: one coroutine per request, one engine call per turn.

Why it exists: an agent loop runs one coroutine per trajectory; each awaits the engine for its next assistant
turn, then runs tools, then asks again. The engines' `generate(prompts, params)` is a batch call. `TurnBatcher`
sits between them: every live trajectory submits its request with `await batcher.generate(key, ids, max_tokens)`,
and when all live trajectories are waiting (or finished) the batcher serves them in one `generate` call, in a
worker thread so that tool calls of other trajectories keep running meanwhile.

What it chose:
- **Waiting for everyone** (a turn barrier) rather than dispatching whatever is pending after a delay: which
  requests share a call, their order (by key) and the call's seed (the base seed plus the call's number) then
  depend only on the trajectories, never on how fast a tool answered, so a resumed run samples what an
  uninterrupted one did. The cost is that a trajectory whose tool is slow holds its turn's call; tools have
  per-call timeouts (`ToolCallLimits.call_timeout_s`).
- **Per-request lengths**: one call asks for the longest `max_tokens` of its requests and each completion is cut
  to its own (finish reason `length` when cut). Sampling a token does not depend on how many may follow, so the
  kept tokens are what a call of that length would have sampled.
- **Per-request sampling settings**: a request may bring its own `SamplingParams` (temperature, top-p, ...);
  requests whose settings differ (other than the length) go to the engine in separate calls, one per setting.
- `n` is always 1 per request: the caller makes one trajectory per sample.
- `abort(key)` withdraws a trajectory (pending request dropped, no longer waited for).

Engines with their own request queue (vLLM's and SGLang's async engines, the fast hf path's continuous batching)
could serve requests without the barrier; that, and routing across ranks, is not here yet (docs/multiturn.md).

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_engine_requests.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Callable, Optional

from strive.engines.base import Completion, RolloutEngine, SamplingParams


class TurnBatcher:
    """Serves `live` concurrent requesters (keys 0..live-1 or any distinct ints) with one engine call per turn."""

    def __init__(self, engine: RolloutEngine, params: SamplingParams, live: set[int],
                 on_turn: Optional[Callable[[int, int], None]] = None):
        """`on_turn(requests served, requesters still live)` is called after each turn's engine calls."""
        self.engine = engine
        self.on_turn = on_turn
        self.params = replace(params, n=1)
        self.live = set(live)
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._pending: dict[int, _Request] = {}
        self._in_flight: dict[int, _Request] = {}
        self._busy = False

    async def generate(self, key: int, ids: list[int], max_tokens: int,
                       params: Optional[SamplingParams] = None) -> Completion:
        """The next completion for requester `key`: ids in, the engine's ids and log-probs out. `params`: this
        request's sampling settings (default: the batcher's); their max_new_tokens, n and seed are not used."""
        if key not in self.live:
            raise KeyError(f"request key {key} is not live (finished or aborted)")
        if key in self._pending:
            raise RuntimeError(f"request key {key} already has a request waiting")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        own = replace(params if params is not None else self.params, n=1, max_new_tokens=1, seed=None)
        self._pending[key] = _Request(list(ids), int(max_tokens), own, future)
        self._maybe_dispatch()
        return await future

    def finish(self, key: int) -> None:
        """Requester `key` will send nothing more (its trajectory ended); others no longer wait for it."""
        self.live.discard(key)
        self._maybe_dispatch()

    def abort(self, key: int) -> None:
        """Withdraw requester `key`: its request, waiting or already in an engine call, is cancelled (the call's
        answer for it is dropped) and it leaves the live set."""
        entry = self._pending.pop(key, None) or self._in_flight.pop(key, None)
        if entry is not None and not entry.future.done():
            entry.future.cancel()
        self.finish(key)

    def _maybe_dispatch(self) -> None:
        if self._busy or not self._pending or len(self._pending) < len(self.live):
            return
        batch = sorted(self._pending.items())  # by key: the call does not depend on arrival order
        self._in_flight.update(self._pending)
        self._pending = {}
        self._busy = True
        asyncio.get_running_loop().create_task(self._serve(batch))

    async def _serve(self, batch: list[tuple[int, _Request]]) -> None:
        groups: dict[str, list[_Request]] = {}
        for _, request in batch:  # one engine call per distinct sampling setting, in order of first key
            groups.setdefault(repr(request.params), []).append(request)
        self.batch_sizes.append(len(batch))
        for requests in groups.values():
            await self._call(requests)
        for key, _ in batch:
            self._in_flight.pop(key, None)
        if self.on_turn is not None:
            self.on_turn(len(batch), len(self.live))
        self._busy = False
        self._maybe_dispatch()

    async def _call(self, requests: list[_Request]) -> None:
        longest = max(r.max_tokens for r in requests)
        seed: Optional[int] = None if self.params.seed is None else self.params.seed + 1_000_003 * self.calls
        params = replace(requests[0].params, max_new_tokens=longest, seed=seed)
        self.calls += 1
        try:
            outs = await asyncio.to_thread(self.engine.generate, [r.ids for r in requests], params)
            if len(outs) != len(requests):
                raise RuntimeError(f"engine returned {len(outs)} completions for {len(requests)} requests")
        except BaseException as exc:  # noqa: BLE001 - every waiter learns why, nobody hangs
            for r in requests:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        for r, out in zip(requests, outs):
            if not r.future.done():
                r.future.set_result(cut(out, r.max_tokens))


@dataclass
class _Request:
    ids: list[int]
    max_tokens: int
    params: SamplingParams
    """The request's sampling settings with length, n and seed neutralised (equal settings share a call)."""
    future: asyncio.Future


def cut(completion: Completion, max_tokens: int) -> Completion:
    """`completion` limited to `max_tokens` ids; finish reason `length` when something was cut."""
    if len(completion.token_ids) <= max_tokens:
        return completion
    return Completion(completion.token_ids[:max_tokens], completion.logprobs[:max_tokens], "length")
