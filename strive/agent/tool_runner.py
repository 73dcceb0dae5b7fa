"""Run one assistant turn's parsed tool calls and turn the results into tool messages.

Why it exists: between two generations an agent loop must execute what the model asked for, with verl's limits
(`rollout.multi_turn.max_parallel_calls`, `max_tool_response_length`, `tool_response_truncate_side`), and no
tool failure may end a rollout. `ToolSession` is that step for one trajectory; the agent loop
(strive/agent/loop.py) drives generation around it (docs/multiturn.md).

What it chose, against verl's `ToolAgentLoop._call_tool` (commit b178a3c):

- one tool instance per trajectory and tool, created on first use with the row's
  `tools_kwargs[<tool>].create_kwargs` and released by `close()`; verl creates and releases one around every call,
  which throws away tool state between turns (see `strive.agent.tools.gsm8k`). `run_tool_calls` is the one-shot
  form (its own session, closed at once);
- only the first `max_parallel_calls` entries of a turn run, concurrently, as in verl; the rest are counted as
  `dropped` and get no message. A parse/check error counts as an entry and answers with its error text;
- a tool that raises answers "Error when executing tool: ..." (verl's words); one that runs past
  `call_timeout_s` is cancelled and answers a timeout error (verl has no per-call timeout);
- every tool message is cut to `max_tool_response_length` characters with verl's markers: `left` keeps the
  start, `right` keeps the end, `middle` keeps both ends; verl cuts only successful responses, strive also error
  texts (an exception message can be long), and a side other than these three is an error here, not `middle`;
- results in verl's newer shapes are accepted: `create` returning `(instance_id, response)`, `execute` returning
  an object with `.text` or a `{"text": ...}` dict, a `None` step reward (not recorded) or `None` metrics.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_tool_runner.py
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strive.agent.tool_parser import ToolCall, ToolCallError, check_call
from strive.agent.tools.base import BaseTool

logger = logging.getLogger(__name__)

TRUNCATE_SIDES = ("left", "right", "middle")


@dataclass(frozen=True)
class ToolCallLimits:
    """verl's `rollout.multi_turn` limits (same defaults), plus strive's per-call timeout and argument check."""

    max_parallel_calls: int = 1
    max_tool_response_length: int = 256
    tool_response_truncate_side: str = "middle"
    call_timeout_s: float | None = 60.0
    check_arguments: bool = True

    def __post_init__(self) -> None:
        if self.max_parallel_calls < 1:
            raise ValueError(f"max_parallel_calls must be at least 1, got {self.max_parallel_calls}")
        if self.max_tool_response_length < 1:
            raise ValueError(f"max_tool_response_length must be at least 1, got {self.max_tool_response_length}")
        if self.tool_response_truncate_side not in TRUNCATE_SIDES:
            raise ValueError(f"tool_response_truncate_side must be one of {TRUNCATE_SIDES}, "
                             f"got {self.tool_response_truncate_side!r}")
        if self.call_timeout_s is not None and self.call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be positive or None, got {self.call_timeout_s}")


def truncate_response(text: str, max_length: int, side: str = "middle") -> str:
    """`text` cut to `max_length` characters (plus verl's marker) keeping its start, end, or both ends."""
    if len(text) <= max_length:
        return text
    if side == "left":
        return text[:max_length] + "...(truncated)"
    if side == "right":
        return "(truncated)..." + text[-max_length:]
    keep = max_length // 2  # at each end, as verl (whose `text[-0:]` would keep everything when max_length is 1)
    return text[:keep] + "...(truncated)..." + (text[-keep:] if keep else "")


@dataclass
class ToolTurn:
    """What one turn of calls produced: a tool message per entry run, and counters for metrics."""

    messages: list[dict[str, str]] = field(default_factory=list)
    step_rewards: list[float] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0
    tool_errors: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class _Outcome:
    text: str
    reward: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: bool = False


class ToolSession:
    """The tool instances of one trajectory. Use `async with ToolSession(...) as s: await s.run(calls)`."""

    def __init__(self, tools: Mapping[str, BaseTool], tools_kwargs: Mapping[str, Any] | None = None,
                 limits: ToolCallLimits = ToolCallLimits()):
        self.tools = tools
        self.tools_kwargs = dict(tools_kwargs or {})
        self.limits = limits
        self.instances: dict[str, str] = {}
        self._schemas = {name: tool.tool_schema for name, tool in tools.items()}

    async def __aenter__(self) -> ToolSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, calls: Sequence[ToolCall | ToolCallError], **execute_kwargs: Any) -> ToolTurn:
        """Run the first `max_parallel_calls` entries concurrently; one tool message each, in call order."""
        todo = list(calls[: self.limits.max_parallel_calls])
        checked = [check_call(c, self._schemas, self.limits.check_arguments) or c for c in todo]
        create_errors = await self._create_instances([c for c in checked if isinstance(c, ToolCall)])
        outcomes = await asyncio.gather(*(self._one(c, create_errors, execute_kwargs) for c in checked))
        turn = ToolTurn(tool_calls=len(todo), dropped=len(calls) - len(todo))
        for outcome in outcomes:
            text = truncate_response(outcome.text, self.limits.max_tool_response_length,
                                     self.limits.tool_response_truncate_side)
            turn.messages.append({"role": "tool", "content": text})
            turn.metrics.append(outcome.metrics)
            turn.tool_errors += outcome.error
            if outcome.reward is not None:
                turn.step_rewards.append(outcome.reward)
        return turn

    async def _create_instances(self, calls: list[ToolCall]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for name in dict.fromkeys(c.name for c in calls):
            if name in self.instances:
                continue
            create_kwargs = (self.tools_kwargs.get(name) or {}).get("create_kwargs") or {}
            try:
                created = await self.tools[name].create(create_kwargs=dict(create_kwargs))
                self.instances[name] = created[0] if isinstance(created, tuple) else created
            except Exception as e:  # noqa: BLE001 - any tool failure becomes a message, never a dead rollout
                errors[name] = f"Error when executing tool: {e}"
        return errors

    async def _one(self, call: ToolCall | ToolCallError, create_errors: dict[str, str],
                   execute_kwargs: dict[str, Any]) -> _Outcome:
        if isinstance(call, ToolCallError):
            return _Outcome(call.message, error=True, metrics={"error": call.kind})
        if call.name in create_errors:
            return _Outcome(create_errors[call.name], error=True, metrics={"error": "tool_error"})
        tool = self.tools[call.name]
        try:
            result = await asyncio.wait_for(tool.execute(self.instances[call.name], call.arguments, **execute_kwargs),
                                            self.limits.call_timeout_s)
        except asyncio.TimeoutError:
            return _Outcome(f"Error: tool {call.name} timed out after {self.limits.call_timeout_s:g} s.", error=True,
                            metrics={"error": "timeout"})
        except Exception as e:  # noqa: BLE001 - any tool failure becomes a message, never a dead rollout
            return _Outcome(f"Error when executing tool: {e}", error=True, metrics={"error": "tool_error"})
        return _normalize(call.name, result)

    async def rewards(self) -> dict[str, float]:
        """`calc_reward` of every instance this trajectory created, by tool name."""
        return {name: float(await self.tools[name].calc_reward(iid)) for name, iid in self.instances.items()}

    async def close(self) -> None:
        """Release every instance (a failing release is logged and skipped: the trajectory is over)."""
        instances, self.instances = self.instances, {}
        for name, instance_id in instances.items():
            try:
                await self.tools[name].release(instance_id)
            except Exception as e:  # noqa: BLE001 - one bad tool must not keep the others' instances alive
                logger.warning("releasing %s instance %s failed: %s", name, instance_id, e)


def _normalize(name: str, result: Any) -> _Outcome:
    if not isinstance(result, tuple) or len(result) != 3:
        return _Outcome(f"Error when executing tool: {name} returned {type(result).__name__}, expected "
                        "(text, reward, metrics)", error=True, metrics={"error": "tool_error"})
    response, reward, metrics = result
    if isinstance(response, Mapping):
        text = response.get("text")
    else:
        text = getattr(response, "text", response)
    try:
        reward = None if reward is None else float(reward)
    except (TypeError, ValueError):
        return _Outcome(f"Error when executing tool: {name} returned step reward {reward!r}, not a number",
                        error=True, metrics={"error": "tool_error"})
    return _Outcome("" if text is None else str(text), reward, dict(metrics or {}))


async def run_tool_calls(calls: Sequence[ToolCall | ToolCallError], tools: Mapping[str, BaseTool],
                         tools_kwargs: Mapping[str, Any] | None = None,
                         limits: ToolCallLimits = ToolCallLimits(), **execute_kwargs: Any) -> ToolTurn:
    """One turn in a session of its own (instances created, used once, released)."""
    async with ToolSession(tools, tools_kwargs, limits) as session:
        return await session.run(calls, **execute_kwargs)
