"""Ray address handling: a stale `ray start` record must not make the trainer wait on a dead cluster. And the
worker's memory report."""

import os
import socket

import pytest

from strive.config import prepare
from strive.controller import cluster


def test_stale_local_cluster_is_ignored(monkeypatch, capsys):
    import ray._private.utils as ray_utils

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    monkeypatch.setattr(ray_utils, "read_ray_address", lambda temp_dir=None: dead)
    assert cluster._running_local_cluster() is None
    assert "stale Ray address" in capsys.readouterr().out


def test_live_address_is_used(monkeypatch):
    import ray._private.utils as ray_utils

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(ray_utils, "read_ray_address", lambda temp_dir=None: live)
        assert cluster._running_local_cluster() == live


def test_unreachable_explicit_address_fails_fast(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=1"]).config
    with pytest.raises(cluster.ClusterError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        cluster.init_ray(cfg, processes=1)


def test_ray_address_local_starts_a_cluster_of_its_own(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster, "_running_local_cluster", lambda: pytest.fail("must not look for a running cluster"))
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=1"]).config
    cluster.init_ray(cfg, processes=1)
    assert [c["address"] for c in calls] == ["local"]


def test_worker_env_keeps_callers_values(monkeypatch):
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=1"]).config
    env = cluster.worker_env(cfg, threads_per_worker=1)
    assert env["NCCL_DEBUG"] == "INFO"
    assert env["SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK"] == "True"
    assert env["SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK"] == "false"


def test_ray_init_kwargs_pass_plus_keys():
    cfg = prepare(["ray_kwargs.ray_init.num_cpus=3", "+ray_kwargs.ray_init.namespace=exp"]).config
    assert cluster.ray_init_kwargs(cfg) == {"num_cpus": 3, "namespace": "exp"}


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_current_rss_follows_allocations():
    from strive.controller.host_memory import current_rss_gb

    before = current_rss_gb()
    block = bytes(range(256)) * 2**20  # 256 MiB, every page written
    during = current_rss_gb()
    del block
    assert during - before > 0.2, (before, during)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_phase_end_gives_freed_heap_back():
    from strive.controller.host_memory import current_rss_gb, malloc_trim, trims_heap

    if malloc_trim() is None:
        pytest.skip("not glibc")
    blocks = [bytes([i % 251]) * 2000 for i in range(256_000)]  # ~0.5 GB of heap chunks below mmap's threshold
    pin = bytes([7]) * 2000  # allocated last: the free space below it is not at the heap's top
    del blocks
    held = current_rss_gb()
    assert trims_heap(lambda: "result")() == "result"
    assert held - current_rss_gb() > 0.3, held
    del pin


def test_local_cluster_is_loopback_unless_the_user_says_otherwise(monkeypatch):
    from ray._private import ray_constants, services

    from strive.controller.cluster import _ray_cluster_switch, loopback_ray

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    assert loopback_ray({}) and not loopback_ray({"_node_ip_address": "10.0.0.5"})
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    assert not loopback_ray({})
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    before = ray_constants.ENABLE_RAY_CLUSTER
    with _ray_cluster_switch(enabled=False):
        assert services.get_node_ip_address() == "127.0.0.1"  # what ray.init then gives every server
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # inherited by GCS, raylet, workers
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # a later `ray start` may form a cluster
    assert ray_constants.ENABLE_RAY_CLUSTER == before
