"""The tool schema parser (errors name the field) and BaseTool's defaults."""

import asyncio
from typing import ClassVar

import pytest

from strive.agent.tools.base import BaseTool, ToolSchema, ToolSchemaError, create_kwargs_of

GSM8K_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calc_gsm8k_reward",
        "description": "A tool for calculating the reward of gsm8k.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "string", "description": "The answer"}},
            "required": ["answer"],
        },
    },
}


def test_schema_round_trips_to_the_chat_template_dict():
    schema = ToolSchema.from_dict(GSM8K_SCHEMA)
    assert schema.name == "calc_gsm8k_reward"
    assert schema.function.required == ("answer",)
    assert schema.function.properties["answer"].type == ("string",)
    assert schema.to_dict() == GSM8K_SCHEMA


def test_schema_keeps_extra_property_keys_and_type_lists():
    data = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "xs": {"type": "array", "items": {"type": "integer"}},
        "y": {"type": ["string", "null"], "enum": ["a", None]}}}}}
    out = ToolSchema.from_dict(data).to_dict()["function"]["parameters"]["properties"]
    assert out["xs"] == {"type": "array", "items": {"type": "integer"}}
    assert out["y"] == {"type": ["string", "null"], "enum": ["a", None]}


def _with(path, value):
    import copy

    data = copy.deepcopy(GSM8K_SCHEMA)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize("path,value,field", [
    (("type",), "tool", "tool_schema.type"),
    (("function",), KeyError, "tool_schema.function"),
    (("function",), "calc", "tool_schema.function"),
    (("function", "name"), KeyError, "tool_schema.function.name"),
    (("function", "name"), "", "tool_schema.function.name"),
    (("function", "name"), 3, "tool_schema.function.name"),
    (("function", "description"), 3, "tool_schema.function.description"),
    (("function", "parameters", "type"), "array", "tool_schema.function.parameters.type"),
    (("function", "parameters", "properties"), ["answer"], "tool_schema.function.parameters.properties"),
    (("function", "parameters", "properties", "answer", "type"), "str",
     "tool_schema.function.parameters.properties.answer.type"),
    (("function", "parameters", "properties", "answer", "type"), KeyError,
     "tool_schema.function.parameters.properties.answer.type"),
    (("function", "parameters", "properties", "answer"), "string",
     "tool_schema.function.parameters.properties.answer"),
    (("function", "parameters", "properties", "answer", "enum"), "a",
     "tool_schema.function.parameters.properties.answer.enum"),
    (("function", "parameters", "required"), ["answr"], "tool_schema.function.parameters.required"),
    (("function", "parameters", "required"), "answer", "tool_schema.function.parameters.required"),
    (("function", "strict"), "yes", "tool_schema.function.strict"),
])
def test_schema_errors_name_the_bad_field(path, value, field):
    with pytest.raises(ToolSchemaError) as err:
        ToolSchema.from_dict(_with(path, value))
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_schema_must_be_a_mapping():
    with pytest.raises(ToolSchemaError, match=r"^tool_schema: expected a mapping"):
        ToolSchema.from_dict(["function"])


def test_base_tool_defaults_and_missing_schema():
    class Echo(BaseTool):
        default_schema: ClassVar[dict] = {"type": "function", "function": {"name": "echo"}}

    tool = Echo({"type": "native"})
    assert tool.name == "echo" and tool.config == {"type": "native"}

    async def lifecycle():
        iid = await tool.create()
        assert await tool.create("fixed") == "fixed"
        text, reward, metrics = await tool.execute(iid, {})
        assert (await tool.calc_reward(iid), await tool.release(iid)) == (0.0, None)
        return iid, text, reward, metrics

    iid, text, reward, metrics = asyncio.run(lifecycle())
    assert isinstance(iid, str) and len(iid) > 8 and isinstance(text, str) and reward == 0.0 and metrics == {}
    with pytest.raises(ToolSchemaError, match="no tool_schema given"):
        BaseTool({})


def test_create_kwargs_both_verl_call_shapes():
    assert create_kwargs_of({"create_kwargs": {"ground_truth": "1"}}) == {"ground_truth": "1"}
    assert create_kwargs_of({"ground_truth": "2"}) == {"ground_truth": "2"}
    assert create_kwargs_of({"create_kwargs": {"ground_truth": "1"}, "ground_truth": "3"}) == {"ground_truth": "3"}
    assert create_kwargs_of({"create_kwargs": None}) == {}
