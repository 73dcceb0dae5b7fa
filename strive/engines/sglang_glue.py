"""The pure half of the SGLang engine: strive's layout and settings translated into SGLang's terms.

Which ranks form a tensor-parallel group and which of them start SGLang processes (`plan_roles`, `leader_ranks`),
the distributed-init address (`format_dist_init_addr`), the environment and ServerArgs of a launch (`launch_env`,
`server_args`), per-request sampling dicts (`sampling_dict`, `row_seeds`), SGLang's output → Completion
(`parse_output`) and weight buckets (`buckets`). No SGLang, Ray or process group here: strive/engines/sglang.py
uses these, and tests/unit/test_sglang_glue.py tests them directly.
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

from strive.engines.base import Completion, EngineSpec, SamplingParams

if TYPE_CHECKING:
    import torch

SERVER_ARGS_FIELDS = ("model_path", "dtype", "load_format", "tp_size", "mem_fraction_static", "enable_memory_saver",
                      "skip_tokenizer_init", "base_gpu_id", "gpu_id_step", "random_seed", "trust_remote_code",
                      "max_running_requests", "disable_cuda_graph", "log_level", "context_length",
                      "json_model_override_args", "nnodes", "node_rank", "dist_init_addr", "chunked_prefill_size",
                      "disable_radix_cache", "quantization", "port", "nccl_port")
"""ServerArgs fields `server_args` may set (engine_kwargs may add any other)."""
SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "ignore_eos", "stop_token_ids", "no_stop_trim",
                 "skip_special_tokens", "sampling_seed")
"""Keys of the per-row sampling dicts (fields of sglang.srt.sampling.sampling_params.SamplingParams)."""
LAYOUT_KWARGS = ("tp_size", "nnodes", "node_rank", "base_gpu_id", "gpu_id_step", "skip_tokenizer_init")
"""Decided by strive's placement; engine_kwargs may not set them."""


# ---- layout: pure functions ------------------------------------------------------------------------------------


def tp_groups(world_size: int, tp: int) -> list[tuple[int, ...]]:
    """The tensor-parallel groups: tp consecutive ranks each; rank group[i] is SGLang TP rank i."""
    if tp < 1 or world_size < 1 or world_size % tp:
        raise ValueError(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} must divide the number of "
                         f"ranks (trainer.nnodes × trainer.n_gpus_per_node = {world_size})")
    return [tuple(range(start, start + tp)) for start in range(0, world_size, tp)]


def leader_ranks(world_size: int, tp: int) -> list[int]:
    """Ranks that host an SGLang engine's front end; a controller may send prompts to these only."""
    return [group[0] for group in tp_groups(world_size, tp)]


@dataclass(frozen=True)
class TPRole:
    rank: int
    group: tuple[int, ...]
    """Global ranks of this rank's TP group, leader first."""
    node_rank: int
    """Index of this rank's node among the group's nodes (SGLang's node_rank)."""
    nnodes: int
    """Nodes the group spans (SGLang's nnodes)."""
    launches_engine: bool
    """First rank of the group on its node: constructs an sglang Engine (schedulers only when node_rank ≥ 1)."""

    @property
    def leader(self) -> int:
        return self.group[0]

    @property
    def is_leader(self) -> bool:
        return self.rank == self.group[0]


def plan_roles(nodes: Sequence[str], tp: int) -> list[TPRole]:
    """Each rank's role, from `nodes[r]` = an identity of rank r's machine; refuses groups SGLang cannot form."""
    roles = []
    for group in tp_groups(len(nodes), tp):
        order: list[str] = []
        for r in group:
            if order and order[-1] == nodes[r]:
                continue
            if nodes[r] in order:
                raise ValueError(f"TP group {list(group)} leaves node {nodes[r]} and comes back; ranks of one node "
                                 "must be consecutive")
            order.append(nodes[r])
        per_node = {n: sum(nodes[r] == n for r in group) for n in order}
        if len(set(per_node.values())) != 1:
            raise ValueError(f"TP group {list(group)} has unequal GPUs per node {per_node}: make "
                             "tensor_model_parallel_size divide trainer.n_gpus_per_node or a multiple of it")
        for r in group:
            first_here = next(x for x in group if nodes[x] == nodes[r])
            roles.append(TPRole(r, group, order.index(nodes[r]), len(order), r == first_here))
    return roles


def format_dist_init_addr(host: str, port: int) -> str:
    """`host:port` as SGLang parses it: IPv6 literals in brackets, IPv4 and host names as they are."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        is_v6 = isinstance(ipaddress.ip_address(host.split("%", 1)[0]), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = False
    if not host or not 0 < int(port) < 65536:
        raise ValueError(f"bad dist_init_addr parts: host={host!r} port={port!r}")
    return f"[{host}]:{int(port)}" if is_v6 else f"{host}:{int(port)}"


def launch_env(role: TPRole, peers: Sequence[dict]) -> tuple[dict, Optional[str]]:
    """Environment for an engine-launching rank while SGLang spawns its schedulers, and its dist_init_addr.

    peers[r] = {"node", "ip", "gpu", "port"} of rank r. CUDA_VISIBLE_DEVICES lists the GPUs of the group's ranks on
    this node in rank order, so SGLang's TP rank i (GPU index i % per-node, base_gpu_id 0) is strive rank group[i].
    """
    here = peers[role.rank]["node"]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(peers[r]["gpu"]) for r in role.group if peers[r]["node"] == here)}
    if role.node_rank > 0:
        env["SGLANG_BLOCK_NONZERO_RANK_CHILDREN"] = "0"  # the node's Engine() returns after starting its schedulers
    leader = peers[role.leader]
    addr = format_dist_init_addr(leader["ip"], leader["port"]) if role.nnodes > 1 else None
    return env, addr


# ---- mapping strive → SGLang: pure functions -------------------------------------------------------------------


def server_args(spec: EngineSpec, role: TPRole, base_gpu_id: int, dist_init_addr: Optional[str],
                ports: Sequence[int] = ()) -> dict:
    """Keyword arguments of sglang's Engine (= ServerArgs fields) for this role. `ports` = (port, nccl_port), free
    ones picked on the launching rank: engines of one node must not share SGLang's default port (verl passes its
    own too); engine_kwargs may still set either."""
    bad = sorted(set(spec.engine_kwargs) & set(LAYOUT_KWARGS))
    if bad:
        raise ValueError(f"engine_kwargs.sglang may not set {bad}: strive derives them from "
                         "tensor_model_parallel_size and the placement")
    kwargs = dict(model_path=spec.model_path, dtype=spec.dtype, load_format=spec.load_format,
                  tp_size=spec.tensor_parallel_size, mem_fraction_static=spec.gpu_memory_utilization,
                  enable_memory_saver=True, skip_tokenizer_init=True, base_gpu_id=base_gpu_id, gpu_id_step=1,
                  random_seed=spec.seed, trust_remote_code=spec.trust_remote_code,
                  max_running_requests=spec.max_num_seqs, disable_cuda_graph=spec.enforce_eager, log_level="error")
    # SGLang's names for rollout.enable_chunked_prefill / enable_prefix_caching (-1: no chunking)
    kwargs["chunked_prefill_size"] = spec.max_num_batched_tokens if spec.enable_chunked_prefill else -1
    kwargs["disable_radix_cache"] = not spec.enable_prefix_caching
    if spec.quantization:
        kwargs["quantization"] = spec.quantization
    if ports:
        kwargs["port"], kwargs["nccl_port"] = ports
    if spec.max_model_len:
        kwargs["context_length"] = spec.max_model_len
    if spec.override_config:
        kwargs["json_model_override_args"] = json.dumps(spec.override_config)
    if role.nnodes > 1:
        kwargs.update(nnodes=role.nnodes, node_rank=role.node_rank, dist_init_addr=dist_init_addr)
    kwargs.update(spec.engine_kwargs)
    return kwargs


def sampling_dict(params: SamplingParams, eos_token_ids: Sequence[int], max_new_tokens: int,
                  seed: Optional[int]) -> dict:
    """One request's SGLang sampling params (n is always 1: rows are repeated by the caller)."""
    greedy = params.greedy
    stops = [] if params.ignore_eos else list(dict.fromkeys([*params.stop_token_ids, *eos_token_ids]))
    out = {"max_new_tokens": int(max_new_tokens), "temperature": 0.0 if greedy else float(params.temperature),
           "top_p": 1.0 if greedy else float(params.top_p),
           "top_k": -1 if greedy or params.top_k <= 0 else int(params.top_k),
           "ignore_eos": bool(params.ignore_eos), "stop_token_ids": stops, "no_stop_trim": True,
           "skip_special_tokens": False}
    if seed is not None:
        out["sampling_seed"] = int(seed)
    return out


def row_seeds(seed: Optional[int], rows: int, rng: random.Random) -> list[int]:
    """A distinct seed per row: derived from the call's seed (replayable), else drawn from the engine's generator."""
    if seed is None:
        return [rng.getrandbits(62) for _ in range(rows)]
    return [(int(seed) * 1_000_003 + i) % 2**62 for i in range(rows)]


def parse_output(out: dict) -> Completion:
    """One SGLang generate result (skip_tokenizer_init=True, return_logprob=True) → Completion."""
    meta = out["meta_info"]
    reason = meta.get("finish_reason")
    kind = reason.get("type") if isinstance(reason, dict) else reason
    if kind not in ("stop", "length"):
        raise RuntimeError(f"SGLang finished a request with {reason!r}")
    entries = meta.get("output_token_logprobs") or []  # [(logprob, token_id, text or None), ...]
    ids = [int(t) for t in out.get("output_ids", [e[1] for e in entries])]
    if [int(e[1]) for e in entries] != ids:
        raise RuntimeError(f"SGLang returned {len(ids)} output ids but log-probs for {len(entries)} tokens "
                           "(or for other tokens)")
    return Completion(ids, [float(e[0]) for e in entries], kind)


def buckets(named_tensors: Iterable[tuple[str, "torch.Tensor"]], bucket_bytes: int
            ) -> Iterator[list[tuple[str, "torch.Tensor"]]]:
    """Consecutive groups of about bucket_bytes, in order; a tensor larger than a bucket goes alone."""
    bucket, size = [], 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket
