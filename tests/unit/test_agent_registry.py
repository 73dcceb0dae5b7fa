"""verl's tool YAML loads into strive tools; every error names the file and the entry."""

import textwrap

import pytest

from strive.agent.tools.gsm8k import Gsm8kTool
from strive.agent.tools.python_code import PythonCodeTool
from strive.agent.tools.registry import ToolConfigError, load_tools, resolve_class

VERL_GSM8K_YAML = """
tools:
  - class_name: "verl.tools.gsm8k_tool.Gsm8kTool"
    config:
      type: native
    tool_schema:
      type: "function"
      function:
        name: "calc_gsm8k_reward"
        description: "A tool for calculating the reward of gsm8k. (1.0 if parsed answer is correct)"
        parameters:
          type: "object"
          properties:
            answer:
              type: "string"
              description: "The model's answer to the GSM8K math problem, must be a digits"
          required: ["answer"]
"""

VERL_SANDBOX_YAML = """
tools:
  - class_name: "verl.tools.sandbox_fusion_tools.SandboxFusionTool"
    config:
      sandbox_fusion_url: "http://127.0.0.1:9/run_code"
      num_workers: 10
      enable_global_rate_limit: true
      rate_limit: 4
      default_timeout: 30
      default_language: "python"
      memory_limit_mb: 1024
      type: native
    tool_schema:
      type: "function"
      function:
        name: "code_interpreter"
        description: "A tool for executing code."
        parameters:
          type: "object"
          properties:
            code:
              type: "string"
              description: "The code to execute."
          required: ["code"]
"""

USER_TOOL = '''
from strive.agent.tools.base import BaseTool

class Upper(BaseTool):
    default_schema = {"type": "function", "function": {"name": "upper", "parameters": {
        "type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}}}

    async def execute(self, instance_id, parameters, **kwargs):
        return parameters["s"].upper(), 0.0, {}

class NotATool:
    pass
'''


def write(tmp_path, text, name="tools.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_verl_gsm8k_yaml_maps_to_strive_tool(tmp_path):
    tools = load_tools(write(tmp_path, VERL_GSM8K_YAML))
    assert list(tools) == ["calc_gsm8k_reward"]
    tool = tools["calc_gsm8k_reward"]
    assert isinstance(tool, Gsm8kTool)
    assert tool.tool_schema.function.description.startswith("A tool for calculating")


def test_verl_sandbox_yaml_maps_to_python_code_tool(tmp_path):
    tool = load_tools(write(tmp_path, VERL_SANDBOX_YAML))["code_interpreter"]
    assert isinstance(tool, PythonCodeTool)
    assert tool.url == "http://127.0.0.1:9/run_code"
    assert (tool.limits.wall_s, tool.limits.memory_mb, tool._slots._value) == (30.0, 1024, 4)


def test_user_tool_by_file_path_and_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_tools.py").write_text(USER_TOOL)
    yaml_text = """
    tools:
      - class_name: my_tools.py:Upper
      - class_name: my_tools_mod.Upper
        tool_schema:
          type: function
          function: {name: upper2, parameters: {type: object, properties: {s: {type: string}}}}
    """
    (tmp_path / "my_tools_mod.py").write_text(USER_TOOL)
    monkeypatch.syspath_prepend(str(tmp_path))
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the file path resolves against the YAML's folder when not found from here
    tools = load_tools(write(tmp_path, yaml_text))
    assert list(tools) == ["upper", "upper2"]
    assert type(tools["upper"]).__name__ == "Upper"
    assert resolve_class(str(tmp_path / "my_tools.py") + ":Upper") is type(tools["upper"])


@pytest.mark.parametrize("entry,needle", [
    ("- class_name: verl.tools.search_tool.SearchTool", "has no strive counterpart yet"),
    ("- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n  config: {type: mcp}", "config.type: 'mcp'"),
    ("- class_name: missing_file.py:Tool", "tool file not found: missing_file.py"),
    ("- class_name: my_tools.py:Nope", "has no attribute 'Nope'"),
    ("- class_name: my_tools.py:NotATool", "is not a tool class (missing create, execute, calc_reward, release)"),
    ("- class_name: NoDots", "neither module.Class nor path/file.py:Class"),
    ("- class_name: no_such_module_xyz.Tool", "No module named 'no_such_module_xyz'"),
    ("- config: {}", "class_name: missing"),
    ("- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n  config: [1]", "config: expected a mapping"),
    ("- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n  tool_schema: {type: function, function: {name: 3}}",
     "tool_schema.function.name: expected a non-empty string"),
    ("- just a string", "expected a mapping with class_name"),
])
def test_bad_entries_name_file_and_entry(tmp_path, entry, needle):
    (tmp_path / "my_tools.py").write_text(USER_TOOL)
    good = "- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n"
    path = write(tmp_path, "tools:\n" + good + entry + "\n")
    with pytest.raises(ToolConfigError) as err:
        load_tools(path)
    message = str(err.value)
    assert message.startswith(f"{path}: tools[1] (")
    assert needle in message, message


def test_duplicate_names_and_bad_files(tmp_path):
    dup = "tools:\n- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n- class_name: verl.tools.gsm8k_tool.Gsm8kTool\n"
    with pytest.raises(ToolConfigError, match=r"tools\[1\] .*'calc_gsm8k_reward' is already defined"):
        load_tools(write(tmp_path, dup))
    with pytest.raises(ToolConfigError, match="cannot read the tool config"):
        load_tools(str(tmp_path / "absent.yaml"))
    with pytest.raises(ToolConfigError, match="not valid YAML"):
        load_tools(write(tmp_path, "tools: [\n", "bad.yaml"))
    with pytest.raises(ToolConfigError, match="expected a mapping with a `tools:` list"):
        load_tools(write(tmp_path, "- 1\n", "list.yaml"))
