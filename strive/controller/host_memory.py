"""The worker process's host memory: what it holds now, and handing freed heap back to the OS.

glibc keeps the heap a phase freed for later reuse. In a CPU run (Qwen 0.5B, vLLM in the worker, 24 GB host) the
worker held 12.5 GB at one step's generation and 15.3 GB at the next, and such runs were killed by Ray every few
steps; malloc_trim on that worker took it from 16.6 to 12.9 GB. So every phase of a worker ends with a trim.
A budget (trainer.host_memory_limit_gb, off by default) turns a worker that grows past it into an error naming
the phase and the memory held, instead of a generic kill by Ray's memory monitor later.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from typing import Callable, Optional, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def current_rss_gb() -> Optional[float]:
    """Resident memory of this process now, in GiB (None off Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return None


@functools.lru_cache(maxsize=None)
def malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None (musl, macOS)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def peak_rss_counter() -> Optional[tuple[Callable[[], tuple[int, int]], Callable[[], None]]]:
    """(read, reset) of this process's peak resident memory, for device_memory.PhasePeaks: read() -> (VmHWM, VmHWM)
    bytes; reset() brings VmHWM down to the resident memory now (writing 5 to /proc/self/clear_refs, Linux). None
    where either cannot be done. A reset also lowers getrusage's ru_maxrss, so whoever resets must keep the
    run's peak itself (PhasePeaks does)."""
    def read() -> tuple[int, int]:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
        return kib * 1024, kib * 1024

    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    try:
        read()
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return (read, reset) if os.access("/proc/self/clear_refs", os.W_OK) else None


def trims_heap(phase: Callable[P, R]) -> Callable[P, R]:
    """Decorator: after `phase` returns, give the heap's free pages back to the OS."""
    @functools.wraps(phase)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        result = phase(*args, **kwargs)
        trim = malloc_trim()
        if trim is not None:
            trim(0)
        return result
    return run


class HostMemoryExceeded(RuntimeError):
    """A worker held more host memory during a phase than trainer.host_memory_limit_gb allows."""


class _OverBudget(BaseException):
    """Raised in the phase's own thread by the sampler (a BaseException, so no `except Exception` swallows it)."""


class MemoryBudget:
    """trainer.host_memory_limit_gb, enforced in the worker: while a phase runs a thread samples this process's
    resident memory every `interval_s`, and the first sample over the budget stops the phase with
    HostMemoryExceeded naming the phase and both numbers; the driver then stops the run. Ray's own memory monitor
    kills a worker only when the whole node is nearly full (RAY_memory_usage_threshold, 0.95) and its message
    cannot say which phase grew; a budget below that point turns the same failure into this message first.
    A phase blocked inside one long C call (a big matmul) is stopped when that call returns."""

    def __init__(self, limit_gb: Optional[float], rank: int, interval_s: float = 0.1):
        self.limit_gb, self.rank, self.interval_s = limit_gb, rank, interval_s
        self._lock = threading.Lock()
        self._phase: Optional[str] = None
        self._thread_id = 0
        self._over: Optional[float] = None

    def run(self, phase: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` as phase `phase`, stopped with HostMemoryExceeded once it holds too much."""
        if not self.limit_gb:
            return fn(*args, **kwargs)
        with self._lock:
            self._phase, self._thread_id, self._over = phase, threading.get_ident(), None
        stop = threading.Event()  # the sampler lives as long as the phase: no thread outlives its process's work
        sampler = threading.Thread(target=self._sample, args=(stop,), name="strive-memory-budget", daemon=True)
        sampler.start()
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                with self._lock:  # after this the sampler raises nothing more
                    self._phase = None
                    if self._over is not None:  # cancel a raise the thread has not reached yet
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)
        except _OverBudget:  # delivered anywhere above, the `finally` included
            pass
        finally:
            stop.set()
            sampler.join()
        if self._over is not None:
            raise HostMemoryExceeded(self.message(phase, self._over))
        return result

    def check(self, phase: str) -> None:
        """After a phase (and its heap trim): what the process still holds must fit the budget too."""
        rss = current_rss_gb() if self.limit_gb else None
        if rss is not None and rss > self.limit_gb:
            raise HostMemoryExceeded(self.message(phase, rss))

    def message(self, phase: str, rss: float) -> str:
        return (f"rank {self.rank} held {rss:.2f} GiB of host memory (resident set) during '{phase}', over the "
                f"budget trainer.host_memory_limit_gb={self.limit_gb:g}")

    def _sample(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            with self._lock:
                if self._phase is None or self._over is not None:
                    continue
                rss = current_rss_gb()
                if rss is not None and rss > self.limit_gb:
                    self._over = rss
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                               ctypes.py_object(_OverBudget))
