"""From the config to an agent loop: verl's `rollout.multi_turn.*` keys as typed limits, the tools, the checks.

Why it exists: the driver checks everything about a multi-turn run before Ray starts (the tool file loads, the
chat template only appends, the loop names exist) and each rollout rank builds the same `AgentRunner` from the
same config. Both go through these functions, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any, Optional

from strive.agent.loop import AGENT_LOOPS, SINGLE_TURN, AgentRunner
from strive.agent.tool_runner import ToolCallLimits
from strive.agent.trajectory import TurnLimits


def multi_turn_enabled(rollout) -> bool:
    return bool(rollout.multi_turn.enable)


def agent_loop_of(rollout) -> Optional[str]:
    """The default agent loop when multi-turn rollouts are on (phases.generate's `agent_loop`), else None."""
    return default_agent_loop(rollout) if multi_turn_enabled(rollout) else None


def default_agent_loop(rollout) -> str:
    """`rollout.agent.default_agent_loop` (verl's default `single_turn_agent`), checked."""
    name = (rollout.agent or {}).get("default_agent_loop") or SINGLE_TURN
    if name not in AGENT_LOOPS:
        raise ValueError(f"actor_rollout_ref.rollout.agent.default_agent_loop={name!r}: strive has the agent loops "
                         f"{', '.join(AGENT_LOOPS)}")
    return name


def turn_limits(rollout) -> TurnLimits:
    mt = rollout.multi_turn
    return TurnLimits(rollout.response_length, max_assistant_turns=mt.max_assistant_turns,
                      max_user_turns=mt.max_user_turns)


def call_limits(rollout) -> ToolCallLimits:
    mt = rollout.multi_turn
    return ToolCallLimits(max_parallel_calls=mt.max_parallel_calls,
                          max_tool_response_length=mt.max_tool_response_length,
                          tool_response_truncate_side=mt.tool_response_truncate_side)


def load_agent_tools(rollout) -> dict[str, Any]:
    """The tools of `multi_turn.tool_config_path` by name ({} without one)."""
    path = rollout.multi_turn.tool_config_path
    if not path:
        return {}
    from strive.agent.tools.registry import load_tools

    return load_tools(path)


def tool_schemas(rollout) -> Optional[list[dict]]:
    """The tool schemas the prompts are rendered with (the chat template's `tools=`), or None."""
    if not multi_turn_enabled(rollout):
        return None
    tools = load_agent_tools(rollout)
    return [tool.tool_schema.to_dict() for tool in tools.values()] or None


def check_agent_setup(rollout, tokenizer, template_kwargs: dict) -> str:
    """Start-up checks of a multi-turn run, before Ray: limits, tools, loop name, and that the chat template
    only appends (strive.agent.chat_template). Returns a one-line summary for the start-up report."""
    from strive.agent.chat_template import MessageEncoder, require_appending

    turns, calls = turn_limits(rollout), call_limits(rollout)
    loop = default_agent_loop(rollout)
    tools = load_agent_tools(rollout)
    encoder = MessageEncoder(tokenizer, tools=[t.tool_schema.to_dict() for t in tools.values()] or None,
                             template_kwargs=template_kwargs)
    require_appending(encoder)
    return (f"multi-turn rollouts: default loop {loop}, tools [{', '.join(tools) or 'none'}], "
            f"max_assistant_turns={turns.max_assistant_turns}, max_user_turns={turns.max_user_turns}, "
            f"max_parallel_calls={calls.max_parallel_calls}, "
            f"max_tool_response_length={calls.max_tool_response_length} ({calls.tool_response_truncate_side}), "
            f"format={rollout.multi_turn.format}")


def build_agent_runner(rollout, engine, tokenizer, template_kwargs: dict) -> AgentRunner:
    """The rank's agent loop over its engine (each rank loads its own tool instances)."""
    return AgentRunner(engine, tokenizer, load_agent_tools(rollout), turn_limits(rollout), call_limits(rollout),
                       template_kwargs, call_format=rollout.multi_turn.format)
