"""Ray processes that go away when the driver that started them dies.

When strive starts a local Ray cluster, the GCS and the raylet die with the driver (Ray starts them with
PR_SET_PDEATHSIG), and the workers follow the raylet within seconds. The raylet's two agents (dashboard agent,
runtime-env agent) do not: after a driver SIGKILL they stayed orphaned and listening for about 60 s (they notice
the raylet is gone, then wait on the dead GCS before exiting). So the driver starts this small watchdog beside
the cluster, in a session of its own: while the driver lives it notes, once a second, the driver's Ray
processes (its children from the ray package and everything below them; another child, such as a logger's
upload service, is left to finish); when the driver is gone (its end of a pipe closes, however it died) it SIGKILLs the ones still
alive that it saw, checked by start time so that a reused pid is never hit. Measured on 2 CPU cores: the agents
are gone about 0.5 s after the driver's SIGKILL (tests/reliability/test_process_faults.py).

Run by strive itself: `python -m strive.controller.reaper DRIVER_PID` with the pipe as its stdin.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from typing import Optional

SCAN_INTERVAL_S = 1.0


def proc_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, start time in clock ticks) of every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(name)] = (int(fields[1]), int(fields[19]))  # ppid is field 4, starttime field 22 of stat
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """pid → start time of every process below `root` in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return found


def ray_subtrees(driver_pid: int, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """pid → start time of the driver's Ray children (GCS, raylet, monitors: binaries and scripts of the ray
    package) and of everything below them (agents, workers, what a worker started). Other children of the
    driver, e.g. a logger's upload service that should finish its work, are not the reaper's."""
    found = {}
    for pid, (ppid, start) in table.items():
        if ppid == driver_pid and _is_ray(pid):
            found[pid] = start
            found.update(descendants(pid, table))
    return found


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return cmd.startswith("ray::") or f"{os.sep}ray{os.sep}" in cmd


def watch(driver_pid: int, pipe_fd: int = 0) -> int:
    """Note the driver's Ray processes until `pipe_fd` reaches end of file, then kill those still alive."""
    seen: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([pipe_fd], [], [], SCAN_INTERVAL_S)
        if readable and not os.read(pipe_fd, 4096):
            break  # the driver is gone: its write end closed
        seen.update(ray_subtrees(driver_pid, proc_table()))
    table = proc_table()
    for pid, start in list(seen.items()):  # the survivors' own children too (a worker's helper, say)
        if table.get(pid, (0, None))[1] == start:
            seen.update(descendants(pid, table))
    killed = 0
    for pid, start in seen.items():
        if pid != os.getpid() and table.get(pid, (0, None))[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def start_reaper(driver_pid: Optional[int] = None) -> Optional[subprocess.Popen]:
    """Start the watchdog for this driver (Linux only; elsewhere None). The pipe's write end stays open in this
    process only (not inheritable), so it closes exactly when this process ends."""
    if not sys.platform.startswith("linux"):
        return None
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "strive.controller.reaper", str(driver_pid or os.getpid())],
                                stdin=read_fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        os.close(read_fd)
    _KEEP.append(write_fd)
    return proc


_KEEP: list[int] = []  # the write ends, held open for the life of the driver


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver is not for the watchdog
    watch(int(sys.argv[1]))
