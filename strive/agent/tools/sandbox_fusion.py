"""A client for Sandbox Fusion's `run_code` endpoint; the remote back end of `python_code`.

Why it exists: verl's `SandboxFusionTool` runs the model's code on a Sandbox Fusion server
(bytedance/SandboxFusion), and recipes point `sandbox_fusion_url` at one. This sends the same request and maps
the answer to the `CodeResult` the local runner returns, so the model sees one text format from either back end.

The request (POST JSON, as verl's `call_sandbox_api` sends it):

    {"code": str, "language": "python", "compile_timeout": s, "run_timeout": s, "memory_limit_MB": int,
     "stdin": str | null, "files": {}, "fetch_files": []}

The response: `{"status": "Success" | "Failed" | "SandboxError", "message": str,
"compile_result": null | {...}, "run_result": null | {"status": "Finished" | "TimeLimitExceeded" | "Error",
"return_code": int, "stdout": str, "stderr": str, "execution_time": float}}`.

What it chose: stdlib `urllib` only, one attempt with a timeout of compile + run + 10 s (verl retries a 504 three
times; a tool call that fails is reported to the model instead). A transport error, an HTTP error status, a body
that is not a JSON object, or `SandboxError` all become `status="sandbox_error"` with the reason in `detail`.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_python_tool.py -k sandbox
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from strive.agent.tools.local_exec import CodeResult, Limits

API_SLACK_S = 10.0
"""Seconds the HTTP request may take beyond the compile and run timeouts."""


def run_request(code: str, language: str, limits: Limits, stdin: str | None = None) -> dict[str, Any]:
    """The JSON body of a `run_code` request."""
    return {
        "code": code,
        "language": language,
        "compile_timeout": limits.wall_s,
        "run_timeout": limits.wall_s,
        "memory_limit_MB": limits.memory_mb,
        "stdin": stdin,
        "files": {},
        "fetch_files": [],
    }


def run_remote(url: str, code: str, language: str, limits: Limits, stdin: str | None = None,
               http_timeout_s: float | None = None) -> CodeResult:
    """POST `code` to `url`; never raises for a server problem (it becomes `sandbox_error`)."""
    body = json.dumps(run_request(code, language, limits, stdin)).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    timeout = http_timeout_s if http_timeout_s is not None else 2 * limits.wall_s + API_SLACK_S
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion answered HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion request failed: {reason}")
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion answered with invalid JSON: {raw[:200]!r}")
    if not isinstance(payload, dict):
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion answered {type(payload).__name__}, not an object")
    return map_response(payload, limits, time.monotonic() - start)


def map_response(payload: dict[str, Any], limits: Limits, duration_s: float = 0.0) -> CodeResult:
    """A `run_code` response as a `CodeResult` (see the module docstring for the shape)."""
    status = payload.get("status")
    if status == "SandboxError" or status not in ("Success", "Failed"):
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion status {status!r}: {payload.get('message', '')}")
    compiled = payload.get("compile_result") or {}
    run = payload.get("run_result") or {}
    if compiled and (compiled.get("status") != "Finished" or compiled.get("return_code") not in (0, None)):
        stderr = _text(compiled.get("stderr")) + _text(compiled.get("stdout"))
        return CodeResult("error", "", stderr, compiled.get("return_code"), duration_s,
                          f"compilation {compiled.get('status', 'failed')}")
    stdout, stderr = _cap(_text(run.get("stdout")), limits), _cap(_text(run.get("stderr")), limits)
    code, run_status = run.get("return_code"), run.get("status")
    if run_status == "TimeLimitExceeded":
        return CodeResult("timeout", stdout, stderr, code, duration_s, f"time limit of {limits.wall_s:g} s exceeded")
    if not run:
        return CodeResult("sandbox_error", detail=f"Sandbox Fusion status {status!r} without a run result")
    if run_status != "Finished" or code not in (0, None):
        kind = "memory_limit" if "MemoryError" in stderr[-2000:] else "error"
        return CodeResult(kind, stdout, stderr, code, duration_s, f"run {run_status}, exit code {code}")
    return CodeResult("ok", stdout, stderr, code, duration_s)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cap(text: str, limits: Limits) -> str:
    if len(text) <= limits.output_bytes:
        return text
    return text[: limits.output_bytes] + f"\n[output cut at {limits.output_bytes} characters]"
