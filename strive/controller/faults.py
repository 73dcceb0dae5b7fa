"""A test hook that breaks one worker phase on purpose: STRIVE_FAULT_INJECT, inert unless set.

The reliability suite (tests/reliability/) needs a worker to die, hang or swell at a known phase of a real run,
which a signal sent from outside cannot time reliably. Each worker phase calls `inject` as it starts; with the
variable unset that is one dictionary lookup and nothing else. The value names the phase, the rank, optionally
which call of that phase in the process (1 = the first; default 1), and what to do:

    STRIVE_FAULT_INJECT=phase:update_actor:rank:0:kill             # SIGKILL the worker
    STRIVE_FAULT_INJECT=phase:sync_weights:rank:1:call:2:kill      # the second weight sync (the first follows start-up)
    STRIVE_FAULT_INJECT=phase:generate:rank:0:hang                 # never return
    STRIVE_FAULT_INJECT=phase:compute_log_probs:rank:0:alloc:3     # hold 3 more GiB of host memory, then go on
    STRIVE_FAULT_INJECT=phase:generate_ahead:rank:0:call:2:sleep:20  # start 20 s late (a slow engine)

Phase names are the `WorkerProcess` method names (generate, compute_log_probs, compute_ref_log_probs,
compute_values, update_critic, update_actor, update_actor_on_policy, sync_weights, release_rollout). The driver
passes the variable to its workers (controller/cluster.py: PASS_THROUGH). docs/reliability.md lists what each
fault does to a run.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Optional

ENV = "STRIVE_FAULT_INJECT"
ACTIONS = ("kill", "hang", "alloc", "sleep")

_calls: dict[str, int] = {}
_held: list[bytearray] = []  # memory taken by `alloc`, kept alive for the rest of the process


@dataclass(frozen=True)
class Fault:
    phase: str
    rank: int
    action: str
    call: int = 1
    gib: float = 0.0
    """GiB to hold (alloc) or seconds to wait (sleep)."""


def parse(value: str) -> Fault:
    """`phase:NAME:rank:R[:call:N]:ACTION[:GIB]` → Fault; a malformed value is an error naming the variable."""
    parts, fields, action, gib = value.strip().split(":"), {}, None, 0.0
    try:
        i = 0
        while i < len(parts):
            if parts[i] in ("phase", "rank", "call"):
                fields[parts[i]] = parts[i + 1]
                i += 2
            elif parts[i] in ACTIONS and action is None:
                action = parts[i]
                takes_number = action in ("alloc", "sleep")
                gib = float(parts[i + 1]) if takes_number else 0.0
                i += 2 if takes_number else 1
            else:
                raise ValueError
        if action is None or "phase" not in fields:
            raise ValueError
        return Fault(fields["phase"], int(fields.get("rank", 0)), action, int(fields.get("call", 1)), gib)
    except (ValueError, IndexError):
        raise ValueError(f"{ENV}={value!r}: expected phase:NAME:rank:R[:call:N]:ACTION with ACTION one of "
                         "kill, hang, alloc:GIB, sleep:SECONDS") from None


def inject(phase: str, rank: int, spec: Optional[str] = None) -> None:
    """Called as worker phase `phase` starts on rank `rank`: carries out the fault the variable names, if it is
    this phase, this rank and this call."""
    value = os.environ.get(ENV) if spec is None else spec
    if not value:
        return
    fault = parse(value)
    _calls[phase] = _calls.get(phase, 0) + 1
    if fault.phase != phase or fault.rank != rank or fault.call != _calls[phase]:
        return
    print(f"[strive] {ENV}: {fault.action} in '{phase}' on rank {rank} (call {fault.call})", flush=True)
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.action == "hang":
        while True:
            time.sleep(60)
    elif fault.action == "sleep":
        time.sleep(fault.gib)
    else:
        block = bytearray(int(fault.gib * 2**30))
        for i in range(0, len(block), 4096):  # touch every page so it is resident, not just reserved
            block[i] = 1
        _held.append(block)
