"""Per-phase peak GPU memory (strive/controller/device_memory.py) against a fake allocator with torch's semantics:
one peak counter that reset_peak_memory_stats() brings down to what is allocated now."""

import pytest

from strive.controller.device_memory import GIB, PhasePeaks


class FakeAllocator:
    def __init__(self):
        self.now = self.peak = 0

    def alloc(self, gib: float) -> None:
        self.now += int(gib * GIB)
        self.peak = max(self.peak, self.now)

    def free(self, gib: float) -> None:
        self.now -= int(gib * GIB)

    def read(self):
        return self.peak, self.peak + GIB  # reserved: one GiB of cache above, enough to tell the two apart

    def reset(self):
        self.peak = self.now


def spike(peaks: PhasePeaks, fake: FakeAllocator, name: str, gib: float) -> None:
    """A phase that allocates `gib` and frees it before it ends."""
    with peaks.phase(name):
        fake.alloc(gib)
        fake.free(gib)


@pytest.fixture
def setup():
    fake = FakeAllocator()
    return fake, PhasePeaks(fake.read, fake.reset)


def test_each_phase_reports_its_own_peak_and_the_total_keeps_the_largest(setup):
    fake, peaks = setup
    fake.alloc(10)  # model weights, before any phase
    spike(peaks, fake, "generate", 5)
    spike(peaks, fake, "update_actor", 3)
    out = peaks.report()
    assert out["perf/max_memory_allocated_gb/generate"] == pytest.approx(15)
    assert out["perf/max_memory_allocated_gb/update_actor"] == pytest.approx(13)
    assert out["perf/max_memory_allocated_gb"] == pytest.approx(15)  # the reset before update_actor lost nothing
    assert out["perf/max_memory_reserved_gb"] == pytest.approx(16)


def test_per_phase_peaks_start_afresh_each_report_but_the_total_does_not(setup):
    fake, peaks = setup
    spike(peaks, fake, "update_actor", 8)
    peaks.report()
    spike(peaks, fake, "compute_values", 2)
    out = peaks.report()
    assert "perf/max_memory_allocated_gb/update_actor" not in out
    assert out["perf/max_memory_allocated_gb/compute_values"] == pytest.approx(2)
    assert out["perf/max_memory_allocated_gb"] == pytest.approx(8)


def test_a_phase_opened_inside_another_does_not_hide_the_outer_peak(setup):
    fake, peaks = setup
    with peaks.phase("outer"):
        fake.alloc(6)
        fake.free(6)
        spike(peaks, fake, "inner", 1)  # resets the counter: the outer phase's 6 GiB must be kept first
    out = peaks.report()
    assert out["perf/max_memory_allocated_gb/outer"] == pytest.approx(6)
    assert out["perf/max_memory_allocated_gb/inner"] == pytest.approx(1)


def test_a_phase_run_twice_in_a_step_reports_the_larger(setup):
    fake, peaks = setup
    for gib in (2, 7, 4):
        spike(peaks, fake, "compute_log_probs", gib)
    assert peaks.report()["perf/max_memory_allocated_gb/compute_log_probs"] == pytest.approx(7)


def test_a_phase_that_raises_still_records_its_peak(setup):
    fake, peaks = setup
    with pytest.raises(RuntimeError):
        with peaks.phase("update_critic"):
            fake.alloc(9)
            raise RuntimeError("out of memory")
    assert peaks.report()["perf/max_memory_allocated_gb/update_critic"] == pytest.approx(9)


def test_on_the_cpu_nothing_is_read_or_reported():
    peaks = PhasePeaks.for_device("cpu")
    with peaks.phase("update_actor"):
        pass
    assert peaks.report() == {}


@pytest.mark.skipif(PhasePeaks.for_host()._read is None, reason="needs Linux's VmHWM and /proc/self/clear_refs")
def test_host_peaks_per_phase_from_the_process_resident_peak():
    """The real counter: a phase that touches 300 MiB and frees it reports that peak; a later small phase reports
    less; the run's peak survives the resets (which also lower getrusage's ru_maxrss)."""
    import numpy as np

    peaks = PhasePeaks.for_host()
    peaks.report()
    with peaks.phase("big"):
        block = np.ones(300 * 2**20, dtype=np.uint8)  # touched, so resident
        del block
    with peaks.phase("small"):
        pass
    out = peaks.report()
    assert set(out) == {"perf/cpu_memory_used_gb", "perf/cpu_memory_used_gb/big", "perf/cpu_memory_used_gb/small"}
    assert out["perf/cpu_memory_used_gb/big"] - out["perf/cpu_memory_used_gb/small"] > 0.25
    assert out["perf/cpu_memory_used_gb"] >= out["perf/cpu_memory_used_gb/big"]
