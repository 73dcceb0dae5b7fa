"""A reward function that raises or hangs on one sample (strive/reward/guard.py, reward_manager.on_error /
reward_manager.timeout): the run stops naming the sample, or the sample scores 0 and is counted."""

import threading
import time

import pytest
import torch

from strive.models.tiny import build_tokenizer
from strive.reward.custom import wrap_reward_function
from strive.reward.guard import RewardTimeout, call_all
from strive.reward.manager import RewardError, RewardManager


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _batch(tokenizer, texts, width=12):
    ids = torch.full((len(texts), width), tokenizer.pad_token_id)  # (B, T)
    mask = torch.zeros(len(texts), width, dtype=torch.long)  # (B, T)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text, add_special_tokens=False)
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def raising(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "boom":
        raise ZeroDivisionError("scorer bug")
    return 1.0


def sleeping(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        time.sleep(30)
    return 1.0


def swallowing(data_source, solution_str, ground_truth, extra_info=None):
    try:
        time.sleep(30)
    except Exception:  # a scorer's own broad except must not swallow the timeout
        return 5.0
    return 1.0


def _score(tokenizer, fn, texts, **kwargs):
    responses, mask = _batch(tokenizer, texts)
    infos = [{"index": 40 + i} for i in range(len(texts))]
    return RewardManager(tokenizer, fn, **kwargs), (responses, mask, ["src/a"] * len(texts), ["1"] * len(texts), infos)


def test_raising_scorer_stops_naming_sample_row_source_and_exception(tokenizer):
    manager, args = _score(tokenizer, raising, ["ok", "boom", "ok"])
    with pytest.raises(RewardError) as err:  # before: a bare ZeroDivisionError naming no sample
        manager.score(*args)
    message = str(err.value)
    assert "sample 1 of the batch" in message and "row index 41" in message and "'src/a'" in message
    assert "ZeroDivisionError: scorer bug" in message and "reward_manager.on_error=zero" in message
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_raising_scorer_scores_zero_and_is_counted(tokenizer, capsys):
    manager, args = _score(tokenizer, raising, ["ok", "boom", "ok", "boom"], on_error="zero")
    result = manager.score(*args)
    assert result.scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert manager.failures == 2 and manager.timeouts == 0
    assert "2 of 4 responses scored 0" in capsys.readouterr().out


@pytest.mark.parametrize("in_thread", [False, True])
def test_hung_scorer_times_out(tokenizer, in_thread):
    manager, args = _score(tokenizer, sleeping, ["ok", "hang", "ok"], on_error="zero", timeout=0.5)
    out = {}

    def run():
        start = time.perf_counter()
        out["result"] = manager.score(*args)
        out["took"] = time.perf_counter() - start

    if in_thread:  # off the main thread: helper threads instead of SIGALRM
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(20)
    else:
        run()
    assert out["result"].scores.tolist() == [1.0, 0.0, 1.0]  # the sample after the hung one is still scored
    assert manager.failures == 1 and manager.timeouts == 1
    assert out["took"] < 5


def test_hung_scorer_stops_the_run_with_raise(tokenizer):
    manager, args = _score(tokenizer, sleeping, ["hang"], timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(RewardError, match=r"timed out on sample 0 of the batch, row index 40.*RewardTimeout"):
        manager.score(*args)
    assert time.perf_counter() - start < 5


def test_timeout_is_not_swallowed_by_a_broad_except():
    outcomes = call_all(swallowing, [dict(data_source="d", solution_str="x", ground_truth="1")], 0.3)
    assert isinstance(outcomes[0].error, RewardTimeout)


def test_async_scorer_that_hangs_is_cancelled(tokenizer):
    import asyncio

    async def slow(data_source, solution_str, ground_truth, extra_info=None):
        if solution_str == "hang":
            await asyncio.sleep(30)
        if solution_str == "boom":
            raise ValueError("bad")
        return 1.0

    manager, args = _score(tokenizer, wrap_reward_function(slow), ["hang", "ok", "boom"], on_error="zero",
                           timeout=0.5)
    assert manager.score(*args).scores.tolist() == [0.0, 1.0, 0.0]
    assert manager.failures == 2 and manager.timeouts == 1


def test_no_timeout_calls_in_place(tokenizer):
    seen = []

    def record(data_source, solution_str, ground_truth, extra_info=None):
        seen.append(threading.current_thread() is threading.main_thread())
        return 0.0

    for timeout in (None, 0, 300):
        manager, args = _score(tokenizer, record, ["a"], timeout=timeout)
        manager.score(*args)
    assert seen == [True, True, True]  # scorers using signal.alarm themselves keep working


def test_bad_on_error_value(tokenizer):
    with pytest.raises(ValueError, match="reward_manager.on_error='skip'"):
        RewardManager(tokenizer, raising, on_error="skip")
