"""The tool runner: limits, failing tools as messages, verl's result shapes, and parse -> execute -> messages."""

import asyncio

import pytest

from strive.agent.tool_parser import ToolCall, ToolCallError, parse_hermes
from strive.agent.tool_runner import ToolCallLimits, ToolSession, run_tool_calls, truncate_response
from strive.agent.tools.base import BaseTool
from strive.agent.tools.gsm8k import Gsm8kTool


def run(coro):
    return asyncio.run(coro)


def schema(name):
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"s": {"type": "string"}}}}}


class Echo(BaseTool):
    """Echoes `s`; records its lifecycle; sleeps `delay` seconds first."""

    default_schema = schema("echo")

    def __init__(self, config=None, tool_schema=None):
        super().__init__(config, tool_schema)
        self.log = []
        self.running = 0
        self.max_running = 0

    async def create(self, instance_id=None, **kwargs):
        self.log.append(("create", kwargs))
        return "echo-1"

    async def execute(self, instance_id, parameters, **kwargs):
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(float(self.config.get("delay", 0.0)))
        self.running -= 1
        return parameters.get("s", ""), 0.5, {"len": len(parameters.get("s", ""))}

    async def release(self, instance_id, **kwargs):
        self.log.append(("release", instance_id))


class Broken(BaseTool):
    default_schema = schema("broken")

    async def execute(self, instance_id, parameters, **kwargs):
        raise RuntimeError("disk on fire")


class Hangs(BaseTool):
    default_schema = schema("hangs")

    async def execute(self, instance_id, parameters, **kwargs):
        await asyncio.sleep(30)


class BadCreate(BaseTool):
    default_schema = schema("badcreate")

    async def create(self, instance_id=None, **kwargs):
        raise KeyError("ground_truth")


class VerlShapes(BaseTool):
    """verl >= 0.5 shapes: create -> (id, response), execute -> (obj with .text, None, None)."""

    default_schema = schema("verlish")

    class Response:
        def __init__(self, text):
            self.text = text

    async def create(self, instance_id=None, **kwargs):
        return "v-1", self.Response(None)

    async def execute(self, instance_id, parameters, **kwargs):
        if parameters.get("s") == "dict":
            return {"text": "from dict"}, 1, {}
        if parameters.get("s") == "wrong":
            return "only text"
        if parameters.get("s") == "badreward":
            return "t", "high", {}
        return self.Response(f"{instance_id}:{parameters.get('s')}"), None, None


def tools(*items):
    return {t.name: t for t in items}


@pytest.mark.parametrize("side,expected", [
    ("left", "abcd...(truncated)"),
    ("right", "(truncated)...ghij"),
    ("middle", "ab...(truncated)...ij"),
])
def test_truncation_sides_as_verl(side, expected):
    assert truncate_response("abcdefghij", 4, side) == expected
    assert truncate_response("abcd", 4, side) == "abcd"


def test_truncation_edge_and_bad_limits():
    assert truncate_response("abcdef", 1, "middle") == "...(truncated)..."
    assert truncate_response("abcdefg", 5, "middle") == "ab...(truncated)...fg"
    for bad in ({"tool_response_truncate_side": "top"}, {"max_parallel_calls": 0},
                {"max_tool_response_length": 0}, {"call_timeout_s": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ToolCallLimits(**bad)


def test_parallel_calls_run_concurrently_and_extra_calls_are_dropped():
    echo = Echo({"delay": 0.2})
    calls = [ToolCall("echo", {"s": str(i)}) for i in range(4)]
    turn = run(run_tool_calls(calls, tools(echo), {"echo": {"create_kwargs": {"k": 1}}},
                              ToolCallLimits(max_parallel_calls=3)))
    assert [m["content"] for m in turn.messages] == ["0", "1", "2"]
    assert all(m["role"] == "tool" for m in turn.messages)
    assert (turn.tool_calls, turn.tool_errors, turn.dropped, echo.max_running) == (3, 0, 1, 3)
    assert turn.step_rewards == [0.5, 0.5, 0.5] and turn.metrics[0] == {"len": 1}
    assert echo.log == [("create", {"create_kwargs": {"k": 1}}), ("release", "echo-1")]  # one instance, released


def test_failures_become_messages_and_are_counted():
    calls = [
        ToolCall("broken", {}),
        ToolCall("hangs", {}),
        ToolCall("badcreate", {}),
        ToolCall("nope", {}),
        ToolCall("echo", {"s": 3}),
        ToolCallError("invalid_json", "Error: the tool call is not valid JSON (x)."),
        ToolCall("echo", {"s": "fine"}),
    ]
    limits = ToolCallLimits(max_parallel_calls=10, call_timeout_s=0.2)
    turn = run(run_tool_calls(calls, tools(Echo(), Broken(), Hangs(), BadCreate()), limits=limits))
    texts = [m["content"] for m in turn.messages]
    assert texts[0] == "Error when executing tool: disk on fire"
    assert texts[1] == "Error: tool hangs timed out after 0.2 s."
    assert texts[2] == "Error when executing tool: 'ground_truth'"
    assert texts[3].startswith("Error: there is no tool named 'nope'. Available tools: badcreate, broken, echo, hangs")
    assert texts[4] == "Error: invalid arguments for echo: 's' must be string, got integer 3."
    assert texts[5] == "Error: the tool call is not valid JSON (x)."
    assert texts[6] == "fine"
    assert (turn.tool_calls, turn.tool_errors, turn.dropped) == (7, 6, 0)
    assert [m.get("error") for m in turn.metrics] == [
        "tool_error", "timeout", "tool_error", "unknown_tool", "invalid_arguments", "invalid_json", None]


def test_error_text_is_truncated_too():
    calls = [ToolCall("nope", {})]
    turn = run(run_tool_calls(calls, tools(Echo()), limits=ToolCallLimits(max_tool_response_length=10,
                                                                           tool_response_truncate_side="left")))
    assert turn.messages[0]["content"] == "Error: the...(truncated)"


def test_verl_result_shapes_are_accepted():
    calls = [ToolCall("verlish", {"s": s}) for s in ("a", "dict", "wrong", "badreward")]
    turn = run(run_tool_calls(calls, tools(VerlShapes()), limits=ToolCallLimits(max_parallel_calls=4)))
    texts = [m["content"] for m in turn.messages]
    assert texts[:2] == ["v-1:a", "from dict"]
    assert texts[2] == "Error when executing tool: verlish returned str, expected (text, reward, metrics)"
    assert texts[3] == "Error when executing tool: verlish returned step reward 'high', not a number"
    assert turn.step_rewards == [1.0]  # a None step reward is not recorded, as verl
    assert turn.tool_errors == 2


def test_gsm8k_end_to_end_parse_execute_messages_over_two_turns():
    """A trajectory: wrong answer, then right; one instance carries the best-so-far reward between turns."""
    registry = {"calc_gsm8k_reward": Gsm8kTool()}
    row_tools_kwargs = {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": "72"}}}
    turn_texts = [
        ('Natalia sold 48/2 = 24 in May.\n<tool_call>\n{"name": "calc_gsm8k_reward", "arguments": {"answer": "70"}}\n'
         "</tool_call>"),
        ('Recount: 48 + 24 = 72.\n<tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": "72"}}'
         '</tool_call><tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": 72}}</tool_call>'),
    ]

    async def trajectory():
        turns = []
        async with ToolSession(registry, row_tools_kwargs, ToolCallLimits(max_parallel_calls=1)) as session:
            for text in turn_texts:
                turns.append(await session.run(parse_hermes(text).calls))
            final = await session.rewards()
        return turns, final

    turns, final = run(trajectory())
    assert turns[0].messages == [{"role": "tool", "content": "Current parsed answer='70' reward=0.0"}]
    assert turns[0].step_rewards == [-0.05]
    assert turns[1].messages == [{"role": "tool", "content": "Current parsed answer='72' reward=1.0"}]
    assert (turns[1].step_rewards, turns[1].dropped) == ([0.0], 1)
    assert final == {"calc_gsm8k_reward": 1.0}
    assert registry["calc_gsm8k_reward"]._attempts == {}  # released on leaving the session


def test_gsm8k_number_argument_is_an_error_unless_checking_is_off():
    registry = {"calc_gsm8k_reward": Gsm8kTool()}
    calls = parse_hermes('<tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": 72}}</tool_call>').calls
    kwargs = {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": "72"}}}
    strict = run(run_tool_calls(calls, registry, kwargs))
    assert strict.messages[0]["content"].startswith("Error: invalid arguments for calc_gsm8k_reward: 'answer'")
    lenient = run(run_tool_calls(calls, registry, kwargs, ToolCallLimits(check_arguments=False)))
    assert lenient.messages[0]["content"] == "Current parsed answer='72' reward=1.0"  # verl's behaviour
