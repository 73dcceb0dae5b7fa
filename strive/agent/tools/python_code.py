"""`code_interpreter`: the model sends Python code and reads back what it printed.

Why it exists: verl's Sandbox Fusion recipe (`verl.tools.sandbox_fusion_tools.SandboxFusionTool`) maps here. With
`sandbox_fusion_url` set, code is POSTed to that server (`strive.agent.tools.sandbox_fusion`); without it, it runs
locally in a limited child process (`strive.agent.tools.local_exec`, whose docstring says exactly what is and is
not enforced). verl refuses to start without a URL; strive runs locally instead.

Config keys (verl's, same defaults): `sandbox_fusion_url` (""), `default_timeout` (30 s: the wall-clock limit),
`default_language` ("python"; other languages need Sandbox Fusion), `memory_limit_mb` (1024), `num_workers` (10:
runs at once in this process). strive's own: `cpu_time_limit` (default: `default_timeout`), `max_output_bytes`
(16384 per stream), `max_timeout` (default: `default_timeout`; caps a `timeout` argument the model passes, which
verl would honour uncapped). verl's `rate_limit` / `enable_global_rate_limit` (one Ray actor limiting the whole
cluster) are accepted; here `rate_limit` only lowers the per-process limit.

The parameters the model passes: `code` (required), and optionally `timeout` and `language`, as in verl.
The text it gets back: stdout, stderr, and a `[status: detail]` line when the run did not end normally (verl
answers "no stdout here" for every failure, which tells the model nothing).

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_python_tool.py
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

from strive.agent.tools.base import BaseTool
from strive.agent.tools.local_exec import CodeResult, Limits, format_result, run_python
from strive.agent.tools.sandbox_fusion import run_remote


def limits_from_config(config: dict[str, Any]) -> Limits:
    """The per-run limits a tool config asks for (verl's key names where verl has one)."""
    wall = float(config.get("default_timeout", 30))
    return Limits(
        wall_s=wall,
        cpu_s=int(config.get("cpu_time_limit", max(1, int(wall)))),
        memory_mb=int(config.get("memory_limit_mb", 1024)),
        output_bytes=int(config.get("max_output_bytes", 16384)),
    )


class PythonCodeTool(BaseTool):
    """Runs code locally under limits, or on Sandbox Fusion when `sandbox_fusion_url` is set."""

    default_schema: ClassVar[dict[str, Any] | None] = {
        "type": "function",
        "function": {
            "name": "code_interpreter",
            "description": "A tool for executing code.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The code to execute."}},
                "required": ["code"],
            },
        },
    }

    def __init__(self, config: dict[str, Any] | None = None, tool_schema: Any = None):
        super().__init__(config, tool_schema)
        self.url = str(self.config.get("sandbox_fusion_url") or "")
        self.limits = limits_from_config(self.config)
        self.max_timeout = float(self.config.get("max_timeout", self.limits.wall_s))
        self.default_language = str(self.config.get("default_language", "python"))
        workers = int(self.config.get("num_workers", 10))
        if "rate_limit" in self.config:
            workers = min(workers, int(self.config["rate_limit"]))
        if workers < 1:
            raise ValueError(f"{type(self).__name__}: num_workers/rate_limit must be at least 1, got {workers}")
        self._slots = threading.BoundedSemaphore(workers)

    def run(self, code: str, language: str, limits: Limits) -> CodeResult:
        """One run on the configured back end (blocking; `execute` calls it in a thread)."""
        with self._slots:
            if self.url:
                return run_remote(self.url, code, language, limits)
            if language != "python":
                return CodeResult("error", detail=f"language {language!r} needs sandbox_fusion_url; only python "
                                                  "runs locally")
            return run_python(code, limits)

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[str, float, dict]:
        code = parameters.get("code", "")
        code = code if isinstance(code, str) else str(code)
        language = str(parameters.get("language") or self.default_language)
        limits = self.limits
        if "timeout" in parameters:
            try:
                wall = min(float(parameters["timeout"]), self.max_timeout)
            except (TypeError, ValueError):
                wall = self.limits.wall_s
            if wall > 0:
                limits = Limits(wall, min(self.limits.cpu_s, max(1, int(wall + 0.999))), limits.memory_mb,
                                limits.output_bytes)
        result = await asyncio.to_thread(self.run, code, language, limits)
        metrics = {"status": result.status, "duration_s": result.duration_s}
        return format_result(result), 0.0, metrics
