"""Per-phase peak GPU memory (strive/controller/device_memory.py) with torch's real allocator counters."""

import pytest
import torch

from strive.controller.device_memory import GIB, PhasePeaks

pytestmark = pytest.mark.gpu


def test_phases_report_their_own_peaks_and_the_total_survives_the_resets():
    torch.cuda.synchronize()
    peaks = PhasePeaks.for_device("cuda")
    base = torch.cuda.memory_allocated()
    with peaks.phase("big"):
        x = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
        del x
    with peaks.phase("small"):
        y = torch.empty(GIB // 4, dtype=torch.uint8, device="cuda")
        del y
    out = peaks.report()
    assert out["perf/max_memory_allocated_gb/big"] >= (base + 2 * GIB) / GIB - 1e-3
    assert out["perf/max_memory_allocated_gb/small"] < (base + GIB // 2) / GIB  # the 2 GiB of "big" is not counted
    assert out["perf/max_memory_allocated_gb"] >= out["perf/max_memory_allocated_gb/big"]
    assert "perf/max_memory_allocated_gb/big" not in peaks.report()
