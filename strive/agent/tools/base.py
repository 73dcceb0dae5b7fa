"""The tool interface and the OpenAI function schema a tool is described by.

Why it exists: verl's tool recipes (`multi_turn.tool_config_path`) name tool classes with verl's async shape, and
users port their own tools by changing an import. So `BaseTool` keeps that shape:

    create(instance_id=None, **create_kwargs) -> instance_id          # one instance per trajectory
    execute(instance_id, parameters: dict, **kwargs) -> (text, step reward, metrics)
    calc_reward(instance_id) -> float                                 # the tool's view of the final reward
    release(instance_id) -> None

What it chose, against verl (commit b178a3c, January 2026):

- `create` returns the instance id only. verl since #2870 (August 2025) returns `(instance_id, ToolResponse)`, and
  its own agent loop throws the second item away; the runner (`strive.agent.tool_runner`) accepts both, so a tool
  ported from either verl version works.
- `execute` returns plain text. verl returns a `ToolResponse` (text, images, videos); the runner accepts any object
  with a `.text`, a `{"text": ...}` dict or a string. Images and videos are not supported yet.
- The schema is a small frozen dataclass tree, not pydantic, parsed by `ToolSchema.from_dict`, whose errors name
  the bad field (`tool_schema.function.parameters.properties.answer.type: ...`).

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_tools_base.py
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
"""The JSON-schema type names a property may use."""


class ToolSchemaError(ValueError):
    """A tool schema dict that does not describe an OpenAI function tool; the message names the field."""


def _need(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise ToolSchemaError(f"{where}: expected {what}, got {value!r}")
    return value


@dataclass(frozen=True)
class PropertySchema:
    """One parameter: its JSON type(s), description and allowed values. Other JSON-schema keys (`items`, `minimum`,
    ...) are kept in `extra` for the chat template but not checked."""

    type: tuple[str, ...]
    description: str = ""
    enum: tuple[Any, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PropertySchema:
        _need(data, dict, where, "a mapping")
        raw_type = data.get("type")
        types = (raw_type,) if isinstance(raw_type, str) else raw_type
        if not isinstance(types, (list, tuple)) or not types or not all(t in JSON_TYPES for t in types):
            names = ", ".join(JSON_TYPES)
            raise ToolSchemaError(f"{where}.type: expected one of {names} (or a list of them), got {raw_type!r}")
        description = _need(data.get("description", ""), str, f"{where}.description", "a string")
        enum = data.get("enum")
        if enum is not None:
            _need(enum, (list, tuple), f"{where}.enum", "a list")
        extra = {k: v for k, v in data.items() if k not in ("type", "description", "enum")}
        return cls(tuple(types), description, None if enum is None else tuple(enum), extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type[0] if len(self.type) == 1 else list(self.type)}
        if self.description:
            out["description"] = self.description
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return {**out, **self.extra}


@dataclass(frozen=True)
class FunctionSchema:
    """The `function` part: name, description, and an object of named parameters."""

    name: str
    description: str = ""
    properties: dict[str, PropertySchema] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    strict: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FunctionSchema:
        _need(data, dict, where, "a mapping")
        name = _need(data.get("name"), str, f"{where}.name", "a non-empty string")
        if not name:
            raise ToolSchemaError(f"{where}.name: expected a non-empty string, got ''")
        description = _need(data.get("description", ""), str, f"{where}.description", "a string")
        params = data.get("parameters", {"type": "object", "properties": {}})
        pwhere = f"{where}.parameters"
        _need(params, dict, pwhere, "a mapping")
        if params.get("type", "object") != "object":
            raise ToolSchemaError(f"{pwhere}.type: expected 'object', got {params.get('type')!r}")
        raw_props = _need(params.get("properties", {}) or {}, dict, f"{pwhere}.properties", "a mapping")
        props = {str(k): PropertySchema.from_dict(v, f"{pwhere}.properties.{k}") for k, v in raw_props.items()}
        required = _need(params.get("required", []) or [], (list, tuple), f"{pwhere}.required", "a list of names")
        for req in required:
            if req not in props:
                raise ToolSchemaError(f"{pwhere}.required: {req!r} is not one of the properties {sorted(props)}")
        strict = _need(data.get("strict", False), bool, f"{where}.strict", "true or false")
        return cls(name, description, props, tuple(required), strict)


@dataclass(frozen=True)
class ToolSchema:
    """An OpenAI function tool: `{"type": "function", "function": {"name", "description", "parameters"}}`."""

    function: FunctionSchema
    type: str = "function"

    @property
    def name(self) -> str:
        return self.function.name

    @classmethod
    def from_dict(cls, data: Any, where: str = "tool_schema") -> ToolSchema:
        _need(data, dict, where, "a mapping")
        if data.get("type", "function") != "function":
            raise ToolSchemaError(f"{where}.type: expected 'function', got {data.get('type')!r}")
        if "function" not in data:
            raise ToolSchemaError(f"{where}.function: missing (the name, description and parameters go there)")
        return cls(FunctionSchema.from_dict(data["function"], f"{where}.function"))

    def to_dict(self) -> dict[str, Any]:
        """The dict a chat template's `tools=` argument takes."""
        fn = self.function
        params = {
            "type": "object",
            "properties": {k: p.to_dict() for k, p in fn.properties.items()},
            "required": list(fn.required),
        }
        out: dict[str, Any] = {"name": fn.name, "description": fn.description, "parameters": params}
        if fn.strict:
            out["strict"] = True
        return {"type": self.type, "function": out}


class BaseTool:
    """A tool with per-trajectory instances. Subclasses override what they need; all four calls are coroutines.

    `config` is the tool's `config:` mapping from the YAML; `tool_schema` its `tool_schema:`, or None to use the
    class's `default_schema` (a dict, checked here).
    """

    default_schema: ClassVar[dict[str, Any] | None] = None

    def __init__(self, config: dict[str, Any] | None = None, tool_schema: ToolSchema | None = None):
        self.config = dict(config or {})
        if tool_schema is None:
            if self.default_schema is None:
                raise ToolSchemaError(f"{type(self).__name__}: no tool_schema given and no default_schema")
            tool_schema = ToolSchema.from_dict(self.default_schema, f"{type(self).__name__}.default_schema")
        self.tool_schema = tool_schema
        self.name = tool_schema.name

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> str:
        """Start an instance (e.g. remember the sample's ground truth); returns its id."""
        return instance_id if instance_id is not None else str(uuid.uuid4())

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[str, float, dict]:
        """Run one call; returns the text the model sees next, a step reward and metrics."""
        return "Updated the tool state.", 0.0, {}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        return None


def create_kwargs_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """verl calls `create` two ways: its agent loop passes `create_kwargs={...}`, its older SGLang rollout spread the
    same mapping as keyword arguments. The merged view; explicit keywords win."""
    nested = kwargs.get("create_kwargs") or {}
    return {**nested, **{k: v for k, v in kwargs.items() if k != "create_kwargs"}}
