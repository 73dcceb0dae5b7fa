"""Process faults during a real run (entry point, tiny model, GRPO on 2 CPU worker processes): a worker killed
in generation, the update or the weight sync; a worker that hangs; a worker over its host-memory budget; the
driver killed. Each must end the run with an error naming what happened, and leave no Ray process behind.
The faults are placed with the test hook STRIVE_FAULT_INJECT (strive/controller/faults.py); docs/reliability.md
holds the table with the times measured here."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from strive.controller.faults import parse
from tests.e2e.helpers import env
from tests.reliability.conftest import grpo_overrides

GONE_WITHIN_S = 15  # every process under the driver, after it exits


def _injected(run, timeout: float = 300) -> float:
    """Seconds from start to the fault: when the worker's announcement reaches the driver's output (Ray forwards
    worker output with a lag), or, where the run ended before it arrived, the run's end (the fault's effect is
    then checked by its message alone)."""
    at = run.wait_for("STRIVE_FAULT_INJECT:", timeout, or_exit=True)
    return time.monotonic() - run.started if at is None else at


@pytest.mark.parametrize("phase, spec", [
    ("generate", "phase:generate:rank:0:kill"),
    ("update_actor", "phase:update_actor:rank:1:kill"),  # two optimizer steps a step: not the on-policy bypass
    ("sync_weights", "phase:sync_weights:rank:0:call:2:kill"),  # call 1 is the sync right after start-up
])
def test_worker_killed_in_a_phase_stops_the_run_naming_it(fault_run, fault_data, tiny_model_dir, tmp_path, phase,
                                                          spec):
    run = fault_run(grpo_overrides(tiny_model_dir, fault_data, tmp_path / "ckpt"), env={"STRIVE_FAULT_INJECT": spec})
    injected = _injected(run)
    rc = run.wait(180)
    took = time.monotonic() - run.started - injected
    out = run.output()
    assert rc != 0
    fault = parse(spec)
    assert fault.phase == phase
    assert f"WorkerDied: actor_rollout_ref worker rank {fault.rank} died during '{phase}'" in out, out[-3000:]
    assert "Ray's memory monitor killed it" not in out  # a SIGKILL is not taken for an out-of-memory kill
    assert took < 60
    assert run.survivors(within=GONE_WITHIN_S) == []
    print(f"\n{phase}: fault at {injected:.1f} s, driver exited {took:.1f} s later")


def test_hung_worker_times_out_with_a_clear_error(fault_run, fault_data, tiny_model_dir, tmp_path):
    overrides = grpo_overrides(tiny_model_dir, fault_data, tmp_path / "ckpt") + ["trainer.phase_timeout_s=15"]
    run = fault_run(overrides, env={"STRIVE_FAULT_INJECT": "phase:generate:rank:1:hang"})
    injected = _injected(run)
    rc = run.wait(180)
    waited = time.monotonic() - run.started - injected
    out = run.output()
    assert rc != 0
    assert ("PhaseTimeout: actor_rollout_ref worker rank(s) 1 did not finish 'generate' within "
            "trainer.phase_timeout_s=15 (waited") in out, out[-3000:]
    assert float(re.search(r"\(waited ([\d.]+) s\)", out).group(1)) >= 15
    assert waited < 15 + 30
    assert run.survivors(within=GONE_WITHIN_S) == []
    print(f"\nhang: driver exited {waited:.1f} s after the fault")


def test_worker_over_its_host_memory_budget_names_phase_and_memory(fault_run, fault_data, tiny_model_dir, tmp_path):
    # a tiny-model worker holds ~0.5 GiB; 1.5 GiB more in the update puts it over a 1.25 GiB budget
    overrides = grpo_overrides(tiny_model_dir, fault_data, tmp_path / "ckpt") + ["trainer.host_memory_limit_gb=1.25"]
    run = fault_run(overrides, env={"STRIVE_FAULT_INJECT": "phase:update_actor:rank:0:alloc:1.5"})
    injected = _injected(run)
    rc = run.wait(180)
    took = time.monotonic() - run.started - injected
    out = run.output()
    assert rc != 0
    found = re.search(r"HostMemoryExceeded: actor_rollout_ref worker rank 0 held ([\d.]+) GiB of host memory "
                      r"\(resident set\) during 'update_actor', over the budget "
                      r"trainer.host_memory_limit_gb=1.25", out)
    assert found, out[-3000:]
    assert float(found.group(1)) > 1.25
    assert run.survivors(within=GONE_WITHIN_S) == []
    print(f"\nmemory: driver exited {took:.1f} s after the fault")


def test_driver_killed_leaves_no_ray_process_behind(fault_run, fault_data, tiny_model_dir, tmp_path):
    run = fault_run(grpo_overrides(tiny_model_dir, fault_data, tmp_path / "ckpt", steps=50))
    run.wait_for("[step 1/", 300)
    assert len(run.worker_pids()) == 2
    run.kill_driver()
    gone = run.time_until_gone(limit=90)
    left = run.survivors(within=0)
    assert left == [], f"still running {gone:.0f} s after the driver's SIGKILL: {left}"
    assert gone < GONE_WITHIN_S
    print(f"\ndriver SIGKILL: all its Ray processes gone after {gone:.1f} s")


REAPED_DRIVER = """
import subprocess, sys, time
from strive.controller.reaper import start_reaper
ray_like = subprocess.Popen(["sh", sys.argv[1]])     # its command line names a ray/ folder, as Ray's own do
other = subprocess.Popen(["sleep", "300"])           # not Ray's: a logger's upload service, say
start_reaper()
time.sleep(2.5)  # the watchdog notes the tree once a second
print(ray_like.pid, other.pid, flush=True)
time.sleep(300)
"""


def test_reaper_kills_the_ray_processes_of_a_killed_driver_and_nothing_else(tmp_path):
    script = tmp_path / "ray" / "fake_raylet.sh"
    script.parent.mkdir()
    script.write_text("sleep 300 &\nwait\n")  # a child of its own, as the raylet has its workers
    driver = subprocess.Popen([sys.executable, "-c", REAPED_DRIVER, str(script)], env=env(), stdout=subprocess.PIPE,
                              text=True)
    ray_like = other = below = 0
    try:
        ray_like, other = (int(p) for p in driver.stdout.readline().split())
        below = int(subprocess.run(["pgrep", "-P", str(ray_like)], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
        driver.kill()
        driver.wait()
        start = time.monotonic()
        while time.monotonic() - start < 10 and (_runs(ray_like) or _runs(below)):
            time.sleep(0.1)
        assert not _runs(ray_like) and not _runs(below)
        assert time.monotonic() - start < 5
        assert _runs(other)
    finally:
        driver.kill()
        driver.wait()
        for pid in (p for p in (ray_like, other, below) if p):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _runs(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
