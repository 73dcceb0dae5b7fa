"""Token ids for the messages between generations, and a start-up check that a chat template only appends.

Why it exists: a multi-turn trajectory (`strive.agent.trajectory`) is built by appending: the engine's ids for an
assistant turn, then ids for the tool/user messages that follow. Those ids must be what the chat template would
have written there, and that is only well defined when rendering a longer conversation never changes the tokens
of a shorter one. `MessageEncoder` computes the appended ids; `check_chat_template` tells whether a tokenizer's
template appends, and if not, which message breaks it.

What it chose, against verl (commit b178a3c):

- **The delta.** verl's SGLang rollout (`verl/workers/rollout/schemas.py`) renders a fixed base conversation
  (`BASE_CHAT_HISTORY`: one system and one user message) with and without the new messages and keeps the
  suffix ids; its agent loop (`tool_agent_loop.py`) renders the new messages alone and cuts the ids of the
  template's default system prompt. strive does the first, in one render: ids(base + new, generation prompt)
  after ids(base), refusing when the latter is not a token prefix of the former. The base holds no assistant
  turn, so templates that rewrite assistant turns (Qwen3 drops earlier `<think>`) leave it alone.
- **The glue after an assistant turn.** ChatML closes an assistant turn with `<|im_end|>\\n`; the engine stops
  at `<|im_end|>`, so the `\\n` is in no generated id. Both verl paths drop it (the next message starts right
  after `<|im_end|>`, unlike a normal rendering, which is why verl's end-of-rollout comparison has an
  `ignore_strippable` mode). strive finds what the template writes after an assistant message's content (it
  renders a probe message) and appends the part the engine did not generate, mask 0. The trajectory then equals
  the template's rendering of the whole conversation, token for token, when the template appends.
- **Rewriting templates** are refused by `require_appending` with the message where the prefix breaks. verl
  accepts them silently in its agent loop (and warns at the end of a rollout in its SGLang one: tokens kept
  differ from a re-rendering); `require_appending(..., allow_rewrites=True)` does the same here: the trajectory
  keeps the engine's tokens, so the model sees its earlier reasoning during rollout and training, but not at
  inference under the same template.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_chat_template.py
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

logger = logging.getLogger(__name__)

# verl's BASE_CHAT_HISTORY: the fixed conversation new messages are rendered after.
BASE_MESSAGES: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "I am a user."},
)
_PROBE = "strive7probe"  # an assistant message's content, to find what the template writes after it

# A conversation with every kind of turn an agent loop appends: assistant text with reasoning, a tool call, a
# tool response, a follow-up user message. Reasoning in earlier turns catches templates that strip it.
REPRESENTATIVE_CONVERSATION: tuple[dict[str, Any], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>I should use the tool.</think>Let me check.",
     "tool_calls": [{"type": "function", "function": {"name": "calc_gsm8k_reward", "arguments": {"answer": "4"}}}]},
    {"role": "tool", "content": "Current parsed answer='4' reward=1.0"},
    {"role": "assistant", "content": "<think>The tool agrees.</think>The answer is 4."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "<think>Easy.</think>6."},
)


class ChatTemplateError(ValueError):
    """A chat template cannot give the ids an appended trajectory needs."""


@dataclass
class MessageEncoder:
    """Renders messages with a tokenizer's chat template into ids: the prompt once, then each tool/user turn
    as a delta. `tools` are the tool schemas (`ToolSchema.to_dict()`), `template_kwargs` verl's
    `data.apply_chat_template_kwargs` (e.g. `{"enable_thinking": False}`)."""

    tokenizer: Any
    tools: list[dict] | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tools=self.tools or None, add_generation_prompt=add_generation_prompt,
            tokenize=False, **self.template_kwargs)

    def ids(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> list[int]:
        """Rendered, then encoded without special tokens added (as strive's RL dataset encodes prompts)."""
        return list(self.tokenizer.encode(self.render(messages, add_generation_prompt), add_special_tokens=False))

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The trajectory's start: the initial messages and the generation prompt. (P,)"""
        return self.ids(messages, add_generation_prompt=True)

    @cached_property
    def closing_ids(self) -> list[int]:
        """What the template writes after an assistant message's content, e.g. ChatML's `<|im_end|>\\n`. (C,)"""
        text = self.render([*BASE_MESSAGES, {"role": "assistant", "content": _PROBE}], add_generation_prompt=False)
        at = text.rfind(_PROBE)
        if at < 0:
            raise ChatTemplateError("the chat template does not write an assistant message's content verbatim "
                                    f"(rendering the content {_PROBE!r} lost it)")
        return list(self.tokenizer.encode(text[at + len(_PROBE):], add_special_tokens=False))

    @cached_property
    def _base_ids(self) -> list[int]:
        return self.ids(BASE_MESSAGES, add_generation_prompt=False)

    def observation_ids(self, messages: Sequence[Mapping[str, Any]], after: Sequence[int]) -> list[int]:
        """Ids to append after an assistant turn whose last ids are `after` (the engine's output): the rest of
        the template's closing of that turn, then `messages` (tool/user), then the next generation prompt. (N,)"""
        if not messages:
            raise ValueError("observation_ids needs at least one message")
        full = self.ids([*BASE_MESSAGES, *messages], add_generation_prompt=True)
        base = self._base_ids
        if full[:len(base)] != base:
            roles = ", ".join(str(m.get("role")) for m in messages)
            raise ChatTemplateError(f"appending ({roles}) messages changes the tokens of the conversation before "
                                    "them, so their ids cannot be computed as a suffix")
        closing = self.closing_ids
        return closing[_overlap(after, closing):] + full[len(base):]


def _overlap(ids: Sequence[int], closing: Sequence[int]) -> int:
    """Largest k such that `ids` ends with the first k ids of `closing` (the part the engine generated)."""
    for k in range(min(len(ids), len(closing)), 0, -1):
        if list(ids[len(ids) - k:]) == list(closing[:k]):
            return k
    return 0


@dataclass(frozen=True)
class TemplateCheck:
    """`check_chat_template`'s answer: `ok`, or the message where the check failed and why."""

    ok: bool
    message_index: int | None = None
    reason: str = ""


def check_chat_template(encoder: MessageEncoder,
                        messages: Sequence[Mapping[str, Any]] = REPRESENTATIVE_CONVERSATION) -> TemplateCheck:
    """Whether rendering `messages[:k]` (with the generation prompt when message k is the assistant's) is a token
    prefix of rendering `messages[:k+1]`, for every k: the property an appended trajectory relies on. Then whether
    `MessageEncoder.observation_ids` gives the template's own ids between assistant turns."""
    ends = [len(encoder.ids(messages[:1], add_generation_prompt=False))]  # token end of each message so far
    for k in range(1, len(messages)):
        prev = encoder.ids(messages[:k], add_generation_prompt=messages[k]["role"] == "assistant")
        curr = encoder.ids(messages[:k + 1], add_generation_prompt=False)
        at = _first_difference(prev, curr)
        if at is not None:
            return TemplateCheck(False, k, _explain(encoder, messages, k, at, prev, curr, ends))
        ends.append(len(curr))
    return _check_observations(encoder, messages)


def _check_observations(encoder: MessageEncoder, messages: Sequence[Mapping[str, Any]]) -> TemplateCheck:
    """Whether `observation_ids` after each assistant message (the engine having stopped on the closing's first
    id) gives what the template renders between that message's content and the next assistant turn."""
    closing = encoder.closing_ids
    for k in range(len(messages) - 1):
        if messages[k]["role"] != "assistant" or messages[k + 1]["role"] == "assistant":
            continue
        j = next((i for i in range(k + 1, len(messages)) if messages[i]["role"] == "assistant"), len(messages))
        before = encoder.ids(messages[:k + 1], add_generation_prompt=False)
        expected = encoder.ids(messages[:j], add_generation_prompt=True)[len(before) - len(closing) + 1:]
        got = encoder.observation_ids(messages[k + 1:j], after=closing[:1])
        if got != expected:
            decode = encoder.tokenizer.decode
            return TemplateCheck(False, k + 1, (
                f"the ids appended after message {k} (assistant) for messages {k + 1}..{j - 1} are not what the "
                f"template renders there: {decode(got)!r} instead of {decode(expected)!r}"))
    return TemplateCheck(True)


def _first_difference(prev: Sequence[int], curr: Sequence[int]) -> int | None:
    """Index of the first token of `prev` that `curr` does not repeat; None when `prev` is a prefix of `curr`."""
    for i, token in enumerate(prev):
        if i >= len(curr) or curr[i] != token:
            return i
    return None


def _explain(encoder: MessageEncoder, messages: Sequence[Mapping[str, Any]], k: int, at: int,
             prev: Sequence[int], curr: Sequence[int], ends: Sequence[int]) -> str:
    owner = next((j for j, end in enumerate(ends) if at < end), None)
    if owner is None:
        what, where = "the generation prompt is not how it starts an assistant message", "in the generation prompt"
    else:
        what, where = "the chat template rewrites earlier turns", f"inside message {owner} ({messages[owner]['role']})"
    decode = encoder.tokenizer.decode
    before = decode(list(prev[max(0, at - 8):at + 24]))
    after = decode(list(curr[max(0, at - 8):at + 24]))
    return (f"{what}: adding message {k} ({messages[k]['role']}) changes token {at}, {where}: {before!r} became "
            f"{after!r}. A trajectory built turn by turn would differ from the template's rendering of the whole "
            "conversation.")


def require_appending(encoder: MessageEncoder, allow_rewrites: bool = False) -> TemplateCheck:
    """The start-up check: raise `ChatTemplateError` when the template rewrites earlier turns, or, with
    `allow_rewrites` (verl's behaviour), log a warning and go on. Also fails early when the ids of an
    observation cannot be computed."""
    result = check_chat_template(encoder)
    if not result.ok:
        if not allow_rewrites:
            raise ChatTemplateError(result.reason)
        logger.warning("%s Going on (allow_rewrites): trajectories keep the engine's tokens.", result.reason)
    encoder.observation_ids([{"role": "tool", "content": "probe"}], after=encoder.closing_ids[:1])
    return result
