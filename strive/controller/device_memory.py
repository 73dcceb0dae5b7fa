"""Peak GPU and host memory of each worker phase, so a step's metrics say which phase sets the peak.

torch keeps one peak counter per device. `PhasePeaks` folds that counter into every phase still running before it
resets it at a phase's start, and again at the phase's end, so each phase reports the most memory allocated while it
ran (other phases running beside it in threads included) and the run's peak since start-up is never lost. Reading
and resetting the counter are host-side allocator calls: no device sync.

The host's counterpart is the process's peak resident memory (VmHWM), which Linux lets a process reset
(host_memory.peak_rss_counter); it has no separate "reserved" figure.

Metrics, per step and rank (the trainer takes the maximum over ranks):
    perf/max_memory_allocated_gb                  the peak since the process started (verl's key)
    perf/max_memory_allocated_gb/<phase>          the peak while <phase> ran, in phases since the last report
    perf/cpu_memory_used_gb                       the host's peak resident memory since start-up
    perf/cpu_memory_used_gb/<phase>               the same while <phase> ran
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

GIB = 2**30


class PhasePeaks:
    def __init__(self, read: Callable[[], tuple[int, int]] | None, reset: Callable[[], None] | None,
                 key: str = "perf/max_memory_allocated_gb", reserved_key: str | None = "perf/max_memory_reserved_gb"):
        """read() -> (peak allocated, peak reserved) bytes since the last reset(); None for both where nothing is
        measured. `key` names the metrics (key, key/<phase>), `reserved_key` the reserved peak (None: not reported)."""
        self._read, self._reset = read, reset
        self._key, self._reserved_key = key, reserved_key
        self._lock = threading.Lock()
        self._running: dict[int, int] = {}  # token of each phase running now -> its peak so far
        self._next = 0
        self.total_allocated = self.total_reserved = 0
        self.reported: dict[str, int] = {}  # phase -> peak, phases ended since the last report()

    @classmethod
    def for_device(cls, device_type: str) -> "PhasePeaks":
        if device_type != "cuda":
            return cls(None, None)
        import torch

        return cls(lambda: (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()),
                   torch.cuda.reset_peak_memory_stats)

    @classmethod
    def for_host(cls) -> "PhasePeaks":
        from strive.controller.host_memory import peak_rss_counter

        counter = peak_rss_counter()
        read, reset = counter if counter is not None else (None, None)
        return cls(read, reset, key="perf/cpu_memory_used_gb", reserved_key=None)

    def _fold(self) -> None:
        allocated, reserved = self._read()
        self.total_allocated = max(self.total_allocated, allocated)
        self.total_reserved = max(self.total_reserved, reserved)
        for token, peak in self._running.items():
            self._running[token] = max(peak, allocated)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._read is None:
            yield
            return
        with self._lock:
            self._fold()
            self._reset()
            token, self._next = self._next, self._next + 1
            self._running[token] = 0
        try:
            yield
        finally:
            with self._lock:
                self._fold()
                peak = self._running.pop(token)
                self.reported[name] = max(self.reported.get(name, 0), peak)

    def report(self) -> dict[str, float]:
        """The metrics above (empty where nothing is measured); per-phase peaks start afresh after each report."""
        if self._read is None:
            return {}
        with self._lock:
            self._fold()
            out = {self._key: self.total_allocated / GIB}
            if self._reserved_key:
                out[self._reserved_key] = self.total_reserved / GIB
            out.update({f"{self._key}/{name}": peak / GIB for name, peak in self.reported.items()})
            self.reported = {}
        return out
