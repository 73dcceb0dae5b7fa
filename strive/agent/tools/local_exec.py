"""Run untrusted Python in a child process with kernel resource limits; the local back end of `python_code`.

Why it exists: a code-interpreter tool needs somewhere to run the model's code when no Sandbox Fusion server is
configured (CI, a laptop, a first experiment). This is that place. It is a limiter, not a security sandbox.

What is enforced (by the kernel, through `resource.setrlimit` in the child before the model's code runs):

- CPU time (`RLIMIT_CPU`): the child gets SIGXCPU at the limit, SIGKILL a second later;
- address space (`RLIMIT_AS`): allocations past the limit fail, so Python raises MemoryError;
- output size (`RLIMIT_FSIZE`): stdout and stderr go to files, and a write past the limit kills the child with
  SIGXFSZ, so a flood of output never reaches the parent's memory;
- wall-clock time: the parent kills the child's whole process group (it runs in a new session) at the limit;
- no core dumps; a fresh empty working directory (also HOME and TMPDIR), deleted afterwards; `python -I -B` (no
  user site, no PYTHON* variables, no .pyc writes) and an environment with nothing but PATH, LANG, HOME, TMPDIR.

What is best-effort (by a `sys.addaudithook` installed before the model's code runs; Python has no call that
removes one, and the hook's names are not reachable from `__main__`), each raising PermissionError:
creating, binding or connecting a socket and resolving a name; starting a program (`subprocess`, `os.system`,
`os.exec*`, `os.posix_spawn`, `os.spawn*`); sending a signal (`os.kill`, `os.killpg`: the model's code cannot kill
the trainer); changing a resource limit (which root could otherwise raise); opening a file for writing, or
removing, renaming, linking, chmod-ing or creating a directory, outside the working directory (paths resolved
through symlinks). Not prevented: anything done through `ctypes` or a C extension (raw system calls, sockets,
limits), paths relative to a `dir_fd`, digging the hook out with `gc`, reading any file the user running strive
may read, and `os.fork` (a forked child keeps the hook and the limits). Use Sandbox Fusion or a container without
network when the model is not trusted.

    PYTHONPATH=$PWD python -m pytest -q tests/unit/test_agent_python_tool.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Runs in the child as `python -I -B -c BOOTSTRAP <limits> <code file>`: limits first, then the audit hook, then
# the model's code as __main__ with fresh globals, so a traceback shows the model's own lines in "<tool code>".
# Everything lives inside `_install`, so the model's code finds no name in __main__ to switch the hook off with.
BOOTSTRAP = r"""
import os, resource, sys
def _install(cpu, mem, out):
    def limit(kind, soft, hard):  # never above a hard limit already in force (raising it would fail)
        old = resource.getrlimit(kind)[1]
        if old != resource.RLIM_INFINITY:
            soft, hard = min(soft, old), min(hard, old)
        resource.setrlimit(kind, (soft, hard))
    limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    if mem > 0:
        limit(resource.RLIMIT_AS, mem, mem)
    limit(resource.RLIMIT_FSIZE, out, out)
    limit(resource.RLIMIT_CORE, 0, 0)
    work = os.path.realpath(os.getcwd())
    blocked = frozenset(("socket.__new__", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "socket.connect", "socket.bind", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.startfile", "pty.spawn", "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit"))
    path_args = {"os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
                 "os.chown": (0,), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
                 "shutil.rmtree": (0,)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    def inside(path):
        if isinstance(path, int):
            return True  # an open descriptor: opening it was checked
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return real == work or real.startswith(work + os.sep) or real == os.devnull
    def hook(event, args):
        if event in blocked:
            raise PermissionError(f"{event} is not allowed in this tool (no network, programs, signals or limits)")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"writing {path!r} is not allowed in this tool (only the working directory)")
        elif event in path_args:
            for i in path_args[event]:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"{event} on {args[i]!r} is not allowed in this tool "
                                          "(only the working directory)")
    sys.addaudithook(hook)
_install(*(int(v) for v in sys.argv[1:4]))
with open(sys.argv[4], encoding="utf-8") as _f:
    _source = _f.read()
del _install, _f
sys.argv = ["<tool code>"]
exec(compile(_source, "<tool code>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class Limits:
    """Per-run limits: seconds of wall clock and of CPU, MiB of address space (0: none), bytes per output stream."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    output_bytes: int = 16384


@dataclass(frozen=True)
class CodeResult:
    """What a run did. status: ok | error (non-zero exit) | timeout | cpu_limit | memory_limit | output_limit |
    killed (another signal) | sandbox_error (the runner itself failed)."""

    status: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_s: float = 0.0
    detail: str = ""


def _read_capped(path: str, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def _classify(code: int | None, timed_out: bool, stderr: str, cut: bool, limits: Limits) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded, process killed"
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and not timed_out):
        return "cpu_limit", f"CPU time limit of {limits.cpu_s} s exceeded, process killed"
    if code == -signal.SIGXFSZ or (cut and code != 0):
        return "output_limit", f"output limit of {limits.output_bytes} bytes exceeded, process killed"
    if code != 0 and "MemoryError" in stderr[-2000:]:
        return "memory_limit", f"memory limit of {limits.memory_mb} MiB exceeded"
    if code is not None and code < 0:
        return "killed", f"killed by signal {signal.Signals(-code).name}"
    if code != 0:
        return "error", f"exit code {code}"
    return "ok", ""


def run_python(code: str, limits: Limits = Limits(), stdin: str = "") -> CodeResult:
    """Run `code` with `sys.executable -I` under `limits`; never raises for anything the code does."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="strive-tool-") as work:
        src, out_path, err_path = (os.path.join(work, n) for n in ("main.py", "stdout", "stderr"))
        with open(src, "w", encoding="utf-8") as f:
            f.write(code)
        mem = limits.memory_mb * 1024 * 1024 if limits.memory_mb > 0 else 0
        args = [sys.executable, "-I", "-B", "-c", BOOTSTRAP, str(max(1, int(limits.cpu_s))), str(mem),
                str(limits.output_bytes + 1), src]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": work, "TMPDIR": work}  # caches and temporary files land where writing is allowed
        timed_out = False
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=env,
                                        start_new_session=True)
                try:
                    proc.communicate(stdin.encode(), timeout=limits.wall_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
            stdout, cut_out = _read_capped(out_path, limits.output_bytes)
            stderr, cut_err = _read_capped(err_path, limits.output_bytes)
        except OSError as e:
            return CodeResult("sandbox_error", detail=f"could not run the code: {e}")
    status, detail = _classify(proc.returncode, timed_out, stderr, cut_out or cut_err, limits)
    return CodeResult(status, stdout, stderr, proc.returncode, time.monotonic() - start, detail)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def format_result(result: CodeResult) -> str:
    """The text the model sees: stdout, then stderr, then a bracketed line when the run did not end normally."""
    parts = [result.stdout, result.stderr]
    text = "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts)
    if result.status != "ok":
        text += f"[{result.status}: {result.detail}]" if result.detail else f"[{result.status}]"
    return text if text else "[no output]"
