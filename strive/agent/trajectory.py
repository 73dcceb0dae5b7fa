"""One multi-turn trajectory as token ids: what the engine generated (trained) and what was put between (not).

Why it exists: a multi-turn rollout is trained on the engine's own tokens. Decoding an assistant turn to text and
re-tokenizing it (or re-rendering the whole chat at the end) can give other ids than the ones sampled, and the
log-probs then belong to a sequence nobody generated. `Trajectory` never does that: it is token in, token out.
The prompt is rendered once; each assistant turn appends the engine's ids and log-probs verbatim (mask 1); each
tool or user turn appends the ids `strive.agent.chat_template.MessageEncoder` computes for those messages plus
the next generation prompt (mask 0, log-prob 0). It holds no tokenizer and imports nothing heavy.

What it chose, against verl's `ToolAgentLoop` (commit b178a3c):

- the same bookkeeping and limits: after an assistant turn the trajectory stops when the response is full
  (`response_length`), `max_assistant_turns` or `max_user_turns` is reached (0/None: no limit); a tool/user turn
  that would fill the response is not appended (the trajectory then ends on the assistant turn). `num_turns`
  counts the prompt as one turn, as verl does;
- unlike verl, a turn that does not fit is cut at `response_length` here (verl appends all and slices at the end:
  same ids, but strive also flags it: `truncated`), and the reason the trajectory stopped is kept (`stop_reason`).

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_trajectory.py
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Why a trajectory stopped (`Trajectory.stop_reason`); None while it may go on.
RESPONSE_LENGTH = "response_length"  # the response is full (the last turn may be cut: see `truncated`)
MAX_ASSISTANT_TURNS = "max_assistant_turns"
MAX_USER_TURNS = "max_user_turns"
ENGINE_LENGTH = "length"  # the engine stopped a turn at its own max_tokens before the response was full
NO_TOOL_CALL = "no_tool_call"  # the agent loop's usual end: an assistant turn without calls (`finish`)


@dataclass(frozen=True)
class TurnLimits:
    """verl's `rollout.response_length` and `rollout.multi_turn.max_{assistant,user}_turns` (None/0: no limit)."""

    response_length: int
    max_assistant_turns: int | None = None
    max_user_turns: int | None = None

    def __post_init__(self) -> None:
        if self.response_length < 1:
            raise ValueError(f"response_length must be at least 1, got {self.response_length}")
        for name in ("max_assistant_turns", "max_user_turns"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (no limit), got {value}")


@dataclass
class Trajectory:
    """Token ids of one prompt and its multi-turn response. P = prompt tokens, R = response tokens (R <=
    response_length). `response_mask[i]` is 1 where `response_ids[i]` was sampled by the engine (trained), 0 on
    tool/user/template tokens; `response_logprobs[i]` is the engine's log-prob there, 0.0 where the mask is 0."""

    prompt_ids: list[int]  # (P,)
    limits: TurnLimits
    response_ids: list[int] = field(default_factory=list)  # (R,)
    response_mask: list[int] = field(default_factory=list)  # (R,)
    response_logprobs: list[float] = field(default_factory=list)  # (R,)
    assistant_turns: int = 0
    user_turns: int = 0
    truncated: bool = False
    """True when an assistant turn was cut: by `response_length` here, or by the engine's max_tokens."""
    stop_reason: str | None = None
    has_logprobs: bool | None = None
    """None until the first assistant turn; then whether turns come with log-probs (all or none must)."""

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("a trajectory needs a non-empty prompt")
        self.prompt_ids = list(self.prompt_ids)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def num_turns(self) -> int:
        """verl's count: the prompt, plus every assistant and tool/user turn."""
        return 1 + self.assistant_turns + self.user_turns

    @property
    def remaining(self) -> int:
        """Response tokens left: the `max_tokens` to ask of the engine for the next assistant turn."""
        return self.limits.response_length - len(self.response_ids)

    @property
    def input_ids(self) -> list[int]:
        """Prompt and response so far: what the engine is given for the next turn. (P + R,)"""
        return self.prompt_ids + self.response_ids

    def add_assistant(self, ids: Sequence[int], logprobs: Sequence[float] | None = None,
                      finish_reason: str = "stop") -> None:
        """Append one generated turn verbatim (mask 1). `finish_reason` is the engine's ("length": cut at its
        max_tokens). Then stop if the response is full or a turn limit is reached."""
        self._check_open("an assistant turn")
        if self.response_mask and self.response_mask[-1] == 1:
            raise ValueError("two assistant turns in a row: add the tool/user turn between them first")
        if logprobs is not None and len(logprobs) != len(ids):
            raise ValueError(f"assistant turn has {len(ids)} ids but {len(logprobs)} log-probs")
        if self.has_logprobs is not None and self.has_logprobs != (logprobs is not None):
            raise ValueError("every assistant turn must come with log-probs, or none")
        self.has_logprobs = logprobs is not None
        keep = min(len(ids), self.remaining)
        self.response_ids += list(ids[:keep])
        self.response_mask += [1] * keep
        self.response_logprobs += [float(x) for x in logprobs[:keep]] if logprobs is not None else [0.0] * keep
        self.assistant_turns += 1
        self.truncated = keep < len(ids) or finish_reason == "length"
        self.stop_reason = self._stop_after_assistant(finish_reason)

    def _stop_after_assistant(self, finish_reason: str) -> str | None:
        limits = self.limits
        if self.remaining <= 0:
            return RESPONSE_LENGTH
        if finish_reason == "length":
            return ENGINE_LENGTH
        if limits.max_assistant_turns and self.assistant_turns >= limits.max_assistant_turns:
            return MAX_ASSISTANT_TURNS
        if limits.max_user_turns and self.user_turns >= limits.max_user_turns:
            return MAX_USER_TURNS
        return None

    def add_observation(self, ids: Sequence[int]) -> bool:
        """Append a tool/user turn (mask 0): the ids of its messages and of the next generation prompt. A turn
        that would leave no room for another generated token is not appended and stops the trajectory (verl
        does the same); returns whether it was appended."""
        self._check_open("a tool/user turn")
        if self.assistant_turns == 0:
            raise ValueError("a tool/user turn must follow an assistant turn (the prompt holds the first messages)")
        if len(self.response_ids) + len(ids) >= self.limits.response_length:
            self.stop_reason = RESPONSE_LENGTH
            return False
        self.response_ids += list(ids)
        self.response_mask += [0] * len(ids)
        self.response_logprobs += [0.0] * len(ids)
        self.user_turns += 1
        return True

    def finish(self, reason: str = NO_TOOL_CALL) -> None:
        """End the trajectory for the loop's own reason (an answer without tool calls, an interaction's end)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def _check_open(self, what: str) -> None:
        if self.stop_reason is not None:
            raise RuntimeError(f"cannot add {what}: the trajectory stopped ({self.stop_reason})")
