"""Load verl's tool YAML (`actor_rollout_ref.rollout.multi_turn.tool_config_path`) into strive tool objects.

Why it exists: recipes ship files like verl's `examples/sglang_multiturn/config/tool_config/gsm8k_tool_config.yaml`

    tools:
      - class_name: verl.tools.gsm8k_tool.Gsm8kTool
        config: {type: native}
        tool_schema: {type: function, function: {name: calc_gsm8k_reward, description: ..., parameters: {...}}}

and they must load unchanged. What it chose:

- verl's class paths map to strive's tools (`VERL_TOOLS`); any other `verl.tools.*` class is refused by name,
  since verl is not installed next to strive;
- any other class is the user's: `package.module.ClassName` (imported) or `path/to/file.py:ClassName` (a relative
  path is tried from the working directory, then from the YAML's folder);
- `config.type` must be `native` (the default); verl's `mcp` tools are not supported yet;
- no `tool_schema` means the class's `default_schema`;
- two tools with one name is an error (the model could not tell them apart).

Every error names the file and the entry (`tools.yaml: tools[1] (verl.tools.search_tool.SearchTool): ...`).

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_registry.py
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

import yaml

from strive.agent.tools.base import BaseTool, ToolSchema
from strive.user_code import import_file

VERL_TOOLS = {
    "verl.tools.gsm8k_tool.Gsm8kTool": "strive.agent.tools.gsm8k.Gsm8kTool",
    "verl.tools.sandbox_fusion_tools.SandboxFusionTool": "strive.agent.tools.python_code.PythonCodeTool",
}
"""verl tool class -> the strive class that does its job."""

TOOL_METHODS = ("create", "execute", "calc_reward", "release")


class ToolConfigError(ValueError):
    """A tool YAML strive cannot load; the message names the file and the entry."""


def load_tools(path: str) -> dict[str, BaseTool]:
    """The tools of the YAML file at `path`, by the name the model calls them with, in file order."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ToolConfigError(f"{where}: cannot read the tool config: {e}") from e
    except yaml.YAMLError as e:
        raise ToolConfigError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        raise ToolConfigError(f"{where}: expected a mapping with a `tools:` list, got {type(data).__name__}")
    tools: dict[str, BaseTool] = {}
    for index, entry in enumerate(data["tools"]):
        label = entry.get("class_name", "?") if isinstance(entry, dict) else "?"
        prefix = f"{where}: tools[{index}] ({label})"
        try:
            tool = build_tool(entry, base_dir=os.path.dirname(os.path.abspath(where)))
        except Exception as e:  # a user class may fail in any way; say which entry it was
            raise ToolConfigError(f"{prefix}: {e}") from e
        if tool.name in tools:
            raise ToolConfigError(f"{prefix}: a tool named {tool.name!r} is already defined")
        tools[tool.name] = tool
    return tools


def build_tool(entry: Any, base_dir: str = ".") -> BaseTool:
    """One `tools:` entry as a tool object."""
    if not isinstance(entry, dict):
        raise ToolConfigError(f"expected a mapping with class_name/config/tool_schema, got {entry!r}")
    class_name = entry.get("class_name")
    if not isinstance(class_name, str) or not class_name:
        raise ToolConfigError("class_name: missing or not a string")
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ToolConfigError(f"config: expected a mapping, got {config!r}")
    kind = config.get("type", "native")
    if kind != "native":
        raise ToolConfigError(f"config.type: {kind!r} tools are not supported yet (only 'native')")
    schema = entry.get("tool_schema")
    tool_schema = None if schema is None else ToolSchema.from_dict(schema)
    cls = resolve_class(class_name, base_dir)
    return cls(config=config, tool_schema=tool_schema)


def resolve_class(class_name: str, base_dir: str = ".") -> type:
    """The class named by a verl path, a `module.Class` path or a `file.py:Class` path; checks the tool methods."""
    if class_name in VERL_TOOLS:
        class_name = VERL_TOOLS[class_name]
    elif class_name.startswith("verl."):
        raise ToolConfigError(f"class_name: {class_name} has no strive counterpart yet; strive maps "
                              f"{', '.join(sorted(VERL_TOOLS))}")
    if ":" in class_name:
        file_part, _, attr = class_name.rpartition(":")
        module = _import_file(file_part, base_dir)
    else:
        module_name, _, attr = class_name.rpartition(".")
        if not module_name:
            raise ToolConfigError(f"class_name: {class_name!r} is neither module.Class nor path/file.py:Class")
        module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise ToolConfigError(f"class_name: {module.__name__} has no attribute {attr!r}")
    cls = getattr(module, attr)
    missing = [m for m in TOOL_METHODS if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        lacking = ", ".join(missing) or "a class"
        raise ToolConfigError(f"class_name: {class_name} is not a tool class (missing {lacking})")
    return cls


def _import_file(file_part: str, base_dir: str) -> Any:
    candidates = [os.path.expanduser(file_part)]
    if not os.path.isabs(candidates[0]):
        candidates.append(os.path.join(base_dir, candidates[0]))
    found = next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise ToolConfigError(f"class_name: tool file not found: {file_part} (tried {', '.join(candidates)})")
    return import_file(found, "strive_user_tool")
