"""The hermes parser never raises: each malformed call is a structured error message."""

import pytest

from strive.agent.tool_parser import (
    ToolCall,
    ToolCallError,
    argument_problems,
    check_call,
    json_type_name,
    matches_type,
    parse_hermes,
    parse_tool_calls,
)
from strive.agent.tools.base import ToolSchema

SCHEMAS = {
    "calc": ToolSchema.from_dict({"type": "function", "function": {"name": "calc", "parameters": {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "flag": {"type": "boolean"},
            "xs": {"type": "array"},
            "opts": {"type": "object"},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "maybe": {"type": ["string", "null"]},
        },
        "required": ["answer"],
    }}}),
}


def test_parse_extracts_calls_in_order_and_strips_them_from_content():
    text = ('Let me check.\n<tool_call>\n{"name": "calc", "arguments": {"answer": "72"}}\n</tool_call>'
            '<tool_call>{"name": "calc", "arguments": "{\\"answer\\": \\"7\\"}"}</tool_call> done')
    parsed = parse_hermes(text)
    assert parsed.calls == [ToolCall("calc", {"answer": "72"}), ToolCall("calc", {"answer": "7"})]
    assert parsed.content == "Let me check.\n done"


def test_no_calls_and_unclosed_call():
    assert parse_hermes("plain answer #### 3").calls == []
    parsed = parse_hermes('<tool_call>{"name": "calc", "arguments": {"answer": "1"}}')  # cut off mid-generation
    assert parsed.calls == [] and parsed.content.startswith("<tool_call>")


@pytest.mark.parametrize("block,kind,needle", [
    ('{"name": "calc", "arguments": {"answer": }', "invalid_json", "not valid JSON"),
    ("not json at all", "invalid_json", "not valid JSON"),
    ('["calc"]', "invalid_call", "must be a JSON object"),
    ('{"arguments": {}}', "invalid_call", 'no "name"'),
    ('{"name": "", "arguments": {}}', "invalid_call", 'no "name"'),
    ('{"name": "calc", "arguments": [1, 2]}', "invalid_call", "must be a JSON object, got list"),
    ('{"name": "calc", "arguments": "{bad"}', "invalid_json", "arguments of calc are not valid JSON"),
])
def test_malformed_blocks_become_errors(block, kind, needle):
    (entry,) = parse_hermes(f"<tool_call>{block}</tool_call>").calls
    assert isinstance(entry, ToolCallError) and entry.kind == kind and needle in entry.message
    assert check_call(entry, SCHEMAS) is entry


def test_missing_arguments_mean_empty_and_fail_required():
    (call,) = parse_hermes('<tool_call>{"name": "calc"}</tool_call>').calls
    assert call == ToolCall("calc", {})
    error = check_call(call, SCHEMAS)
    assert error.kind == "invalid_arguments" and "missing required argument 'answer'" in error.message


def test_unknown_tool_lists_the_available_ones():
    error = check_call(ToolCall("calculator", {}), SCHEMAS)
    assert error.kind == "unknown_tool" and error.name == "calculator"
    assert error.message == "Error: there is no tool named 'calculator'. Available tools: calc."


@pytest.mark.parametrize("args,needle", [
    ({"answer": 72}, "'answer' must be string, got integer 72"),
    ({"answer": "1", "n": 1.5}, "'n' must be integer, got number 1.5"),
    ({"answer": "1", "n": True}, "'n' must be integer, got boolean true"),
    ({"answer": "1", "x": "3"}, "'x' must be number, got string"),
    ({"answer": "1", "flag": 1}, "'flag' must be boolean, got integer 1"),
    ({"answer": "1", "xs": {"a": 1}}, "'xs' must be array, got object"),
    ({"answer": "1", "opts": [1]}, "'opts' must be object, got array"),
    ({"answer": "1", "mode": "medium"}, "'mode' must be one of ['fast', 'slow']"),
    ({"answer": None}, "'answer' must be string, got null"),
])
def test_wrong_types_are_named(args, needle):
    error = check_call(ToolCall("calc", args), SCHEMAS)
    assert error is not None and error.kind == "invalid_arguments" and needle in error.message, error


def test_valid_arguments_pass_and_checking_can_be_turned_off():
    ok = {"answer": "1", "n": 3.0, "x": 2, "flag": False, "xs": [], "opts": {}, "mode": "fast", "maybe": None,
          "extra": "allowed"}
    assert check_call(ToolCall("calc", ok), SCHEMAS) is None
    assert check_call(ToolCall("calc", {"answer": 72}), SCHEMAS, check_arguments=False) is None
    assert check_call(ToolCall("nope", {}), SCHEMAS, check_arguments=False).kind == "unknown_tool"
    assert argument_problems({}, SCHEMAS["calc"].function) == ["missing required argument 'answer'"]


def test_json_type_helpers():
    assert [json_type_name(v) for v in (None, True, 1, 1.0, "s", [], {})] == [
        "null", "boolean", "integer", "number", "string", "array", "object"]
    assert matches_type(2.0, "integer") and not matches_type(False, "number") and not matches_type(0, "null")


# --- hermes_or_json: untagged JSON calls (what Qwen2.5-Coder-0.5B writes) ---------------------------------------

QWEN_CODER_STYLE = ('The total is 72.\n```json\n{\n  "name": "calc",\n  "arguments": {\n    "answer": "72"\n  }\n}\n'
                    '```')


def test_hermes_format_ignores_an_untagged_json_call():
    assert parse_tool_calls(QWEN_CODER_STYLE, "hermes", SCHEMAS).calls == []


def test_hermes_or_json_takes_a_fenced_or_bare_json_call_naming_a_declared_tool():
    parsed = parse_tool_calls(QWEN_CODER_STYLE, "hermes_or_json", SCHEMAS)
    assert parsed.calls == [ToolCall("calc", {"answer": "72"})]
    assert parsed.content == "The total is 72.\n```json\n\n```"
    bare = 'so {"name": "calc", "arguments": {"answer": "1"}} and {"name": "calc", "arguments": "bad"}'
    assert [type(c) for c in parse_tool_calls(bare, "hermes_or_json", SCHEMAS).calls] == [ToolCall, ToolCallError]


def test_hermes_or_json_leaves_other_json_and_prefers_tags():
    other = 'data: {"name": "bob", "arguments": {}} and {"a": {"name": "calc"}} and {broken'
    assert parse_tool_calls(other, "hermes_or_json", SCHEMAS).calls == []
    tagged = '<tool_call>{"name": "calc", "arguments": {"answer": "2"}}</tool_call> ' + QWEN_CODER_STYLE
    assert parse_tool_calls(tagged, "hermes_or_json", SCHEMAS).calls == [ToolCall("calc", {"answer": "2"})]


def test_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match="'pythonic'.*hermes, hermes_or_json"):
        parse_tool_calls("", "pythonic", SCHEMAS)
