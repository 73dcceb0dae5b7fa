"""Partial rollout (strive/workers/partial.py, the queue's side in strive/trainer/async_rollout.py) with a fake
engine whose next token and log-prob depend on the prefix and on the weights' version, so that which version
produced which token is visible in the output."""

from __future__ import annotations

import pytest
import torch

from strive.batch import Batch
from strive.config.placement import PartialSettings
from strive.engines import SamplingParams
from strive.engines.base import Completion
from strive.trainer.async_rollout import RolloutQueue, oldest_versions, partial_metrics
from strive.workers.partial import Generation, advance, stats, token_versions

EOS = 0


class VersionedEngine:
    """Greedy and deterministic: next token = f(prefix, version); EOS when the prefix sum hits a multiple of 11 (so
    responses end at different lengths); a hard length limit like an engine's max_model_len."""

    def __init__(self, max_len: int = 10_000):
        self.version, self.max_len, self.calls = 0, max_len, 0
        self.asked: list[tuple[int, int]] = []
        """(prompts, n) of each call."""

    def next(self, ids: list[int]) -> tuple[int, float]:
        s = sum(ids) + 7 * len(ids)
        token = EOS if s % 11 == 0 and len(ids) > 3 else 1 + (s * 31 + 5 * self.version) % 97
        return token, -0.01 * (token % 13) - 0.1 * self.version

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        self.calls += 1
        self.asked.append((len(prompts), params.n))
        outs = []
        for prompt in (p for p in prompts for _ in range(params.n)):
            ids, toks, lps, reason = list(prompt), [], [], "length"
            while len(toks) < params.max_new_tokens and len(ids) < self.max_len:
                token, lp = self.next(ids)
                ids.append(token)
                toks.append(token)
                lps.append(lp)
                if token == EOS:
                    reason = "stop"
                    break
            outs.append(Completion(toks, lps, reason))
        return outs


PROMPTS = [[3, 4, 5], [9, 1], [2, 2, 2, 2]]
PARAMS = SamplingParams(max_new_tokens=12, n=2, seed=5)


def whole(engine: VersionedEngine, prompt: list[int], max_new: int) -> Completion:
    return engine.generate([prompt], SamplingParams(max_new_tokens=max_new))[0]


def run_until(gen, engine, version, chunk, mode, pushes_after):
    """advance() with a push pending once the engine has made `pushes_after` calls."""
    start = engine.calls
    return advance(gen, engine.generate, PARAMS, version, PartialSettings(mode, chunk),
                   lambda: engine.calls - start >= pushes_after)


@pytest.mark.parametrize("chunk", [1, 3, 5, 100])
def test_pieces_without_a_push_equal_one_call(chunk):
    engine = VersionedEngine()
    gen = run_until(Generation.start(PROMPTS, PARAMS.n), engine, 4, chunk, "continue", pushes_after=10**9)
    assert gen.complete and not any(gen.interrupted) and gen.dropped_tokens == 0
    for i, prompt in enumerate(gen.prompts):
        ref = whole(VersionedEngine(), prompt, PARAMS.max_new_tokens)
        assert prompt == PROMPTS[i // PARAMS.n]
        assert gen.tokens[i] == ref.token_ids and gen.logprobs[i] == pytest.approx(ref.logprobs)
        assert gen.versions[i] == [4] * len(ref.token_ids)
    assert 1 < gen.calls or chunk >= PARAMS.max_new_tokens
    assert engine.asked[0] == (len(PROMPTS), PARAMS.n)  # first piece: each prompt once, its n samples share it
    assert all(n == 1 for _, n in engine.asked[1:])  # later pieces: each response goes on from its own tokens


def test_continue_keeps_earlier_tokens_and_goes_on_under_the_new_weights():
    engine, chunk = VersionedEngine(), 4
    gen = run_until(Generation.start(PROMPTS, PARAMS.n), engine, 0, chunk, "continue", pushes_after=1)
    assert not gen.complete and any(gen.finished)  # [2, 2, 2, 2]'s responses stop within the first piece
    before = [list(t) for t in gen.tokens]
    engine.version = 1  # the push
    gen = run_until(gen, engine, 1, chunk, "continue", pushes_after=10**9)
    assert gen.complete
    for i, prompt in enumerate(gen.prompts):
        old = whole(VersionedEngine(), prompt, chunk)  # what version 0 sampled in the first piece
        assert gen.tokens[i][:len(old.token_ids)] == old.token_ids
        assert gen.logprobs[i][:len(old.token_ids)] == pytest.approx(old.logprobs)  # sampled with version 0
        if old.finish_reason == "stop":
            assert gen.versions[i] == [0] * len(old.token_ids) and not gen.interrupted[i]
            continue
        new_engine = VersionedEngine()
        new_engine.version = 1
        rest = whole(new_engine, prompt + before[i], PARAMS.max_new_tokens - chunk)
        assert gen.tokens[i][chunk:] == rest.token_ids and gen.logprobs[i][chunk:] == pytest.approx(rest.logprobs)
        assert gen.versions[i] == [0] * chunk + [1] * len(rest.token_ids) and gen.interrupted[i]
    assert any(gen.interrupted) and stats(gen)["interrupted"] == sum(gen.interrupted)


def test_resubmit_drops_unfinished_responses_and_samples_them_again():
    engine, chunk = VersionedEngine(), 4
    gen = run_until(Generation.start(PROMPTS, PARAMS.n), engine, 0, chunk, "resubmit", pushes_after=1)
    assert any(gen.finished) and gen.dropped_tokens > 0
    assert all(t == [] for t, done in zip(gen.tokens, gen.finished) if not done)  # the unfinished hold nothing now
    engine.version = 1
    gen = run_until(gen, engine, 1, chunk, "resubmit", pushes_after=10**9)
    for i, prompt in enumerate(gen.prompts):
        old = whole(VersionedEngine(), prompt, chunk)
        if old.finish_reason == "stop":  # finished before the push: kept
            assert gen.tokens[i] == old.token_ids and gen.versions[i] == [0] * len(old.token_ids)
            continue
        new_engine = VersionedEngine()
        new_engine.version = 1
        again = whole(new_engine, prompt, PARAMS.max_new_tokens)
        assert gen.tokens[i] == again.token_ids and gen.versions[i] == [1] * len(again.token_ids)
    assert gen.dropped_tokens == chunk * sum(gen.interrupted)


def test_a_push_pending_before_the_first_piece_starts_nothing():
    engine = VersionedEngine()
    gen = run_until(Generation.start(PROMPTS, PARAMS.n), engine, 0, 4, "continue", pushes_after=0)
    assert engine.calls == 0 and not any(gen.interrupted) and all(t == [] for t in gen.tokens)
    engine.version = 1
    gen = run_until(gen, engine, 1, 4, "continue", pushes_after=10**9)
    assert gen.complete and all(set(v) == {1} for v in gen.versions)


def test_the_engines_own_length_limit_ends_a_response():
    engine = VersionedEngine(max_len=9)  # prompts of 2-4 tokens: at most 5-7 new ones
    gen = run_until(Generation.start(PROMPTS, 1), engine, 0, 2, "continue", pushes_after=10**9)
    assert gen.complete and engine.calls <= 4
    assert all(len(p) + len(t) <= 9 for p, t in zip(gen.prompts, gen.tokens))


class StoppableEngine(VersionedEngine):
    """VersionedEngine that is Interruptible: one decode step per token for all rows at once, `should_stop` asked
    every `every` steps, unfinished rows handed back as 'abort'."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.checks = 0

    def generate_until(self, prompts, params, should_stop, every):
        self.calls += 1
        self.asked.append((len(prompts), params.n))
        rows = [[list(p), [], [], None] for p in prompts for _ in range(params.n)]  # ids, tokens, log-probs, reason
        for step in range(params.max_new_tokens):
            for row in rows:
                if row[3] is None and len(row[0]) < self.max_len:
                    token, lp = self.next(row[0])
                    row[0].append(token), row[1].append(token), row[2].append(lp)
                    row[3] = "stop" if token == EOS else None
                elif row[3] is None:
                    row[3] = "length"
            if all(r[3] for r in rows):
                break
            if (step + 1) % every == 0:
                self.checks += 1
                if should_stop():
                    return [Completion(t, lp, reason or "abort") for _, t, lp, reason in rows]
        return [Completion(t, lp, reason or "length") for _, t, lp, reason in rows]


def run_stoppable(gen, engine, version, every, mode, stop_at_check):
    """advance() through generate_until, the trainer asking for a push at the engine's `stop_at_check`-th check."""
    start = engine.checks
    return advance(gen, engine.generate, PARAMS, version, PartialSettings(mode, every),
                   lambda: engine.checks - start >= stop_at_check, engine.generate_until)


def test_an_interruptible_engine_needs_one_call_without_a_push():
    engine = StoppableEngine()
    gen = run_stoppable(Generation.start(PROMPTS, PARAMS.n), engine, 2, 3, "continue", stop_at_check=10**9)
    assert gen.complete and engine.calls == 1 and engine.checks > 1 and not any(gen.interrupted)
    assert engine.asked == [(len(PROMPTS), PARAMS.n)]
    for i, prompt in enumerate(gen.prompts):
        ref = whole(VersionedEngine(), prompt, PARAMS.max_new_tokens)
        assert gen.tokens[i] == ref.token_ids and gen.versions[i] == [2] * len(ref.token_ids)


@pytest.mark.parametrize("mode", ["continue", "resubmit"])
def test_an_interruptible_engine_stops_in_place_at_a_push(mode):
    engine, every = StoppableEngine(), 3
    gen = run_stoppable(Generation.start(PROMPTS, PARAMS.n), engine, 0, every, mode, stop_at_check=2)
    assert engine.calls == 1 and not gen.complete and any(gen.interrupted)
    engine.version = 1
    gen = run_stoppable(gen, engine, 1, every, mode, stop_at_check=10**9)
    assert gen.complete and engine.calls == 2  # one call before the push, one after: no pieces
    for i, prompt in enumerate(gen.prompts):
        old = whole(VersionedEngine(), prompt, 2 * every)  # the steps run before the second check said stop
        if old.finish_reason == "stop":
            assert gen.tokens[i] == old.token_ids and not gen.interrupted[i]
            continue
        new_engine = VersionedEngine()
        new_engine.version = 1
        kept = old.token_ids if mode == "continue" else []
        rest = whole(new_engine, prompt + kept, PARAMS.max_new_tokens - len(kept))
        assert gen.tokens[i] == kept + rest.token_ids and gen.interrupted[i]
        assert gen.versions[i] == [0] * len(kept) + [1] * len(rest.token_ids)
    assert gen.dropped_tokens == (2 * every * sum(gen.interrupted) if mode == "resubmit" else 0)


def test_token_versions_pad_with_minus_one():
    tv = token_versions([[2, 2, 3], [], [3]], T=4)
    assert tv.tolist() == [[2, 2, 3, -1], [-1, -1, -1, -1], [3, -1, -1, -1]]


def batch_of(tv: torch.Tensor) -> Batch:
    B, T = tv.shape
    return Batch(torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, T, dtype=torch.long),
                 torch.ones(B, T + 1, dtype=torch.long), torch.zeros(B, T + 1, dtype=torch.long),
                 (tv >= 0).float(), group_ids=torch.arange(B), token_versions=tv)


def test_oldest_version_and_token_staleness():
    batch = batch_of(torch.tensor([[4, 4, 5], [5, 5, -1], [-1, -1, -1]]))
    assert oldest_versions(batch, fallback=3).tolist() == [4, 5, 3]
    m = partial_metrics(batch, step=6, info={"responses": 3.0, "interrupted": 1.0})
    assert m["async/token_staleness_mean"] == pytest.approx((1 + 1 + 0 + 0 + 0) / 5)
    assert m["async/partial_interrupted_frac"] == pytest.approx(1 / 3)


class PartialBackend:
    """Records the calls; every generation spans the version it started under and the next push's version."""

    def __init__(self):
        self.calls, self.version = [], None

    def submit_generate(self, rows, params, partial):
        self.calls.append(("generate", params.seed))
        return {"start": self.version, "end": self.version}

    def submit_continue(self, handle, params, partial):
        self.calls.append(("continue", params.seed))
        return {"start": handle["start"], "end": self.version}

    def wait_generate(self, handle, rows, params):
        tv = torch.tensor([[handle["start"], handle["end"]]] * len(rows))
        return batch_of(tv), 0.5, {"responses": float(len(rows)), "interrupted": float(len(rows))}

    def submit_push(self, version):
        self.calls.append(("push", version))
        self.version = version

    def wait_push(self, handle, version):
        return {"weight_transfer_s": 0.1}


def test_queue_continues_each_generation_in_flight_after_a_push():
    backend = PartialBackend()
    queue = RolloutQueue(backend, 1, lambda: [0, 1], lambda step: SamplingParams(4, seed=step), 3,
                         PartialSettings("continue", 8))
    queue.start(0, 0)
    seen = []
    for step in (1, 2, 3):
        batch, metrics = queue.take(step, {})
        seen.append((batch.policy_versions.tolist(), metrics["async/staleness_max"],
                     metrics["async/token_staleness_mean"]))
        queue.push(step, {})
    assert backend.calls == [("push", 0), ("generate", 1), ("generate", 2), ("push", 1), ("continue", 2),
                             ("generate", 3), ("push", 2), ("continue", 3), ("push", 3)]
    # step 2's batch began under version 0 and was finished under version 1: oldest token 1 version old
    assert seen == [([0, 0], 0.0, 0.0), ([0, 0], 1.0, 0.5), ([1, 1], 1.0, 0.5)]
