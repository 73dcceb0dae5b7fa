"""TurnBatcher: concurrent requests with their own lengths, one engine call per turn, abort, determinism."""

import asyncio
import random

import pytest

from strive.engines.base import Completion, SamplingParams
from strive.engines.requests import TurnBatcher, cut


class RecordingEngine:
    """Answers each prompt with ids last+1, last+2, ... (up to max_new_tokens; a prompt ending in 0 stops after
    two ids) and records every call."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[list[list[int]], SamplingParams]] = []
        self.fail = fail

    def generate(self, prompts, params):
        self.calls.append(([list(p) for p in prompts], params))
        if self.fail:
            raise RuntimeError("engine broke")
        outs = []
        for p in prompts:
            length = 2 if p[-1] == 0 else params.max_new_tokens
            ids = [p[-1] + k + 1 for k in range(length)]
            outs.append(Completion(ids, [-0.5 * (k + 1) for k in range(length)],
                                   "stop" if p[-1] == 0 else "length"))
        return outs


def run(coro):
    return asyncio.run(coro)


def test_one_call_serves_every_live_request_each_with_its_own_length():
    engine = RecordingEngine()

    async def main():
        batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=99, n=4, seed=5), {0, 1, 2})
        outs = await asyncio.gather(batcher.generate(2, [30], 1), batcher.generate(0, [10], 3),
                                    batcher.generate(1, [0], 5))
        return batcher, outs

    batcher, (c2, c0, c1) = run(main())
    assert len(engine.calls) == 1
    prompts, params = engine.calls[0]
    assert prompts == [[10], [0], [30]]  # ordered by key, not by arrival
    assert params.max_new_tokens == 5 and params.n == 1
    assert c0.token_ids == [11, 12, 13] and c0.finish_reason == "length" and c0.logprobs == [-0.5, -1.0, -1.5]
    assert c1.token_ids == [1, 2] and c1.finish_reason == "stop"  # stopped before its limit: untouched
    assert c2.token_ids == [31] and c2.finish_reason == "length"
    assert batcher.batch_sizes == [3]


def test_turns_wait_for_the_slowest_requester_and_finished_ones_leave():
    engine = RecordingEngine()

    async def requester(batcher, key, turns, delay):
        ids = [key * 100]
        for _ in range(turns):
            await asyncio.sleep(delay)  # a "tool call" between turns
            out = await batcher.generate(key, ids, 2)
            ids = ids + out.token_ids
        batcher.finish(key)
        return ids

    async def main():
        batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=2), {1, 2, 3})
        return batcher, await asyncio.gather(requester(batcher, 1, 1, 0.0), requester(batcher, 2, 3, 0.03),
                                             requester(batcher, 3, 2, 0.01))

    batcher, (a, b, c) = run(main())
    assert batcher.batch_sizes == [3, 2, 1]
    assert [len(p) for p, _ in engine.calls] == [3, 2, 1]
    assert b == [200, 201, 202, 203, 204, 205, 206]
    assert c == [300, 301, 302, 303, 304]


def test_calls_do_not_depend_on_arrival_order():
    def one_run(seed):
        engine = RecordingEngine()
        rng = random.Random(seed)

        async def requester(batcher, key):
            ids = [key + 1]
            for _ in range(3):
                await asyncio.sleep(rng.random() * 0.01)
                ids = ids + (await batcher.generate(key, ids, 1)).token_ids
            batcher.finish(key)

        async def main():
            batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=1, seed=11), set(range(4)))
            await asyncio.gather(*(requester(batcher, k) for k in range(4)))

        run(main())
        return [(prompts, params.seed) for prompts, params in engine.calls]

    first = one_run(0)
    assert first == one_run(1) == one_run(2)
    assert len({seed for _, seed in first}) == 3  # every call seeded, differently


def test_abort_cancels_the_waiting_request_and_the_others_go_on():
    engine = RecordingEngine()

    async def main():
        batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=1), {0, 1, 2})
        waiting = asyncio.ensure_future(batcher.generate(0, [5], 1))
        await asyncio.sleep(0)
        batcher.abort(0)
        others = await asyncio.gather(batcher.generate(1, [7], 1), batcher.generate(2, [9], 1))
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(KeyError, match="not live"):
            await batcher.generate(0, [5], 1)
        return others

    others = run(main())
    assert [o.token_ids for o in others] == [[8], [10]]
    assert engine.calls[0][0] == [[7], [9]]


def test_an_engine_error_reaches_every_waiter():
    async def main():
        batcher = TurnBatcher(RecordingEngine(fail=True), SamplingParams(max_new_tokens=1), {0, 1})
        return await asyncio.gather(batcher.generate(0, [1], 1), batcher.generate(1, [2], 1), return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, RuntimeError) and "engine broke" in str(r) for r in results)


def test_misuse_is_refused():
    async def main():
        batcher = TurnBatcher(RecordingEngine(), SamplingParams(max_new_tokens=1), {0, 1})
        with pytest.raises(ValueError, match="max_tokens"):
            await batcher.generate(0, [1], 0)
        first = asyncio.ensure_future(batcher.generate(0, [1], 1))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already has a request"):
            await batcher.generate(0, [1], 1)
        batcher.finish(1)
        return await first

    assert run(main()).token_ids == [2]


def test_cut_keeps_a_short_completion_and_marks_a_cut_one():
    done = Completion([1, 2], [-1.0, -2.0], "stop")
    assert cut(done, 2) is done
    assert cut(done, 1) == Completion([1], [-1.0], "length")


def test_requests_with_other_sampling_settings_get_their_own_call():
    engine = RecordingEngine()

    async def main():
        batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=9, temperature=1.0, seed=2), {0, 1, 2})
        hot = SamplingParams(max_new_tokens=50, temperature=1.5, n=3, seed=99)
        return await asyncio.gather(batcher.generate(0, [1], 2), batcher.generate(1, [2], 3, hot),
                                    batcher.generate(2, [3], 1))

    outs = run(main())
    assert [o.token_ids for o in outs] == [[2, 3], [3, 4, 5], [4]]
    (p1, s1), (p2, s2) = engine.calls
    assert p1 == [[1], [3]] and (s1.temperature, s1.max_new_tokens, s1.n) == (1.0, 2, 1)
    assert p2 == [[2]] and (s2.temperature, s2.max_new_tokens, s2.n) == (1.5, 3, 1)
    assert s1.seed != s2.seed and 99 not in (s1.seed, s2.seed)  # seeded by the batcher, not the request


def test_abort_of_a_request_already_in_an_engine_call_drops_its_answer():
    engine = RecordingEngine()

    async def main():
        batcher = TurnBatcher(engine, SamplingParams(max_new_tokens=1), {0, 1})
        tasks = [asyncio.ensure_future(batcher.generate(k, [k + 1], 1)) for k in (0, 1)]
        await asyncio.sleep(0)  # both submitted: the call is under way
        assert not batcher._pending and sorted(batcher._in_flight) == [0, 1]
        batcher.abort(0)
        assert (await tasks[1]).token_ids == [3]
        assert tasks[0].cancelled()

    run(main())


def test_on_turn_hears_each_turn_with_its_size():
    seen = []

    async def main():
        batcher = TurnBatcher(RecordingEngine(), SamplingParams(max_new_tokens=2), {0, 1},
                              on_turn=lambda served, live: seen.append((served, live)))
        await asyncio.gather(batcher.generate(0, [5], 1), batcher.generate(1, [6], 1))
        batcher.finish(0)
        await batcher.generate(1, [6, 7], 1)

    run(main())
    assert seen == [(2, 2), (1, 1)]
