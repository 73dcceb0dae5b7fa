"""The fault test hook (STRIVE_FAULT_INJECT) and the worker's host-memory budget, in one process."""

from __future__ import annotations

import time

import pytest

from strive.controller import faults
from strive.controller.faults import Fault, inject, parse
from strive.controller.host_memory import HostMemoryExceeded, MemoryBudget, current_rss_gb


def test_parse_reads_phase_rank_call_and_action():
    assert parse("phase:update_actor:rank:0:kill") == Fault("update_actor", 0, "kill")
    assert parse("phase:sync_weights:rank:1:call:2:kill") == Fault("sync_weights", 1, "kill", call=2)
    assert parse("phase:generate:rank:0:alloc:2.5") == Fault("generate", 0, "alloc", gib=2.5)
    assert parse("phase:generate:rank:1:hang").action == "hang"
    assert parse("phase:generate_ahead:rank:0:call:2:sleep:1.5") == Fault("generate_ahead", 0, "sleep", 2, 1.5)


@pytest.mark.parametrize("bad", ["phase:x:rank:0", "rank:0:kill", "phase:x:rank:0:boom", "phase:x:rank:a:kill",
                                 "phase:x:rank:0:alloc", "phase:x:rank:0:kill:kill",
                                 "phase:x:rank:0:sleep"])
def test_parse_refuses_a_malformed_value_naming_the_variable(bad):
    with pytest.raises(ValueError, match="STRIVE_FAULT_INJECT"):
        parse(bad)


def test_inject_is_inert_without_the_variable_and_counts_calls_with_it(monkeypatch):
    monkeypatch.delenv("STRIVE_FAULT_INJECT", raising=False)
    monkeypatch.setattr(faults, "_calls", {})
    monkeypatch.setattr(faults, "_held", [])
    inject("generate", 0)
    assert faults._calls == {}
    spec = "phase:generate:rank:0:call:2:alloc:0.05"
    inject("generate", 0, spec)  # call 1: not yet
    inject("generate", 1, spec)  # call 2, but another rank
    assert faults._held == []
    inject("generate", 0, spec)  # call 3 on rank 0 is past it
    assert faults._held == []
    monkeypatch.setattr(faults, "_calls", {})
    inject("generate", 0, spec)
    inject("generate", 0, spec)  # call 2 on rank 0: the block is taken
    assert len(faults._held) == 1 and len(faults._held[0]) == int(0.05 * 2**30)
    start = time.monotonic()
    inject("generate", 0, "phase:generate:rank:0:call:3:sleep:0.3")
    assert time.monotonic() - start >= 0.3


def _grow(step_mib: int = 64, steps: int = 40) -> str:
    held = []
    for _ in range(steps):
        block = bytearray(step_mib * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        held.append(block)
        time.sleep(0.02)
    return "finished"


def test_budget_stops_a_phase_that_grows_past_it_naming_phase_and_memory():
    base = current_rss_gb()
    budget = MemoryBudget(base + 0.5, rank=3)
    assert budget.run("fine", lambda: 7) == 7
    with pytest.raises(HostMemoryExceeded) as err:
        budget.run("update_actor", _grow)  # would reach base + 2.5 GiB
    text = str(err.value)
    assert text.startswith("rank 3 held ") and "during 'update_actor'" in text
    held = float(text.split(" held ")[1].split(" GiB")[0])
    assert base + 0.5 - 0.01 < held < base + 1.5  # stopped soon after crossing, not at the end (2 decimals shown)
    assert budget.run("next", lambda: "ok") == "ok"  # the next phase is not hit by a stale stop


def test_no_budget_runs_the_phase_untouched():
    assert MemoryBudget(None, rank=0).run("generate", _grow, 8, 4) == "finished"


def test_budget_check_after_a_phase_counts_what_is_still_held():
    budget = MemoryBudget(1e-3, rank=0)
    with pytest.raises(HostMemoryExceeded, match="during 'sync_weights'"):
        budget.check("sync_weights")
    MemoryBudget(None, rank=0).check("sync_weights")


def test_a_worker_killed_by_rays_memory_monitor_points_at_the_budget():
    from strive.controller.group import died_message

    ray_oom = ("The actor died unexpectedly before finishing this task. Task was killed due to the node running low "
               "on memory. Memory on the node was 22.9GB / 24GB (0.954), which exceeds the memory usage threshold")
    text = died_message("actor_rollout_ref", 1, "generate", ray_oom)
    assert text.startswith("actor_rollout_ref worker rank 1 died during 'generate': The actor died")
    assert "trainer.host_memory_limit_gb" in text
    plain = died_message("actor_rollout_ref", 0, "update_actor", "The actor died unexpectedly (SIGKILL)")
    assert plain == "actor_rollout_ref worker rank 0 died during 'update_actor': The actor died unexpectedly (SIGKILL)"
