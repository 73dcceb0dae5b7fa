"""Find tool calls in model text (hermes format) and check them against the tools' schemas.

Why it exists: with `multi_turn.format: hermes` (verl's default, Qwen's chat template) a model calls a tool by
writing `<tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": "72"}}</tool_call>`. Models often get
that wrong, and a wrong call must become a message the model can learn from, never an exception that ends a run.

What it chose, against verl's `HermesToolParser` (which drops a call it cannot decode and logs it):

- every `<tool_call>...</tool_call>` block yields one item in order: a `ToolCall`, or a `ToolCallError` whose
  `message` is the tool message the agent loop sends back (`kind` is `invalid_json` | `invalid_call` |
  `unknown_tool` | `invalid_arguments`, for metrics);
- `arguments` may be an object or a string holding a JSON object (some models quote it); missing means `{}`;
- `check_call` checks the name against the tools and the arguments against the schema: required names present,
  and the simple JSON types (string, number, integer, boolean, array, object, null; `true` is not a number, `3.0`
  is an integer) and `enum`. Extra arguments pass, as JSON schema allows by default. verl checks none of this,
  so e.g. `{"answer": 72}` to `calc_gsm8k_reward` (whose schema says string) is scored by verl but answered here
  with an error naming the field; pass `check_arguments=False` to the runner for verl's behaviour;
- an unclosed `<tool_call>` (generation cut off) is not a call, as in verl.

`multi_turn.format: hermes_or_json` (strive's own) also takes a call the model wrote without the tags: a JSON
object `{"name": <a declared tool>, "arguments": {...}}`, bare or in a ``` fence, found only when the text has no
`<tool_call>` block. Small models do this: Qwen2.5-Coder-0.5B-Instruct, shown the hermes instructions by its own
chat template, wrote a fenced JSON call in most of 32 sampled GSM8K answers and a `<tool_call>` tag in none
(bench/agent_tool_call_format.py). Objects naming no declared tool are ordinary text, never calls.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_tool_parser.py
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from strive.agent.tools.base import FunctionSchema, ToolSchema

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
FORMATS = ("hermes", "hermes_or_json")


@dataclass(frozen=True)
class ToolCall:
    """One well-formed call: the tool's name and its decoded arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCallError:
    """A call that cannot run. `message` is what the model is told; `name` is the tool it meant, if known."""

    kind: str
    message: str
    name: str | None = None
    raw: str = ""


@dataclass(frozen=True)
class ParsedText:
    """The text without its tool-call blocks, and one entry per block, in order."""

    content: str
    calls: list[ToolCall | ToolCallError]


def parse_hermes(text: str) -> ParsedText:
    """Every `<tool_call>` block of `text` as a call or an error (see the module docstring)."""
    calls = [_parse_block(m.group(1)) for m in TOOL_CALL_RE.finditer(text)]
    return ParsedText(TOOL_CALL_RE.sub("", text), calls)


def parse_tool_calls(text: str, fmt: str, tool_names: Collection[str]) -> ParsedText:
    """The calls of `text` in format `fmt` (one of FORMATS; see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"tool-call format {fmt!r} is not one strive parses; choose one of {', '.join(FORMATS)}")
    parsed = parse_hermes(text)
    if parsed.calls or fmt == "hermes":
        return parsed
    return parse_bare_json(text, tool_names)


def parse_bare_json(text: str, tool_names: Collection[str]) -> ParsedText:
    """JSON objects in `text` whose "name" is one of `tool_names`, each parsed like a hermes block."""
    decoder, calls, spans, pos = json.JSONDecoder(), [], [], 0
    while (start := text.find("{", pos)) >= 0:
        try:
            data, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(data, dict) and data.get("name") in tool_names:
            calls.append(_parse_block(text[start:end]))
            spans.append((start, end))
        pos = end
    content = "".join(text[a:b] for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [len(text)]))
    return ParsedText(content, calls)


def _parse_block(block: str) -> ToolCall | ToolCallError:
    raw = block.strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        return ToolCallError("invalid_json", f"Error: the tool call is not valid JSON ({e.msg} at char {e.pos}).",
                             raw=raw)
    if not isinstance(data, dict):
        return ToolCallError("invalid_call", 'Error: a tool call must be a JSON object {"name": ..., "arguments": '
                                             "{...}}.", raw=raw)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return ToolCallError("invalid_call", 'Error: the tool call has no "name" string.', raw=raw)
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return ToolCallError("invalid_json", f"Error: the arguments of {name} are not valid JSON ({e.msg}).",
                                 name, raw)
    if not isinstance(arguments, dict):
        return ToolCallError("invalid_call", f'Error: the "arguments" of {name} must be a JSON object, got '
                                             f"{type(arguments).__name__}.", name, raw)
    return ToolCall(name, arguments)


def check_call(call: ToolCall | ToolCallError, schemas: Mapping[str, ToolSchema],
               check_arguments: bool = True) -> ToolCallError | None:
    """Why `call` cannot run against these tools, or None if it can (an error entry is returned as is)."""
    if isinstance(call, ToolCallError):
        return call
    if call.name not in schemas:
        names = ", ".join(sorted(schemas)) or "none"
        return ToolCallError("unknown_tool", f"Error: there is no tool named {call.name!r}. Available tools: {names}.",
                             call.name)
    if not check_arguments:
        return None
    problems = argument_problems(call.arguments, schemas[call.name].function)
    if not problems:
        return None
    return ToolCallError("invalid_arguments", f"Error: invalid arguments for {call.name}: {'; '.join(problems)}.",
                         call.name)


def argument_problems(arguments: Mapping[str, Any], function: FunctionSchema) -> list[str]:
    """What is wrong with `arguments` for `function`: missing required names, wrong simple types, values off enum."""
    problems = [f"missing required argument {name!r}" for name in function.required if name not in arguments]
    for name, value in arguments.items():
        prop = function.properties.get(name)
        if prop is None:
            continue
        if not any(matches_type(value, t) for t in prop.type):
            expected = " or ".join(prop.type)
            problems.append(f"{name!r} must be {expected}, got {json_type_name(value)} {json.dumps(value)[:40]}")
        elif prop.enum is not None and value not in prop.enum:
            problems.append(f"{name!r} must be one of {list(prop.enum)}, got {json.dumps(value)[:40]}")
    return problems


def matches_type(value: Any, json_type: str) -> bool:
    """Whether a decoded JSON value has the JSON-schema type `json_type`."""
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "integer":
        is_whole_float = isinstance(value, float) and value.is_integer()
        return not isinstance(value, bool) and (isinstance(value, int) or is_whole_float)
    if json_type == "number":
        return not isinstance(value, bool) and isinstance(value, (int, float))
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "object":
        return isinstance(value, dict)
    return json_type == "null" and value is None


def json_type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if matches_type(value, name) and not (name == "integer" and isinstance(value, float)):
            return name
    return type(value).__name__
