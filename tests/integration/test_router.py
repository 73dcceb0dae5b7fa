"""Least-loaded routing over real Ray actors: results in request order, the free rank takes the next chunk, a
chunk's seed does not depend on the rank serving it, and a dead rank is named."""

import os
import time

import pytest

ray = pytest.importorskip("ray")

from strive.controller.group import PhaseTimeout, WorkerDied, WorkerGroup  # noqa: E402
from strive.controller.router import chunk_params, route  # noqa: E402
from strive.engines.base import SamplingParams  # noqa: E402


class FakeProcess:
    """Stands in for WorkerProcess: generate_agent sleeps `delay` per request and echoes what it was given."""

    def __init__(self, rank: int, delay: float):
        self.rank, self.delay = rank, delay

    def generate_agent(self, requests, params, release_after):
        if "hang" in requests:
            time.sleep(3600)
        if "die" in requests:
            import os

            os._exit(1)
        time.sleep(self.delay * len(requests))
        return [(r, params.seed, self.rank) for r in requests]


class FakeGroup:
    name = "actor_rollout_ref"

    def __init__(self, delays):
        remote = ray.remote(num_cpus=0)(FakeProcess)
        self.workers = [remote.remote(rank, d) for rank, d in enumerate(delays)]
        ray.get([w.generate_agent.remote([], SamplingParams(max_new_tokens=1), False) for w in self.workers])

    @property
    def world_size(self):
        return len(self.workers)

    def remote_name(self, method):
        return method.__name__

    phase_timeout_s = 30.0
    time_limit = WorkerGroup.time_limit
    result = WorkerGroup.result
    timed_out = WorkerGroup.timed_out

    def kill(self):
        for w in self.workers:
            ray.kill(w, no_restart=True)


@pytest.fixture(scope="module")
def ray_session():
    here = os.path.dirname(os.path.abspath(__file__))  # the workers import FakeProcess from this file
    path = os.pathsep.join([here, os.path.dirname(os.path.dirname(here)), os.environ.get("PYTHONPATH", "")])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_the_free_rank_takes_the_next_chunk_and_results_keep_request_order(ray_session):
    group = FakeGroup([0.2, 0.0])  # rank 0 is slow
    requests = list(range(16))
    chunks = route(group, FakeProcess.generate_agent, requests, SamplingParams(max_new_tokens=1, seed=9),
                   chunks_per_rank=4)
    flat = [item for chunk in chunks for item in chunk]
    assert [r for r, _, _ in flat] == requests
    served_by = [chunk[0][2] for chunk in chunks]
    assert served_by.count(1) > served_by.count(0)  # the fast rank served more chunks
    seeds = [chunk[0][1] for chunk in chunks]
    assert seeds == [chunk_params(SamplingParams(max_new_tokens=1, seed=9), c).seed for c in range(len(chunks))]
    assert len(set(seeds)) == len(chunks)


def test_a_dead_rank_is_named(ray_session):
    group = FakeGroup([0.0, 0.0])
    with pytest.raises(WorkerDied, match="rank 1 died during 'generate_agent'"):
        route(group, FakeProcess.generate_agent, ["a", "die"], SamplingParams(max_new_tokens=1), chunks_per_rank=1)


def test_a_hung_rank_is_bounded_by_the_phase_timeout(ray_session):
    group = FakeGroup([0.0, 0.0])
    group.phase_timeout_s = 2.0
    with pytest.raises(PhaseTimeout, match=r"rank\(s\) 1 did not finish 'generate_agent' within "
                                           r"trainer.phase_timeout_s=2"):
        route(group, FakeProcess.generate_agent, ["a", "hang"], SamplingParams(max_new_tokens=1), chunks_per_rank=1)
