"""verl's agent loops on one rank's engine: `single_turn_agent` and `tool_agent`, one coroutine per trajectory.

Why it exists: a multi-turn rollout alternates the engine (an assistant turn) and the tools (a tool turn) until
the model answers without a tool call or a limit is reached. `AgentRunner.run` does that for all of a rank's
samples at once: each trajectory is a coroutine, the engine is reached through `TurnBatcher` (one batched call
per turn, strive/engines/requests.py), the tools through `ToolSession` (strive/agent/tool_runner.py), and each
trajectory is kept as token ids (`Trajectory`): the engine's ids and log-probs verbatim with mask 1, tool turns
with mask 0.

What it chose, against verl's `ToolAgentLoop` (commit b178a3c):
- the loop names are verl's (`single_turn_agent`, `tool_agent`), picked per sample by the data column
  `agent_name`, else `rollout.agent.default_agent_loop`;
- an assistant turn is decoded only to find tool calls (`multi_turn.format`, strive.agent.tool_parser); the text is never re-encoded;
- a turn without a tool call ends the trajectory (`no_tool_call`); so do the turn and length limits;
- tool errors (bad JSON, an unknown tool, wrong arguments, a tool that raises or times out) are answered to the
  model as the tool's message and counted; they never end a rollout;
- interactions (a simulated user, `interaction_config_path`) are not implemented: refused at start-up.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_loop.py
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from strive.agent.chat_template import MessageEncoder
from strive.agent.tool_parser import parse_tool_calls
from strive.agent.tool_runner import ToolCallLimits, ToolSession
from strive.agent.trajectory import Trajectory, TurnLimits
from strive.engines.base import RolloutEngine, SamplingParams
from strive.engines.requests import TurnBatcher

SINGLE_TURN = "single_turn_agent"
TOOL_AGENT = "tool_agent"
AGENT_LOOPS = (SINGLE_TURN, TOOL_AGENT)


@dataclass(frozen=True)
class AgentRequest:
    """One trajectory to roll out: its prompt ids (chat template applied, tool schemas included), the loop that
    runs it, and the row's `extra_info.tools_kwargs` ({tool name: {"create_kwargs": {...}}})."""

    prompt_ids: list[int]
    agent_name: str = SINGLE_TURN
    tools_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """A finished trajectory and what its tool turns did."""

    trajectory: Trajectory
    tool_calls: int = 0
    tool_errors: int = 0
    dropped_calls: int = 0
    tool_rewards: dict[str, float] = field(default_factory=dict)


def episode_stats(episodes: Sequence[Episode]) -> dict[str, list[float]]:
    """Per-episode numbers the controller turns into `agent/*` metrics (lists of equal length)."""
    return {"num_turns": [float(e.trajectory.num_turns) for e in episodes],
            "assistant_turns": [float(e.trajectory.assistant_turns) for e in episodes],
            "tool_calls": [float(e.tool_calls) for e in episodes],
            "tool_errors": [float(e.tool_errors) for e in episodes],
            "dropped_calls": [float(e.dropped_calls) for e in episodes],
            "truncated": [float(e.trajectory.truncated) for e in episodes]}


class TurnProgress:
    """A progress line for long rollouts (a CPU multi-turn validation pass can take minutes): after a turn's
    engine call, at most every `every_s` seconds, how many turns ran and how many episodes are still open."""

    def __init__(self, episodes: int, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], None] = lambda line: print(line, flush=True)):
        self.episodes, self.every_s, self.clock, self.write = episodes, every_s, clock, write
        self.began = self.last = clock()
        self.turns = 0

    def turn(self, served: int, open_episodes: int) -> None:
        self.turns += 1
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.write(f"[strive] agent rollout: {self.turns} turn(s) in {now - self.began:.0f} s, last one "
                       f"{served} request(s); {open_episodes}/{self.episodes} episodes open")


class AgentRunner:
    """Rolls out `AgentRequest`s on one engine with the tools of `tool_config_path` (see module docstring)."""

    def __init__(self, engine: RolloutEngine, tokenizer: Any, tools: Mapping[str, Any], turn_limits: TurnLimits,
                 call_limits: ToolCallLimits, template_kwargs: Mapping[str, Any] | None = None,
                 call_format: str = "hermes"):
        self.engine, self.tokenizer, self.tools = engine, tokenizer, dict(tools)
        self.call_format = call_format
        self.turn_limits, self.call_limits = turn_limits, call_limits
        schemas = [tool.tool_schema.to_dict() for tool in self.tools.values()]
        self.encoder = MessageEncoder(tokenizer, tools=schemas, template_kwargs=dict(template_kwargs or {}))
        self.loops: dict[str, Callable[[int, AgentRequest, TurnBatcher], Awaitable[Episode]]] = {
            SINGLE_TURN: self._single_turn, TOOL_AGENT: self._tool_agent}

    def run(self, requests: Sequence[AgentRequest], params: SamplingParams) -> list[Episode]:
        """Every request's episode, in request order. `params.max_new_tokens` is ignored: each turn asks for
        what is left of the trajectory's response_length."""
        unknown = sorted({r.agent_name for r in requests} - set(self.loops))
        if unknown:
            raise ValueError(f"agent_name {unknown[0]!r} is not an agent loop strive has; choose one of "
                             f"{', '.join(self.loops)}")
        if not requests:
            return []
        return asyncio.run(self._run_all(list(requests), params))

    async def _run_all(self, requests: list[AgentRequest], params: SamplingParams) -> list[Episode]:
        progress = TurnProgress(len(requests))
        batcher = TurnBatcher(self.engine, params, set(range(len(requests))), on_turn=progress.turn)
        return list(await asyncio.gather(*(self._one(key, r, batcher) for key, r in enumerate(requests))))

    async def _one(self, key: int, request: AgentRequest, batcher: TurnBatcher) -> Episode:
        try:
            return await self.loops[request.agent_name](key, request, batcher)
        finally:
            batcher.finish(key)  # whatever happened, the others stop waiting for this one

    async def _single_turn(self, key: int, request: AgentRequest, batcher: TurnBatcher) -> Episode:
        traj = Trajectory(request.prompt_ids, self.turn_limits)
        out = await batcher.generate(key, traj.input_ids, traj.remaining)
        traj.add_assistant(out.token_ids, out.logprobs, out.finish_reason)
        traj.finish()
        return Episode(traj)

    async def _tool_agent(self, key: int, request: AgentRequest, batcher: TurnBatcher) -> Episode:
        traj = Trajectory(request.prompt_ids, self.turn_limits)
        episode = Episode(traj)
        async with ToolSession(self.tools, request.tools_kwargs, self.call_limits) as session:
            while True:
                out = await batcher.generate(key, traj.input_ids, traj.remaining)
                traj.add_assistant(out.token_ids, out.logprobs, out.finish_reason)
                if traj.done:
                    break
                text = self.tokenizer.decode(out.token_ids, skip_special_tokens=False)
                calls = parse_tool_calls(text, self.call_format, self.tools).calls
                if not calls:
                    traj.finish()
                    break
                turn = await session.run(calls)
                episode.tool_calls += turn.tool_calls
                episode.tool_errors += turn.tool_errors
                episode.dropped_calls += turn.dropped
                if not traj.add_observation(self.encoder.observation_ids(turn.messages, after=out.token_ids)):
                    break
            episode.tool_rewards = await session.rewards()
        return episode
