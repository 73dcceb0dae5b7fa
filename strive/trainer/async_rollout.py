"""Generation ahead of training, bounded staleness: the queue between the rollout pool and the trainer.

With split placement (actor_rollout_ref.hybrid_engine=False) the engines have processes of their own, so the
controller can start generating the next batches (asynchronous Ray calls) while the trainer trains. Policy
version v is the trainer's weights after v updates; version 0 is pushed before the first step. A generation is
tagged with the version of the last weight push submitted before it: a rollout process runs its calls in the
order they were sent, so the engine holds exactly that version when it gets there. Per step k (the trainer about
to make version k from version k-1):

    top up:  submit generations of the next steps while fewer than trainer.max_staleness + 1 are outstanding
    take:    wait for the oldest (timing_s/gen_wait), check k-1 - its version ≤ max_staleness
    (train:  the loop's old log-probs, ref, values, advantages, updates; the trainer recomputes the old
             log-probs, so the PPO ratio corrects for staleness as in verl; the engine's own log-probs stay on
             the batch as rollout_log_probs)
    push:    version k, trainer rank 0 → every rollout rank (controller/transfer.py); the rollout processes take it
             after the generations already queued there, the trainer waits for them only inside the push

so max_staleness=0 is the synchronous loop, 1 is verl's one-step-off-policy, and in steady state every batch is
exactly max_staleness versions old. With partial rollout (async_training.partial_rollout, strive/workers/partial.py)
the push does not wait for the generations in flight: they stop at their next piece, and right after the push the
queue asks each rollout process to go on with them under the new weights (`continue_ahead`, queued behind the
push, so the engine holds the new version when it runs). A batch's tokens then come from more than one version;
the rollout processes record each token's (`Batch.token_versions`) and the bound applies to the oldest. `RolloutQueue` holds only this logic; `RayRollout` is its Ray side, and
tests/unit/test_async_rollout.py drives the queue with fakes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import torch

from strive.batch import Batch, split_evenly
from strive.controller.group import WorkerGroup, time_left
from strive.controller.process import WorkerProcess
from strive.controller.transfer import WeightTransferError
from strive.data.rl_dataset import PromptRow
from strive.engines import SamplingParams
from strive.trainer.metrics import mean_over_ranks
from strive.trainer.phases import agent_request, assemble
from strive.config.placement import PartialSettings


class RolloutBackend(Protocol):
    def submit_generate(self, rows: list[PromptRow], params: SamplingParams,
                        partial: Optional[PartialSettings]) -> Any: ...

    def submit_continue(self, handle: Any, params: SamplingParams, partial: PartialSettings) -> Any: ...

    def wait_generate(self, handle: Any, rows: list[PromptRow],
                      params: SamplingParams) -> tuple[Batch, float, dict[str, float]]: ...

    def submit_push(self, version: int) -> Any: ...

    def wait_push(self, handle: Any, version: int) -> dict[str, float]: ...


@dataclass
class Ahead:
    """One generation in flight: the step it is for, the version that generates it, the backend's handle."""

    step: int
    version: int
    rows: list[PromptRow]
    params: SamplingParams
    handle: Any
    data_state: Optional[dict] = None
    """The data sampler's state before this generation's prompts were drawn (what a checkpoint must keep)."""


class RolloutQueue:
    def __init__(self, backend: RolloutBackend, max_staleness: int, next_rows: Callable[[], list[PromptRow]],
                 params_for: Callable[[int], SamplingParams], last_step: int,
                 partial: Optional[PartialSettings] = None, data_state: Optional[Callable[[], dict]] = None):
        self.backend, self.max_staleness, self.partial = backend, max_staleness, partial
        self.data_state = data_state
        self.next_rows, self.params_for, self.last_step = next_rows, params_for, last_step
        self.version = -1
        """The last policy version pushed (-1: none yet)."""
        self.ahead: deque[Ahead] = deque()
        self.pushing: Optional[tuple[int, Any]] = None
        self.submitted = 0
        """The last step a generation was submitted for."""

    def start(self, step: int, version: int) -> dict[str, float]:
        """Before step `step` + 1: push the trainer's weights at `version` (0, or a resumed run's step)."""
        self.submitted = step
        return self.push(version, {})

    def take(self, step: int, timings: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        """The batch step `step` trains on, after topping up the generations ahead; its staleness metrics."""
        self.top_up()
        if not self.ahead or self.ahead[0].step != step:
            raise RuntimeError(f"rollout queue: step {step} asked for, next generation is for "
                               f"{self.ahead[0].step if self.ahead else 'nothing'}")
        item = self.ahead.popleft()
        start = time.perf_counter()
        batch, gen_seconds, info = self.backend.wait_generate(item.handle, item.rows, item.params)
        timings["gen_wait"] = time.perf_counter() - start
        timings["gen"] = gen_seconds
        oldest = oldest_versions(batch, item.version)  # (B,)
        staleness = (step - 1) - oldest  # (B,)
        if int(staleness.min()) < 0 or int(staleness.max()) > self.max_staleness:
            raise RuntimeError(f"rollout queue: step {step}'s batch was generated by versions "
                               f"{int(oldest.min())}..{int(oldest.max())}, up to {int(staleness.max())} versions old; "
                               f"trainer.max_staleness={self.max_staleness}")
        batch = batch.with_fields(policy_versions=oldest)
        metrics = {"async/staleness_mean": float(staleness.double().mean()),
                   "async/staleness_max": float(staleness.max()), "async/policy_version": float(oldest.min()),
                   "async/generations_ahead": float(len(self.ahead))}
        if self.partial is not None:
            metrics.update(partial_metrics(batch, step, info))
        return batch, metrics

    def top_up(self) -> None:
        """Submit generations for the next steps while fewer than max_staleness + 1 are outstanding."""
        while len(self.ahead) < self.max_staleness + 1 and self.submitted < self.last_step:
            self.submitted += 1
            state = self.data_state() if self.data_state is not None else None
            rows, params = self.next_rows(), self.params_for(self.submitted)
            self.ahead.append(Ahead(self.submitted, self.version, rows, params,
                                    self.backend.submit_generate(rows, params, self.partial), state))

    def checkpoint_data_state(self) -> Optional[dict]:
        """The data sampler's state a checkpoint taken now must hold: from before the prompts of the oldest
        generation in flight, so that a resumed run draws them again instead of skipping them (None: nothing in
        flight, the sampler's own state is right)."""
        return self.ahead[0].data_state if self.ahead else None

    def push(self, version: int, timings: dict[str, float]) -> dict[str, float]:
        """Send policy `version` to the rollout pool and wait for it: the rollout processes take it after the
        generations already queued there, so the wait is for those first (added to timings' gen_wait), then the
        broadcast itself (timing_s/weight_transfer)."""
        start = time.perf_counter()
        handle = self.backend.submit_push(version)
        self.version = version
        if self.partial is not None:  # behind the push on each rollout process: goes on under the new weights
            for item in self.ahead:
                item.handle = self.backend.submit_continue(item.handle, item.params, self.partial)
        metrics = self.backend.wait_push(handle, version)
        waited = time.perf_counter() - start
        timings["update_weights"] = waited
        timings["weight_transfer"] = metrics.pop("weight_transfer_s", 0.0)
        timings["gen_wait"] = timings.get("gen_wait", 0.0) + max(0.0, waited - timings["weight_transfer"])
        return metrics


class RayRollout:
    """The queue's Ray side: generations on the rollout group, weight pushes across the two groups."""

    def __init__(self, rollout: WorkerGroup, trainer: WorkerGroup, push_limit_s: Optional[float],
                 agent_loop: Optional[str] = None):
        """`agent_loop`: multi_turn.enable's default loop (every sample an agent-loop episode), else None."""
        self.rollout, self.trainer, self.push_limit_s = rollout, trainer, push_limit_s
        self.agent_loop = agent_loop

    def submit_generate(self, rows: list[PromptRow], params: SamplingParams,
                        partial: Optional[PartialSettings]) -> list:
        workers, world = self.rollout.workers, self.rollout.world_size
        if self.agent_loop is not None:  # episodes split evenly over the ranks (multi_turn.router=static)
            requests = [agent_request(rows[i // params.n], self.agent_loop) for i in range(len(rows) * params.n)]
            name = self.rollout.remote_name(WorkerProcess.generate_agent_ahead)
            return [getattr(w, name).remote(shard, params) for w, shard in zip(workers, split_evenly(requests, world))]
        shards = split_evenly([r.prompt_ids for r in rows], world)
        name = self.rollout.remote_name(WorkerProcess.generate_ahead)
        return [getattr(w, name).remote(shard, params, partial) for w, shard in zip(workers, shards)]

    def submit_continue(self, handle: list, params: SamplingParams, partial: PartialSettings) -> list:
        """Each rank's generation in flight, continued after the push just submitted (Ray hands the earlier
        call's result to the new call inside the rollout process; the controller never fetches it)."""
        name = self.rollout.remote_name(WorkerProcess.continue_ahead)
        return [getattr(w, name).remote(ref, params, partial) for w, ref in zip(self.rollout.workers, handle)]

    def wait_generate(self, handle: list, rows: list[PromptRow],
                      params: SamplingParams) -> tuple[Batch, float, dict[str, float]]:
        results = self.rollout.get(handle, "generate_ahead")  # a dead or hung rank: WorkerDied naming it
        unfinished = [r for r, (b, _, _) in enumerate(results) if not isinstance(b, Batch)]
        if unfinished:
            raise RuntimeError(f"rollout ranks {unfinished}: a generation was interrupted by a weight push and "
                               "never continued (partial rollout)")
        info: dict[str, float] = {}
        agent = None
        for _, _, part in results:
            if "agent" in part:  # per-episode statistics, in rank order like the batches
                agent = {k: (agent or {}).get(k, []) + v for k, v in part["agent"].items()}
            for key, value in part.items():
                if key != "agent":
                    info[key] = info.get(key, 0.0) + value
        batch = assemble(rows, [b for b, _, _ in results], params.n, agent)
        return batch, max(sec for _, sec, _ in results), info

    def submit_push(self, version: int) -> tuple[list, list]:
        recv = self.rollout.remote_name(WorkerProcess.receive_weights)
        send = self.trainer.remote_name(WorkerProcess.send_weights)
        return ([getattr(w, send).remote(version) for w in self.trainer.workers],
                [getattr(w, recv).remote(version) for w in self.rollout.workers])

    def wait_push(self, handle: tuple[list, list], version: int) -> dict[str, float]:
        """Every end of push `version` done; a failure, a death or the wait past its limit stops both groups and
        raises WeightTransferError naming the ranks."""
        import ray

        sends, recvs = handle
        refs = sends + recvs
        who = [f"trainer rank {r}" + (" (transfer rank 0)" if r == 0 else "") for r in range(len(sends))]
        who += [f"rollout rank {r} (transfer rank {r + 1})" for r in range(len(recvs))]
        pending, start = list(refs), time.monotonic()
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=time_left(self.push_limit_s, start))
            if not done:
                self.fail(f"{', '.join(who[refs.index(p)] for p in pending)} did not finish within "
                          f"{self.push_limit_s:g} s (trainer.phase_timeout_s + trainer.weight_transfer_timeout_s)",
                          version)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                self.fail(f"{who[refs.index(done[0])]} died: {str(exc).splitlines()[0]}", version)
            except Exception as exc:
                self.fail(f"{who[refs.index(done[0])]} failed: {_first_line(exc)}", version)
        sent, received = ray.get(sends)[0], ray.get(recvs)
        seconds = max(r["weight_sync/time_s"] for r in received)
        out = mean_over_ranks(received)
        out.update({"weight_transfer_s": seconds, "perf/weight_transfer_gb": sent["bytes"] / 1e9,
                    "perf/weight_transfer_gb_per_s": sent["bytes"] / max(seconds, 1e-9) / 1e9,
                    "perf/weight_broadcast_s": sent["seconds"]})
        return out

    def fail(self, what: str, version: int) -> None:
        self.trainer.kill()
        self.rollout.kill()
        raise WeightTransferError(f"weight transfer of policy version {version} (trainer → rollout pool): {what}; "
                                  "the trainer and rollout workers were stopped")


def oldest_versions(batch: Batch, fallback: int) -> torch.Tensor:
    """(B,) long: the oldest policy version among each response's tokens (token_versions, -1 on padding); a
    response with no tokens, or a batch without token_versions, gets `fallback` (the version the generation began
    under)."""
    if batch.token_versions is None:
        return torch.full((len(batch),), fallback, dtype=torch.long)
    tv = batch.token_versions  # (B, T)
    big = torch.iinfo(torch.long).max
    oldest = tv.masked_fill(tv < 0, big).min(dim=-1).values  # (B,)
    return torch.where(oldest == big, fallback, oldest)


def partial_metrics(batch: Batch, step: int, info: dict[str, float]) -> dict[str, float]:
    """Partial rollout: the share of responses a push interrupted, tokens dropped (resubmit), engine calls per
    generation, and the staleness of the average token (below the oldest token's when pushes cut responses)."""
    tv = batch.token_versions  # (B, T)
    valid = (tv >= 0).double() if tv is not None else None
    out = {"async/partial_interrupted_frac": info.get("interrupted", 0.0) / max(info.get("responses", 0.0), 1.0),
           "async/partial_dropped_tokens": info.get("dropped_tokens", 0.0),
           "async/partial_engine_calls": info.get("engine_calls", 0.0)}
    if valid is not None and float(valid.sum()) > 0:
        out["async/token_staleness_mean"] = float((((step - 1) - tv).double() * valid).sum() / valid.sum())
    return out


def _first_line(exc: Exception) -> str:
    """A worker's exception as Ray re-raises it starts with a traceback header; the message is what matters."""
    lines = [line for line in str(exc).splitlines() if "WeightTransferError" in line or "Error" in line]
    return lines[-1].strip() if lines else str(exc)
