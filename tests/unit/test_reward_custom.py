"""custom_reward_function.path/.name: loading, kwargs precedence, async, and error messages.

This also pins the signature a user's reward function is called with (STYLE §6).
"""

import asyncio
import textwrap

import pytest

from strive.reward.custom import load_reward_function, run_coroutine

USER_FILE = textwrap.dedent(
    """
    import asyncio
    from dataclasses import dataclass

    @dataclass
    class Seen:
        calls: int = 0

    SEEN = Seen()
    THRESHOLD = 3

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0.0):
        SEEN.calls += 1
        return float(solution_str == ground_truth) + bonus

    def with_details(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return {"score": 1.0, "kwargs": kwargs, "index": extra_info["index"]}

    async def async_score(data_source, solution_str, ground_truth, extra_info=None, delay=0.0):
        await asyncio.sleep(delay)
        return 0.5
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(USER_FILE)
    return path


def test_called_with_the_pinned_keyword_arguments(user_file):
    fn = load_reward_function(str(user_file))
    assert fn(data_source="d", solution_str="42", ground_truth="42", extra_info={"index": 0}) == 1.0


def test_reward_kwargs_are_merged_and_take_precedence(user_file):
    fn = load_reward_function(str(user_file), name="with_details", reward_kwargs={"mode": "strict", "x": 1})
    result = fn(data_source="d", solution_str="a", ground_truth="b", extra_info={"index": 7}, x=2, y=3)
    assert result["kwargs"] == {"mode": "strict", "x": 1, "y": 3}
    assert result["index"] == 7
    bonus = load_reward_function(str(user_file), reward_kwargs={"bonus": 0.5})
    assert bonus(data_source="d", solution_str="1", ground_truth="2", extra_info=None, bonus=9.0) == 0.5


def test_async_function_runs_synchronously_and_exposes_acall(user_file):
    fn = load_reward_function(str(user_file), name="async_score", reward_kwargs={"delay": 0.0})
    assert fn(data_source="d", solution_str="a", ground_truth="b", extra_info=None) == 0.5
    assert asyncio.run(fn.acall(data_source="d", solution_str="a", ground_truth="b", extra_info=None)) == 0.5


def test_async_function_inside_a_running_loop(user_file):
    fn = load_reward_function(str(user_file), name="async_score")

    async def caller():
        return fn(data_source="d", solution_str="a", ground_truth="b", extra_info=None)

    assert asyncio.run(caller()) == 0.5


def test_run_coroutine_without_loop():
    async def seven():
        return 7

    assert run_coroutine(seven()) == 7


def test_tilde_and_repeated_loads_share_the_module(user_file, monkeypatch):
    monkeypatch.setenv("HOME", str(user_file.parent))
    first = load_reward_function("~/my_reward.py")
    second = load_reward_function(str(user_file))
    first(data_source="d", solution_str="1", ground_truth="1", extra_info=None)
    assert first.__wrapped__.__globals__ is second.__wrapped__.__globals__


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_reward_function(str(missing))


def test_missing_function_names_function_file_and_candidates(user_file):
    with pytest.raises(AttributeError) as err:
        load_reward_function(str(user_file), name="score_fn")
    message = str(err.value)
    assert "score_fn" in message and str(user_file) in message
    assert "async_score" in message and "compute_score" in message and "with_details" in message
    assert "asyncio" not in message  # imported modules are not offered as candidates


def test_non_callable_name(user_file):
    with pytest.raises(TypeError, match="THRESHOLD"):
        load_reward_function(str(user_file), name="THRESHOLD")
