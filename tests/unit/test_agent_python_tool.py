"""The code tool's limits (local child process) and its Sandbox Fusion client (against a local http.server)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from strive.agent.tools.local_exec import CodeResult, Limits, format_result, run_python
from strive.agent.tools.python_code import PythonCodeTool
from strive.agent.tools.sandbox_fusion import map_response, run_remote

FAST = Limits(wall_s=20.0, cpu_s=5, memory_mb=512, output_bytes=2000)


def test_ok_run_prints_stdout_and_stderr():
    result = run_python("import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)", FAST)
    assert (result.status, result.stdout, result.stderr, result.exit_code) == ("ok", "42\n", "warn\n", 0)
    assert format_result(result) == "42\nwarn\n"


def test_exception_is_an_error_with_the_traceback():
    result = run_python("x = 1\nraise ValueError('boom')", FAST)
    assert result.status == "error" and result.exit_code == 1
    assert 'File "<tool code>", line 2' in result.stderr and "ValueError: boom" in result.stderr
    assert format_result(result).endswith("[error: exit code 1]")


def test_busy_loop_hits_the_cpu_limit():
    result = run_python("while True:\n    pass", Limits(wall_s=30.0, cpu_s=1, memory_mb=512, output_bytes=2000))
    assert result.status == "cpu_limit", result
    assert "CPU time limit of 1 s" in format_result(result)


def test_sleep_hits_the_wall_clock_limit():
    start = time.monotonic()
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(30)",
                        Limits(wall_s=0.5, cpu_s=5, memory_mb=512, output_bytes=2000))
    assert result.status == "timeout" and result.stdout == "started\n"
    assert time.monotonic() - start < 10
    assert "[timeout: wall-clock limit of 0.5 s exceeded" in format_result(result)


def test_big_allocation_hits_the_memory_limit():
    result = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", FAST)
    assert result.status == "memory_limit" and "allocated" not in result.stdout, result
    assert "MemoryError" in result.stderr


def test_output_flood_is_cut_at_the_limit():
    result = run_python("while True:\n    print('x' * 1000)", FAST)
    assert result.status == "output_limit", result
    assert len(result.stdout) == FAST.output_bytes
    assert "output limit of 2000 bytes" in format_result(result)


@pytest.mark.parametrize("code", [
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    "import socket\nsocket.getaddrinfo('localhost', 80)",
    "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=1)",
    "import subprocess\nsubprocess.run(['echo', 'hi'])",
    "import os\nos.system('echo hi')",
])
def test_network_and_programs_are_refused(code):
    result = run_python(code, Limits(wall_s=20.0, cpu_s=5, memory_mb=512, output_bytes=16384))  # long tracebacks
    assert result.status == "error" and "PermissionError" in result.stderr, result
    assert "not allowed in this tool" in result.stderr


@pytest.mark.parametrize("code", [
    "import os\nos.kill(os.getppid(), 0)",
    "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
    "open('{outside}', 'w')",
    "import os\nos.open('{outside}', os.O_WRONLY | os.O_CREAT)",
    "import os\nos.remove('{victim}')",
    "import os\nos.rename('{victim}', 'mine')",
    "import shutil\nshutil.rmtree('{victim_dir}')",
    "import os\nos.symlink('{victim}', 'link')\nopen('link', 'a')",
])
def test_signals_limits_and_writes_outside_the_work_dir_are_refused(tmp_path, code):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    code = code.format(outside=tmp_path / "new.txt", victim=victim, victim_dir=tmp_path)
    result = run_python(code, Limits(wall_s=20.0, cpu_s=5, memory_mb=512, output_bytes=16384))
    assert result.status == "error" and "PermissionError" in result.stderr, result
    assert victim.read_text() == "precious" and not (tmp_path / "new.txt").exists()


def test_work_dir_writes_reads_and_temp_files_are_allowed_and_the_hook_is_out_of_reach():
    code = ("import tempfile, os, __main__\n"
            "open('a.txt', 'w').write('hi')\nos.rename('a.txt', 'b.txt')\nprint(open('b.txt').read())\n"
            "with tempfile.NamedTemporaryFile('w') as f: f.write('x')\n"
            "print(len(open(os.__file__).read()) > 0, hasattr(__main__, '_install'))\n")
    result = run_python(code, FAST)
    assert (result.status, result.stdout) == ("ok", "hi\nTrue False\n"), result


def test_child_runs_isolated_in_an_empty_directory():
    code = "import os, sys\nprint(sorted(os.listdir('.')), sys.flags.isolated, 'PYTHONPATH' in os.environ)"
    assert run_python(code, FAST).stdout.strip() == "['main.py', 'stderr', 'stdout'] 1 False"


def test_tool_execute_uses_local_runner_and_caps_the_models_timeout():
    tool = PythonCodeTool({"default_timeout": 5, "memory_limit_mb": 512, "max_output_bytes": 500})
    assert tool.name == "code_interpreter" and tool.url == ""

    async def go():
        ok = await tool.execute("i", {"code": "print(sum(range(10)))"})
        slow = await tool.execute("i", {"code": "import time; time.sleep(30)", "timeout": 0.3})
        other = await tool.execute("i", {"code": "echo 1", "language": "bash"})
        return ok, slow, other

    (text, reward, metrics), slow, other = asyncio.run(go())
    assert (text, reward, metrics["status"]) == ("45\n", 0.0, "ok")
    assert slow[2]["status"] == "timeout" and "0.3 s" in slow[0]
    assert other[0].startswith("[error: language 'bash' needs sandbox_fusion_url")
    with pytest.raises(ValueError, match="num_workers/rate_limit must be at least 1"):
        PythonCodeTool({"num_workers": 0})


# ---------------------------------------------------------------- Sandbox Fusion, against a local server

SUCCESS = {"status": "Success", "message": "", "compile_result": None, "run_result": {
    "status": "Finished", "execution_time": 0.01, "return_code": 0, "stdout": "42\n", "stderr": ""}}


class _Server:
    """A tiny `run_code` server: `behaviour` picks the answer; `requests` keeps what it was sent."""

    def __init__(self, behaviour):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
                status, payload, delay = behaviour
                time.sleep(delay)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (the timeout case)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/run_code"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    srv = _Server(request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize("server", [(200, SUCCESS, 0.0)], indirect=True)
def test_sandbox_success_and_request_shape(server):
    tool = PythonCodeTool({"sandbox_fusion_url": server.url, "default_timeout": 7, "memory_limit_mb": 256})
    text, reward, metrics = asyncio.run(tool.execute("i", {"code": "print(42)"}))
    assert (text, reward, metrics["status"]) == ("42\n", 0.0, "ok")
    path, content_type, body = server.requests[0]
    assert (path, content_type) == ("/run_code", "application/json")
    assert body == {"code": "print(42)", "language": "python", "compile_timeout": 7.0, "run_timeout": 7.0,
                    "memory_limit_MB": 256, "stdin": None, "files": {}, "fetch_files": []}


@pytest.mark.parametrize("server", [(200, SUCCESS, 3.0)], indirect=True)
def test_sandbox_that_does_not_answer_in_time(server):
    start = time.monotonic()
    result = run_remote(server.url, "print(1)", "python", FAST, http_timeout_s=0.3)
    assert result.status == "sandbox_error" and "request failed" in result.detail, result
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("server", [(500, {"detail": "internal"}, 0.0)], indirect=True)
def test_sandbox_error_status(server):
    result = run_remote(server.url, "print(1)", "python", FAST)
    assert result.status == "sandbox_error"
    assert result.detail == "Sandbox Fusion answered HTTP 500 Internal Server Error"
    assert format_result(result) == "[sandbox_error: Sandbox Fusion answered HTTP 500 Internal Server Error]"


@pytest.mark.parametrize("server", [(200, b"<html>gateway</html>", 0.0), (200, [1, 2], 0.0)], indirect=True)
def test_sandbox_invalid_json(server):
    result = run_remote(server.url, "print(1)", "python", FAST)
    assert result.status == "sandbox_error"
    assert "invalid JSON" in result.detail or "not an object" in result.detail


def test_sandbox_unreachable():
    result = run_remote("http://127.0.0.1:9/run_code", "print(1)", "python", FAST, http_timeout_s=1.0)
    assert result.status == "sandbox_error" and "request failed" in result.detail


def _run(status, run_status, code, stdout="", stderr=""):
    return {"status": status, "message": "", "compile_result": None, "run_result": {
        "status": run_status, "return_code": code, "stdout": stdout, "stderr": stderr, "execution_time": 0.1}}


@pytest.mark.parametrize("payload,status,text", [
    (_run("Failed", "Finished", 1, "", "Traceback...\nValueError: x\n"), "error",
     "Traceback...\nValueError: x\n[error: run Finished, exit code 1]"),
    (_run("Failed", "TimeLimitExceeded", None, "partial\n"), "timeout",
     "partial\n[timeout: time limit of 20 s exceeded]"),
    (_run("Failed", "Finished", 1, "", "MemoryError\n"), "memory_limit",
     "MemoryError\n[memory_limit: run Finished, exit code 1]"),
    (_run("Success", "Finished", 0, "y" * 2500), "ok", "y" * 2000 + "\n[output cut at 2000 characters]\n"),
    ({"status": "SandboxError", "message": "no runner", "run_result": None}, "sandbox_error",
     "[sandbox_error: Sandbox Fusion status 'SandboxError': no runner]"),
    ({"status": "Failed", "compile_result": {"status": "Finished", "return_code": 1, "stderr": "err.cpp:1\n"},
      "run_result": None}, "error", "err.cpp:1\n[error: compilation Finished]"),
    ({"status": "Failed", "compile_result": None, "run_result": None}, "sandbox_error",
     "[sandbox_error: Sandbox Fusion status 'Failed' without a run result]"),
])
def test_sandbox_response_mapping(payload, status, text):
    result = map_response(payload, FAST)
    assert result.status == status and format_result(result) == text


def test_format_of_a_silent_run():
    assert format_result(CodeResult("ok")) == "[no output]"
