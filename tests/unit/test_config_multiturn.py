"""verl's multi-turn keys in the config: what is used, noted, refused, and the data.tool_config_path alias."""

import pytest

from strive.agent.settings import agent_loop_of, call_limits, turn_limits
from strive.config import ConfigError, prepare

MT = "actor_rollout_ref.rollout.multi_turn"


def test_multi_turn_keys_become_the_agent_loops_limits():
    run = prepare([f"{MT}.enable=True", f"{MT}.max_assistant_turns=3", f"{MT}.max_user_turns=2",
                   f"{MT}.max_parallel_calls=2", f"{MT}.max_tool_response_length=64",
                   f"{MT}.tool_response_truncate_side=left", "data.max_response_length=100",
                   "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent"])
    rollout = run.config.actor_rollout_ref.rollout
    turns, calls = turn_limits(rollout), call_limits(rollout)
    assert (turns.response_length, turns.max_assistant_turns, turns.max_user_turns) == (100, 3, 2)
    assert (calls.max_parallel_calls, calls.max_tool_response_length, calls.tool_response_truncate_side) == \
        (2, 64, "left")
    assert agent_loop_of(rollout) == "tool_agent"
    assert not [n for n in run.notes if "multi_turn" in n]


def test_multi_turn_keys_without_enable_are_noted():
    run = prepare([f"{MT}.max_assistant_turns=3", "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent"])
    assert agent_loop_of(run.config.actor_rollout_ref.rollout) is None
    note = next(n for n in run.notes if "max_assistant_turns" in n)
    assert "no effect without actor_rollout_ref.rollout.multi_turn.enable=True" in note and "default_agent_loop" in note


def test_data_tool_config_path_is_the_multi_turn_one(tmp_path):
    run = prepare([f"{MT}.enable=True", "data.tool_config_path=/t.yaml"])
    assert run.config.actor_rollout_ref.rollout.multi_turn.tool_config_path == "/t.yaml"
    with pytest.raises(ConfigError, match="disagree"):
        prepare([f"{MT}.enable=True", "data.tool_config_path=/t.yaml", f"{MT}.tool_config_path=/u.yaml"])


@pytest.mark.parametrize("override, message", [
    ("actor_rollout_ref.rollout.agent.agent_loop_config_path=/loops.yaml", "custom agent loops are not implemented"),
    ("actor_rollout_ref.rollout.agent.custom_async_server.path=/s.py", "custom rollout servers"),
    ("actor_rollout_ref.rollout.agent.threads=3", "agent.threads: unknown key"),
])
def test_agent_settings_strive_lacks_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        prepare([f"{MT}.enable=True", override])


def test_an_unknown_default_loop_is_refused_when_used():
    run = prepare([f"{MT}.enable=True", "actor_rollout_ref.rollout.agent.default_agent_loop=react_agent"])
    with pytest.raises(ValueError, match="react_agent"):
        agent_loop_of(run.config.actor_rollout_ref.rollout)


def test_tensor_parallel_engines_are_refused_for_multi_turn_for_now():
    with pytest.raises(ConfigError, match="tensor_model_parallel_size=2"):
        prepare([f"{MT}.enable=True", "actor_rollout_ref.rollout.name=vllm",
                 "actor_rollout_ref.rollout.tensor_model_parallel_size=2"])


def test_verl_04_async_engine_names_are_read_as_engine_plus_async_mode():
    run = prepare(["actor_rollout_ref.rollout.name=sglang_async"])
    rollout = run.config.actor_rollout_ref.rollout
    assert (rollout.name, rollout.mode) == ("sglang", "async")
    assert any("sglang_async is verl <= 0.4's spelling" in n for n in run.notes)


def test_the_router_is_checked():
    assert prepare([f"{MT}.enable=True", f"{MT}.router=least_loaded"]).config.actor_rollout_ref.rollout.multi_turn \
        .router == "least_loaded"
    with pytest.raises(ConfigError, match="router=random is not one of static, least_loaded"):
        prepare([f"{MT}.enable=True", f"{MT}.router=random"])
