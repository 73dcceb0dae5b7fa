"""A group of worker processes and the calls that cross them.

Calls are explicit at the call site and name the method itself, not a string:
`group.call(WorkerProcess.update_actor, shards, step)` sends shard r to rank r, and
`group.call_all(WorkerProcess.sync_weights)` sends the same arguments to every rank. Results come back in rank
order. An editor's go-to-definition follows the call to the worker, and a type checker checks the arguments
against the method's signature (ParamSpec); a method the process class does not have fails before anything is sent.
A rank that dies (a crash, an out-of-memory kill) surfaces as `WorkerDied` naming the rank and the phase,
and the other ranks are killed rather than left hanging in a collective; a phase that does not return within
trainer.phase_timeout_s surfaces as `PhaseTimeout` (a WorkerDied) the same way, and a worker over
trainer.host_memory_limit_gb as `HostMemoryExceeded` naming the group, rank, phase and memory.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Concatenate, NoReturn, Optional, ParamSpec, Sequence, TypeVar

from strive.config.schema import StriveConfig
from strive.controller.cluster import Placement
from strive.controller.host_memory import HostMemoryExceeded
from strive.controller.process import ProcessSpec, WorkerProcess


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


UNBOUNDED = ("rendezvous", "init_distributed", "build")
"""Start-up calls, which trainer.phase_timeout_s does not bound: starting the processes and loading the models
takes as long as the cluster and the model size make it (a download, a 70B checkpoint from a slow disk)."""


PEER_GRACE_S = 10.0
"""How long a rank's failed call waits for the other ranks to report a death that would explain it (`dead_peer`)."""


class WorkerDied(RuntimeError):
    pass


class PhaseTimeout(WorkerDied):
    """A phase that did not return within trainer.phase_timeout_s on some rank (a hung worker)."""


def died_message(group: str, rank: int, what: str, error: str) -> str:
    """WorkerDied's text; where Ray's memory monitor killed the worker, what strive's own budget would add."""
    text = f"{group} worker rank {rank} died during '{what}': {error}"
    if any(sign in error for sign in ("low on memory", "RAY_memory_usage_threshold", "OutOfMemoryError")):
        text += ("\n(Ray's memory monitor killed it: the node was nearly full. trainer.host_memory_limit_gb, set below "
                 "one worker's share of the node, stops the run first with the phase and the memory the worker held.)")
    return text


class WorkerGroup:
    def __init__(self, name: str, placement: Placement, roles: tuple[str, ...], cfg: StriveConfig, seed: int = 0,
                 process_cls: type = WorkerProcess):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.name = name
        self.process_cls = process_cls
        self.phase_timeout_s = cfg.trainer.phase_timeout_s
        world = len(placement.node_ids)
        remote_cls = ray.remote(process_cls)
        self.workers = []
        for rank, node_id in enumerate(placement.node_ids):
            resources = {"num_gpus": placement.gpus, "num_cpus": 1} if placement.resource == "GPU" else {"num_cpus": 1}
            strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            spec = ProcessSpec(rank, world, roles, cfg.trainer.device, seed=seed + rank)
            self.workers.append(remote_cls.options(name=None, scheduling_strategy=strategy, max_concurrency=1,
                                                   **resources).remote(spec))
        self.node_ids = list(placement.node_ids)
        master = self.get([self.workers[0].address.remote()], "rendezvous")[0]
        self.call_all(WorkerProcess.init_distributed, master, cfg.actor_rollout_ref.nccl_timeout)

    def describe(self) -> str:
        """Which node hosts each rank, e.g. for the start-up log."""
        import ray

        addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        ranks = ", ".join(f"rank {r} → node {nid[:8]} ({addresses.get(nid, '?')})" for r, nid in enumerate(self.node_ids))
        return f"{self.name}: {ranks}"

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def call(self, method: Callable[Concatenate[Any, S, P], R], shards: Sequence[S], *args: P.args,
             **kwargs: P.kwargs) -> list[R]:
        """Rank r runs `method(shards[r], *args, **kwargs)`."""
        name = self.remote_name(method)
        refs = [getattr(w, name).remote(shard, *args, **kwargs) for w, shard in zip(self.workers, shards)]
        return self.get(refs, name)

    def call_all(self, method: Callable[Concatenate[Any, P], R], *args: P.args, **kwargs: P.kwargs) -> list[R]:
        """Every rank runs `method(*args, **kwargs)`."""
        return self.get(self.submit_all(method, *args, **kwargs), self.remote_name(method))

    def submit_all(self, method: Callable[Concatenate[Any, P], Any], *args: P.args, **kwargs: P.kwargs) -> list:
        """Start `method(*args, **kwargs)` on every rank; the object refs, to wait on with `get`."""
        name = self.remote_name(method)
        return [getattr(w, name).remote(*args, **kwargs) for w in self.workers]

    def remote_name(self, method: Callable) -> str:
        """The name Ray calls `method` by; the process class must have a method of that name (a stand-in class
        with the same interface may host the group, so the name, not the function object, is what is checked)."""
        name = getattr(method, "__name__", None)
        if not callable(method) or name is None or not callable(getattr(self.process_cls, name, None)):
            raise TypeError(f"{self.name}: {method!r} is not a method of {self.process_cls.__name__}; "
                            f"pass one, e.g. {self.process_cls.__name__}.sync_weights")
        return name

    def get(self, refs: list, what: str) -> list[Any]:
        """Wait for all ranks; on the first failure, or past trainer.phase_timeout_s (a phase not in UNBOUNDED),
        stop the others and raise, instead of hanging."""
        import ray

        pending, start = list(refs), time.monotonic()
        limit = self.time_limit(what)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=time_left(limit, start))
            if not done:
                self.timed_out([refs.index(p) for p in pending], what, limit, start)
            self.result(done[0], refs.index(done[0]), what, peers=[(refs.index(p), p) for p in pending])
        return ray.get(refs)

    def time_limit(self, what: str) -> Optional[float]:
        """Seconds phase `what` may take (trainer.phase_timeout_s), None for no limit."""
        return None if what in UNBOUNDED or not self.phase_timeout_s else self.phase_timeout_s

    def result(self, ref: Any, rank: int, what: str, peers: Sequence[tuple[int, Any]] = ()) -> Any:
        """The value of rank `rank`'s finished call `what`; a failure stops the group's workers and raises
        naming the rank (WorkerDied, HostMemoryExceeded) or the worker's own exception. `peers`: (rank, call) of the
        other ranks' calls still running, checked for a death before a plain error is raised (`dead_peer`)."""
        import ray
        from ray.exceptions import RayActorError

        try:
            return ray.get(ref)
        except RayActorError as exc:
            self.kill()
            raise WorkerDied(died_message(self.name, rank, what, str(exc))) from None
        except HostMemoryExceeded as exc:  # Ray's error for the task is also an instance of the worker's
            self.kill()
            raise HostMemoryExceeded(f"{self.name} worker {getattr(exc, 'cause', exc)}") from None
        except Exception as exc:
            death = self.dead_peer(peers, what)
            self.kill()
            if death is not None:
                raise death from exc
            raise

    def dead_peer(self, peers: Sequence[tuple[int, Any]], what: str,
                  grace_s: float = PEER_GRACE_S) -> Optional[WorkerDied]:
        """A collective that fails on one rank is often the echo of another rank's death ("Connection reset by
        peer" reaches the survivor before Ray reports the dead process): give the other ranks' calls `grace_s`
        to finish, and return the death of one as the error to show, if one died."""
        import ray
        from ray.exceptions import RayActorError

        ranks = {ref: rank for rank, ref in peers}
        pending, deadline = list(ranks), time.monotonic() + grace_s
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                return None
            try:
                ray.get(done[0])
            except RayActorError as exc:
                return WorkerDied(died_message(self.name, ranks[done[0]], what, str(exc)))
            except Exception:
                continue
        return None

    def timed_out(self, ranks: list[int], what: str, limit: Optional[float], start: float) -> NoReturn:
        self.kill()
        raise PhaseTimeout(f"{self.name} worker rank(s) {', '.join(map(str, ranks))} did not finish '{what}' within "
                           f"trainer.phase_timeout_s={limit:g} (waited {time.monotonic() - start:.1f} s); the "
                           "group's workers were stopped")

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
            ray.get(self.submit_all(WorkerProcess.shutdown), timeout=30)
        except Exception:
            pass
        self.kill()
        time.sleep(0.1)


def time_left(limit: Optional[float], start: float) -> Optional[float]:
    """Seconds left of `limit` counted from `start` (time.monotonic), None without a limit."""
    return None if not limit else max(0.0, start + limit - time.monotonic())
