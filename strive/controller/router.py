"""Least-loaded routing of a step's rollout requests over the rollout ranks, in chunks.

Why it exists: splitting a step's requests evenly over ranks up front lets one rank that drew long multi-turn
episodes hold the whole step while the others wait. `route` cuts the requests into more pieces than there are
ranks and hands the next piece to whichever rank finishes first, so the ranks finish at about the same time.

What it chose:
- chunks, not single requests: each chunk is still one batched agent-loop call on its rank (its TurnBatcher
  batches the chunk's turns), so the engines keep batching; `chunks_per_rank` trades balance for batch size;
- every chunk has a fixed seed (the step's seed and its chunk number), so which rank serves it does not change
  what is sampled: a resumed run samples what an uninterrupted one did;
- results come back in request order, whatever order the chunks finished in;
- a rank that dies stops the step with `WorkerDied` naming that rank, and trainer.phase_timeout_s bounds the
  routed phase, as in every other phase (WorkerGroup.result / timed_out).

Opt-in (`rollout.multi_turn.router=least_loaded`); the default stays the even split, see docs/multiturn.md for
what each measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from strive.batch import split_evenly
from strive.controller.group import WorkerGroup, time_left
from strive.engines.base import SamplingParams

ROUTERS = ("static", "least_loaded")


def chunk_params(params: SamplingParams, chunk: int) -> SamplingParams:
    """The sampling settings of chunk `chunk`: seeded from the step's seed and the chunk number."""
    return params if params.seed is None else replace(params, seed=params.seed + 104_729 * (chunk + 1))


def route(group: WorkerGroup, method: Callable, requests: Sequence[Any], params: SamplingParams,
          chunks_per_rank: int = 4) -> list[Any]:
    """Run `method(chunk, params_of_chunk, False)` over chunks of `requests` on the ranks of `group`, each rank
    taking the next chunk when it is free; one result per chunk, in chunk order."""
    import time

    import ray

    name = group.remote_name(method)
    chunks = [c for c in split_evenly(list(requests), max(1, group.world_size * chunks_per_rank)) if c]
    results: list[Any] = [None] * len(chunks)
    in_flight: dict[Any, tuple[int, int]] = {}  # ref -> (chunk, rank)
    next_chunk, began, limit = 0, time.monotonic(), group.time_limit(name)

    def start(rank: int) -> None:
        nonlocal next_chunk
        if next_chunk < len(chunks):
            worker = getattr(group.workers[rank], name)
            ref = worker.remote(chunks[next_chunk], chunk_params(params, next_chunk), False)
            in_flight[ref] = (next_chunk, rank)
            next_chunk += 1

    for rank in range(group.world_size):
        start(rank)
    while in_flight:  # trainer.phase_timeout_s bounds the whole routed phase, as it bounds a plain one
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=time_left(limit, began))
        if not done:
            group.timed_out(sorted(rank for _, rank in in_flight.values()), name, limit, began)
        chunk, rank = in_flight.pop(done[0])
        results[chunk] = group.result(done[0], rank, name)
        start(rank)
    return results
