"""Starting or joining Ray, and deciding which node hosts which rank.

strive never starts a cluster of several machines itself: start Ray the usual way (`ray start --head` on one
node, `ray start --address=HEAD:6379` on the others) or set RAY_ADDRESS, and the trainer joins it. Without an
existing cluster it starts a local one; RAY_ADDRESS=local always starts one of its own (two runs side by side on
one machine). A cluster strive starts itself listens on 127.0.0.1 only (GCS, raylet, workers, agents; the
dashboard is off): see `loopback_ray`. Each rank is pinned to a node (`trainer.nnodes` nodes, each hosting
`trainer.n_gpus_per_node` ranks); with `trainer.device=cpu` a rank takes one CPU slot instead of a GPU. A local
cluster started here is watched by `reaper.py`, so none of its processes outlive the driver, even one killed
with SIGKILL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from strive.config.schema import StriveConfig
from strive.controller.reaper import start_reaper
from strive.user_code import environ

# Environment every worker gets unless the caller already set the variable (then the caller's value wins).
WORKER_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "true",
    "NCCL_DEBUG": "WARN",
    "VLLM_LOGGING_LEVEL": "WARN",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "NCCL_CUMEM_ENABLE": "0",
    "VLLM_DISABLE_COMPILE_CACHE": "1",
    "SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK": "True",
    "SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK": "false",
}
PASS_THROUGH = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                "NVSHMEM_DISABLE_NVLS", "STRIVE_CACHE", "PYTHONPATH", "STRIVE_FAULT_INJECT")


class ClusterError(RuntimeError):
    pass


def worker_env(cfg: StriveConfig, threads_per_worker: int) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}
    env.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
    env.setdefault("OMP_NUM_THREADS", str(threads_per_worker))
    env["STRIVE_THREADS"] = str(threads_per_worker)
    return env


def ray_init_kwargs(cfg: StriveConfig) -> dict:
    kwargs = {"num_cpus": cfg.ray_kwargs.ray_init.num_cpus}
    prefix = "ray_kwargs.ray_init."
    kwargs.update({k[len(prefix):]: v for k, v in cfg.extras.items() if k.startswith(prefix)})
    return {k: v for k, v in kwargs.items() if v is not None}


def init_ray(cfg: StriveConfig, processes: int) -> None:
    """Join RAY_ADDRESS / an address given with +ray_kwargs.ray_init.address, or start a local cluster."""
    import ray

    if ray.is_initialized():
        return
    kwargs = ray_init_kwargs(cfg)
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // max(1, processes)) if cfg.trainer.device == "cpu" else 4
    runtime_env = dict(kwargs.pop("runtime_env", {}) or {})
    runtime_env.setdefault("env_vars", {}).update(worker_env(cfg, threads))
    address = kwargs.pop("address", None) or os.environ.get("RAY_ADDRESS")
    kwargs.setdefault("logging_level", "WARNING")
    kwargs.setdefault("log_to_driver", True)
    local_only = {k: kwargs.pop(k) for k in ("num_cpus", "num_gpus", "include_dashboard") if k in kwargs}
    if address == "local":  # a cluster of this run's own, even where another one already runs on this machine
        address = None
    elif address and address != "auto":
        if not address.startswith("ray://") and not _reachable(address):
            raise ClusterError(f"cannot reach the Ray cluster at {address} (from RAY_ADDRESS or "
                               "ray_kwargs.ray_init.address); is `ray start --head` running there?")
    else:
        address = _running_local_cluster()
    if address:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
        res = ray.cluster_resources()
        print(f"[strive] joined the Ray cluster at {address} ({int(res.get('CPU', 0))} CPUs, "
              f"{int(res.get('GPU', 0))} GPUs, {len([n for n in ray.nodes() if n['Alive']])} node(s))", flush=True)
        return
    if cfg.trainer.device == "cpu":
        local_only.setdefault("num_cpus", max(cpus, processes))
    local_only.setdefault("include_dashboard", False)
    loopback = loopback_ray(kwargs)
    if loopback:
        runtime_env["env_vars"].setdefault("GLOO_SOCKET_IFNAME", os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    with _ray_cluster_switch(enabled=not loopback):
        ray.init(address="local", runtime_env=runtime_env, **kwargs, **local_only)
    start_reaper()  # this cluster's processes go when the driver goes, however it ends (reaper.py)


def loopback_ray(kwargs: dict) -> bool:
    """Whether the local cluster about to start binds every server to 127.0.0.1 (the default).

    Ray 2.x takes the node address from `services.get_node_ip_address`, and binds GCS, raylet, worker and agent
    servers to 127.0.0.1 only when that address is the loopback one; `ray.init(_node_ip_address="127.0.0.1")`
    does not get there (Ray replaces a loopback address by a reachable one). The loopback address is what Ray
    itself uses where clusters are off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, its default on macOS/Windows), so
    strive switches that off while it starts its cluster (`_ray_cluster_switch`); Ray's own processes inherit it.
    The user says otherwise by setting that variable to 1, or `+ray_kwargs.ray_init._node_ip_address=IP`. A
    cluster started with `ray start` and joined is left as its owner configured it.
    """
    said = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    return "_node_ip_address" not in kwargs and (said is None or said.strip().lower() in ("0", "false"))


@contextmanager
def _ray_cluster_switch(enabled: bool) -> Iterator[None]:
    """Ray's cluster switch off inside the block (when not `enabled`), for this process and the processes it
    starts, then back as it was: a `ray start` or a joined cluster later in this process must not inherit it."""
    if enabled:
        yield
        return
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; computed from the variable when ray was imported
    try:
        with environ({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _reachable(address: str, timeout: float = 3.0) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _running_local_cluster() -> str | None:
    """The address of a cluster started on this machine with `ray start`, if one still answers."""
    try:
        from ray._private.utils import read_ray_address

        address = read_ray_address(None)
    except Exception:
        return None
    if not address:
        return None
    if _reachable(address):
        return address
    print(f"[strive] ignoring a stale Ray address {address} (nothing answers there); starting a local cluster",
          flush=True)
    return None


@dataclass
class Placement:
    node_ids: list[str]
    """Ray node id hosting each rank (rank = position)."""
    resource: str
    """'GPU' or 'CPU': what one rank reserves."""
    gpus: float = 1.0
    """GPUs one rank reserves when resource is 'GPU' (0.5: two processes share each card)."""


def plan_placement(nnodes: int, per_node: int, device: str) -> Placement:
    """Pick `nnodes` alive nodes that each have `per_node` free slots; the driver's node first."""
    import ray

    resource = "GPU" if device == "cuda" else "CPU"
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    nodes.sort(key=lambda n: (n["NodeID"] != here, n["NodeID"]))
    fitting = [n for n in nodes if n.get("Resources", {}).get(resource, 0) >= per_node]
    if len(fitting) < nnodes:
        seen = ", ".join(f"{n['NodeManagerAddress']} ({int(n.get('Resources', {}).get(resource, 0))} {resource})"
                         for n in nodes)
        hint = " (on a machine without GPUs set trainer.device=cpu)" if resource == "GPU" else ""
        raise ClusterError(f"trainer.nnodes={nnodes} × trainer.n_gpus_per_node={per_node} needs {nnodes} Ray node(s) "
                           f"with ≥{per_node} {resource} each; the cluster has {len(nodes)}: {seen}{hint}")
    chosen = fitting[:nnodes]
    return Placement([n["NodeID"] for n in chosen for _ in range(per_node)], resource)
