"""A group of worker processes and the calls that cross them.

Calls are explicit at the call site: `group.call("update_actor", shards, step)` sends shard r to rank r;
`group.call_all("sync_weights")` sends the same arguments to every rank. Results come back in rank order.
A rank that dies (a crash, an out-of-memory kill) surfaces as `WorkerDied` naming the rank and the phase,
and the other ranks are killed rather than left hanging in a collective.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from strive.config.schema import StriveConfig
from strive.controller.cluster import Placement
from strive.controller.process import ProcessSpec, WorkerProcess


class WorkerDied(RuntimeError):
    pass


class WorkerGroup:
    def __init__(self, name: str, placement: Placement, roles: tuple[str, ...], cfg: StriveConfig, seed: int = 0,
                 process_cls: type = WorkerProcess):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.name = name
        world = len(placement.node_ids)
        remote_cls = ray.remote(process_cls)
        self.workers = []
        for rank, node_id in enumerate(placement.node_ids):
            resources = {"num_gpus": 1, "num_cpus": 1} if placement.resource == "GPU" else {"num_cpus": 1}
            strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            spec = ProcessSpec(rank, world, roles, cfg.trainer.device, seed=seed + rank)
            self.workers.append(remote_cls.options(name=None, scheduling_strategy=strategy, max_concurrency=1,
                                                   **resources).remote(spec))
        self.node_ids = list(placement.node_ids)
        master = self.get([self.workers[0].address.remote()], "rendezvous")[0]
        self.get([w.init_distributed.remote(master, cfg.actor_rollout_ref.nccl_timeout) for w in self.workers],
                 "init_distributed")

    def describe(self) -> str:
        """Which node hosts each rank, e.g. for the start-up log."""
        import ray

        addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        ranks = ", ".join(f"rank {r} → node {nid[:8]} ({addresses.get(nid, '?')})" for r, nid in enumerate(self.node_ids))
        return f"{self.name}: {ranks}"

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def call(self, method: str, shards: Sequence[Any], *args: Any) -> list[Any]:
        """Rank r runs `method(shards[r], *args)`."""
        refs = [getattr(w, method).remote(shard, *args) for w, shard in zip(self.workers, shards)]
        return self.get(refs, method)

    def call_all(self, method: str, *args: Any) -> list[Any]:
        refs = [getattr(w, method).remote(*args) for w in self.workers]
        return self.get(refs, method)

    def get(self, refs: list, what: str) -> list[Any]:
        """Wait for all ranks; on the first failure stop the others and raise, instead of hanging."""
        import ray
        from ray.exceptions import RayActorError

        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=None)
            try:
                ray.get(done)
            except RayActorError as exc:
                rank = refs.index(done[0])
                self.kill()
                raise WorkerDied(f"{self.name} worker rank {rank} died during '{what}': {exc}") from None
            except Exception:
                self.kill()
                raise
        return ray.get(refs)

    def kill(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:
                pass

    def shutdown(self) -> None:
        import ray

        try:
            ray.get([w.shutdown.remote() for w in self.workers], timeout=30)
        except Exception:
            pass
        self.kill()
        time.sleep(0.1)
