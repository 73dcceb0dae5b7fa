"""An `async def` reward function: the batch's calls overlap, never more than reward_manager.max_concurrency at a
time (strive/reward/guard.py); a plain function keeps the one-at-a-time path."""

import asyncio
import threading
import time

import pytest
import torch

from strive.models.tiny import build_tokenizer
from strive.reward.custom import wrap_reward_function
from strive.reward.manager import RewardManager


class Gauge:
    def __init__(self):
        self.now = self.peak = 0
        self.threads: set[int] = set()

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.threads.add(threading.get_ident())

    def leave(self):
        self.now -= 1


def _batch(tokenizer, n, width=6):
    ids = torch.full((n, width), tokenizer.pad_token_id)  # (B, T)
    mask = torch.zeros(n, width, dtype=torch.long)  # (B, T)
    for i in range(n):
        row = tokenizer.encode(f"r{i}", add_special_tokens=False)
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def _async_scorer(gauge, delay):
    async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        gauge.enter()
        await asyncio.sleep(delay)
        gauge.leave()
        return float(len(solution_str))
    return wrap_reward_function(compute_score)


@pytest.mark.parametrize("bound", [1, 4, 16])
def test_async_calls_never_exceed_the_bound(bound):
    tok, gauge = build_tokenizer(), Gauge()
    responses, mask = _batch(tok, 16)
    manager = RewardManager(tok, _async_scorer(gauge, 0.02), max_concurrency=bound)
    result = manager.score(responses, mask, ["d"] * 16, ["g"] * 16)
    assert gauge.peak == bound  # reaches the bound (really concurrent above 1) and never passes it
    assert result.scores.tolist() == [2.0] * 10 + [3.0] * 6  # in the batch's order: "r0".."r9", "r10".."r15"


def test_async_calls_overlap_in_time():
    tok, gauge = build_tokenizer(), Gauge()
    responses, mask = _batch(tok, 16)
    start = time.perf_counter()
    RewardManager(tok, _async_scorer(gauge, 0.2), max_concurrency=8).score(responses, mask, ["d"] * 16, ["g"] * 16)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.5  # 16 × 0.2 s = 3.2 s one at a time; two waves of 8 take about 0.4 s
    assert len(gauge.threads) == 1  # one event loop, not a thread per call


def test_no_bound_runs_the_whole_batch_at_once():
    tok, gauge = build_tokenizer(), Gauge()
    responses, mask = _batch(tok, 12)
    RewardManager(tok, _async_scorer(gauge, 0.02), max_concurrency=0).score(responses, mask, ["d"] * 12, ["g"] * 12)
    assert gauge.peak == 12


def test_sync_function_stays_sequential():
    tok, gauge = build_tokenizer(), Gauge()
    responses, mask = _batch(tok, 5)

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        gauge.enter()
        time.sleep(0.01)
        gauge.leave()
        return 1.0

    RewardManager(tok, compute_score, max_concurrency=4).score(responses, mask, ["d"] * 5, ["g"] * 5)
    assert gauge.peak == 1
