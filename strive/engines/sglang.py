"""The SGLang rollout engine: SGLang's in-process `Engine`, one per tensor-parallel group, behind RolloutEngine.

What it chose, and the contract with the rest of strive:

- **One SGLang engine per TP group.** `actor_rollout_ref.rollout.tensor_model_parallel_size` = tp consecutive
  strive ranks form a group (`sglang_glue.tp_groups`); the data-parallel groups are the rest (world_size / tp of them). Strive
  rank `group[i]` and SGLang's TP rank i share one GPU. The group's first rank (its *leader*) creates the engine;
  when a group spans nodes (TP=16 over two 8-GPU nodes), the group's first rank on every other node also creates
  one with `node_rank` ≥ 1 (its schedulers only: SGLANG_BLOCK_NONZERO_RANK_CHILDREN=0 lets the constructor return)
  and all of them meet at `dist_init_addr` (the leader's IP and a free port; IPv6 in brackets,
  `format_dist_init_addr`).
  Every other rank holds no SGLang engine.
- **GPUs.** strive's Ray placement gives each rank one GPU (CUDA_VISIBLE_DEVICES = that GPU) and puts consecutive
  ranks on one node (trainer.n_gpus_per_node per node), so a group lies on one node when tp divides
  n_gpus_per_node, or on tp / n_gpus_per_node whole nodes when n_gpus_per_node divides tp (anything else is refused,
  `plan_roles`). At start every rank publishes its physical GPU id; an engine-launching rank sets
  CUDA_VISIBLE_DEVICES to the ids of its group's ranks on its node, in rank order, only while SGLang spawns its
  schedulers (base_gpu_id=0, gpu_id_step=1), so SGLang's TP rank i runs on strive rank group[i]'s GPU. No Ray
  change is needed; Ray does not fence GPUs beyond that variable.
- **Completions for the other ranks.** The controller calls `generate` on every rank at once, as for any engine,
  with any split of the prompts (empty lists included). Inside the group the leader gathers the prompts (gloo),
  generates them as one SGLang batch, and sends each rank back the completions of the prompts it brought. A
  controller may therefore send prompts only to `sglang_glue.leader_ranks(world_size, tp)` (importable without
  SGLang) and empty lists to the rest; the
  result is the same. `update_weights`, `release`, `resume` and `flush_cache` are called on every rank as well.
- **Weights.** Started with `load_format="dummy"` (random weights) and `enable_memory_saver=True`. Real weights
  come through `update_weights`: every rank of the group holds the same full tensors (FSDP2 full_tensor); the
  tensors are pushed in buckets of `update_weights_bucket_megabytes` with `Engine.update_weights_from_tensor`
  inside one `begin_weight_update` / `end_weight_update` session per sync (SGLang 0.5.23 loads weights only inside
  one; it is closed in `finally`, and an SGLang without it is refused at start), then one `flush_cache`. A sync is
  one `update_weights` call (RolloutWorker.sync_from chains its buckets into one iterable). With
  tp > 1 each rank sends CUDA-IPC handles of its own copy, gathered by the leader into SGLang's
  LocalSerializedTensor, so SGLang TP rank i reads from its own GPU (also across nodes). `last_sync` records
  seconds, bytes, tensors, buckets and GB/s.
- **Memory.** `release(tags)` → `release_memory_occupation(tags)`, `resume(tags)` → `resume_memory_occupation`,
  with strive's tags mapped one to one onto SGLang's ("weights", "kv_cache"; CUDA-graph memory stays resident).
  RolloutWorker.sync_from resumes the weights, pushes them, and only then resumes the KV cache. After resuming
  "weights" their content is undefined until pushed, so `generate` refuses until `update_weights` ran.
- **Sampling.** Prompts are repeated n times (prompt-major; SGLang's own `n` is not used), one sampling dict per row
  (`sampling_dict`): greedy → temperature 0 (SGLang then samples top-k 1 at T = 1); top_k ≤ 0 → -1 (off);
  ignore_eos drops the stop ids too; EngineSpec.eos_token_ids join stop_token_ids. Each row gets a
  `sampling_seed` (from SamplingParams.seed, else from the engine's seeded generator); SGLang honours it only
  with `enable_deterministic_inference=True` (pass it in engine_kwargs), otherwise sampling is not replayable.
- **Log-probs** (`return_logprob=True`, `meta_info["output_token_logprobs"]`). SGLang 0.5.23 returns
  log_softmax(logits / T) of the sampled token, not renormalised after top-k/top-p, and log_softmax(logits) for
  greedy rows: the quantity the trainer recomputes. SGLANG_RETURN_ORIGINAL_LOGPROB would make them unscaled, so
  start-up refuses it. (0.4.6.post5 renormalised after top-p: with top_p < 1 its log-probs differ from the
  trainer's.)

The pure parts (layout, ServerArgs, sampling dicts, output parsing, buckets) live in sglang_glue.py. sglang is
imported only inside the constructor. Tests: `pytest tests/unit/test_sglang_glue.py` (our glue against
a stand-in engine), `tests/integration/test_sglang_api.py` (names and parameters against the installed sglang),
`tests/gpu/test_sglang_engine.py` (the conformance suite and a PPO run on a GPU). See docs/sglang.md.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import time
from typing import Any, Iterable, Optional

import torch

from strive.engines.base import Completion, EngineSpec, EngineUnavailable, SamplingParams
from strive.engines.sglang_glue import (TPRole, buckets, launch_env, parse_output, plan_roles, row_seeds,
                                        sampling_dict, server_args)
from strive.user_code import environ

INSTALL_HINT = ('Install it with: pip install "strive[sglang]" (= sglang==0.5.23, which pins torch 2.14.1 with CUDA; '
                "docs/sglang.md lists the versions)")
TAGS = {"weights": "weights", "kv_cache": "kv_cache"}
"""strive memory tag → SGLang's GPU memory type (sglang.srt.constants GPU_MEMORY_TYPE_WEIGHTS / _KV_CACHE)."""

SGLANG_API = {
    "sglang.srt.entrypoints.engine.Engine.__init__": (),
    "sglang.srt.entrypoints.engine.Engine.generate": ("input_ids", "sampling_params", "return_logprob"),
    "sglang.srt.entrypoints.engine.Engine.update_weights_from_tensor": ("named_tensors", "load_format", "flush_cache"),
    "sglang.srt.entrypoints.engine.Engine.begin_weight_update": (),
    "sglang.srt.entrypoints.engine.Engine.end_weight_update": (),
    "sglang.srt.entrypoints.engine.Engine.release_memory_occupation": ("tags",),
    "sglang.srt.entrypoints.engine.Engine.resume_memory_occupation": ("tags",),
    "sglang.srt.entrypoints.engine.Engine.flush_cache": (),
    "sglang.srt.entrypoints.engine.Engine.shutdown": (),
    "sglang.srt.sampling.sampling_params.SamplingParams": (),
    "sglang.srt.utils.MultiprocessingSerializer.serialize": ("obj",),
    "sglang.srt.utils.patch_torch.monkey_patch_torch_reductions": (),
    "sglang.srt.model_executor.model_runner_components.weight_updater.LocalSerializedTensor": ("values",),
}
"""Every SGLang callable this module uses (as laid out in 0.5.23) → the keyword parameters it passes."""
SESSION_METHODS = ("begin_weight_update", "end_weight_update")
"""The weight-update session every sync opens and closes (SGLang 0.5.23 loads weights only inside one)."""
RELEASED_MESSAGE = "SGLang engine memory was released; resume it and call update_weights first"


# ---- the engine ------------------------------------------------------------------------------------------------


class SGLangEngine:
    """RolloutEngine on sglang's Engine. Constructed on every rank at the same point (before training weights)."""

    def __init__(self, spec: EngineSpec, sglang: Optional[dict] = None, dist=None):
        """`sglang` (the objects `_import_sglang` returns) and `dist` (torch.distributed) are replaced only by tests."""
        if os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true", "yes"):
            raise ValueError("SGLANG_RETURN_ORIGINAL_LOGPROB is set: SGLang would return log-probs before temperature,"
                             " not those of the sampling distribution that strive's losses use; unset it")
        if sglang is None:
            if torch.device(spec.device).type != "cuda":
                raise ValueError(f"the sglang engine needs a CUDA device; got device={spec.device!r}")
            sglang = _import_sglang()
        missing = [m for m in SESSION_METHODS if not callable(getattr(sglang["Engine"], m, None))]
        if missing:
            raise EngineUnavailable(f"the installed SGLang's Engine has no {' / '.join(missing)}: strive loads weights "
                                    f"inside one such session per sync. {INSTALL_HINT}")
        self._sgl = sglang
        self.spec = spec if spec.eos_token_ids else spec.with_token_ids()
        self.device = torch.device(spec.device)
        self._dist = dist if dist is not None else torch.distributed
        self._bucket_bytes = max(1, spec.update_weights_bucket_megabytes) * 2**20
        self._rng = random.Random(spec.seed)
        self._released: set[str] = set()
        self._weights_stale = False
        self._engine = None
        self._tags_supported = self._seeds_supported = False  # set from the SGLang engine at launch
        self.last_sync: dict = {}
        tp = spec.tensor_parallel_size
        if tp == 1 or not (self._dist.is_available() and self._dist.is_initialized()):
            # this process drives all tp GPUs of its engine itself, from spec.device's index on
            rank = self._dist.get_rank() if self._dist.is_available() and self._dist.is_initialized() else 0
            self.role, self._group = TPRole(rank, (rank,), 0, 1, True), None
            self._launch(server_args(self.spec, self.role, _index(self.device), None, _engine_ports()), {})
        else:
            self.role, self._group = self._join_group(tp)
            self._start_group_engine()

    # -- start-up -------------------------------------------------------------------------------------------------

    def _join_group(self, tp: int):
        d = self._dist
        rank, world = d.get_rank(), d.get_world_size()
        self._peers: list = [None] * world
        d.all_gather_object(self._peers, self._describe_self())
        roles = plan_roles([p["node"] for p in self._peers], tp)
        mine = None
        for role in roles:  # every rank creates every group, in the same order (torch.distributed's rule)
            if role.is_leader:
                group = d.new_group(list(role.group), backend="gloo")
                if rank in role.group:
                    mine = group
        return roles[rank], mine

    def _describe_self(self) -> dict:
        return {"node": _node_identity(), "ip": _node_ip(), "gpu": _physical_gpu(self.device), "port": _free_port()}

    def _start_group_engine(self) -> None:
        role, error = self.role, None
        if role.launches_engine:
            env, addr = launch_env(role, self._peers)
            try:
                self._launch(server_args(self.spec, role, 0, addr, _engine_ports()), env)
            except Exception as exc:  # reported to the whole group below, then raised here
                error = exc
        mine = {"error": None if error is None else f"rank {role.rank}: {error!r}",
                "tags": self._tags_supported, "seeds": self._seeds_supported}
        statuses: list = [None] * len(role.group)
        self._dist.all_gather_object(statuses, mine, group=self._group)
        if error is not None:
            raise error
        failed = [s["error"] for s in statuses if s["error"]]
        if failed:
            raise RuntimeError(f"the SGLang engine of TP group {list(role.group)} failed to start: {failed}")
        # every rank tracks the engine's state, with the leader's view of what this SGLang supports
        self._tags_supported, self._seeds_supported = statuses[0]["tags"], statuses[0]["seeds"]

    def _launch(self, kwargs: dict, env: dict) -> None:
        with environ(env):
            self._engine = self._sgl["Engine"](**kwargs)
        release = getattr(self._engine, "release_memory_occupation")
        self._tags_supported = "tags" in inspect.signature(release).parameters
        self._seeds_supported = "sampling_seed" in self._sgl["sampling_fields"]

    # -- generation -----------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        if self._released or self._weights_stale:
            raise RuntimeError(RELEASED_MESSAGE + f" (released: {sorted(self._released)})")
        if self._group is None:
            return self._generate_here(prompts, params)
        d, role = self._dist, self.role
        gathered = [None] * len(role.group) if role.is_leader else None
        d.gather_object([list(p) for p in prompts], gathered, dst=role.leader, group=self._group)
        payload, error = None, None
        if role.is_leader:
            try:
                flat = self._generate_here([p for part in gathered for p in part], params)
                payload, start = [], 0
                for part in gathered:
                    payload.append(("ok", flat[start: start + len(part) * params.n]))
                    start += len(part) * params.n
            except Exception as exc:
                error, payload = exc, [("error", f"{exc!r}")] * len(role.group)
        received = [None]
        d.scatter_object_list(received, payload, src=role.leader, group=self._group)
        if error is not None:
            raise error
        status, value = received[0]
        if status != "ok":
            raise RuntimeError(f"the SGLang engine on rank {role.leader} failed: {value}")
        return value

    def _generate_here(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        rows = [list(p) for p in prompts for _ in range(params.n)]  # prompt-major
        limits = [self._max_new(len(r), params) for r in rows]
        seeds = row_seeds(params.seed, len(rows), self._rng) if self._seeds_supported else [None] * len(rows)
        out = [Completion([], [], "length") for _ in rows]
        send = [i for i, limit in enumerate(limits) if limit > 0]
        if not send:
            return out
        results = self._engine.generate(
            input_ids=[rows[i] for i in send], return_logprob=True,
            sampling_params=[sampling_dict(params, self.spec.eos_token_ids, limits[i], seeds[i]) for i in send])
        if isinstance(results, dict):
            results = [results]
        for i, result in zip(send, results, strict=True):
            out[i] = parse_output(result)
        return out

    def _max_new(self, prompt_len: int, params: SamplingParams) -> int:
        if self.spec.max_model_len is None:
            return max(0, params.max_new_tokens)
        return max(0, min(params.max_new_tokens, self.spec.max_model_len - prompt_len))

    # -- weights and memory ---------------------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One weight sync: every (HF name, full tensor) pair of it, on every rank. The tensors go in buckets of
        update_weights_bucket_megabytes inside one begin_weight_update … end_weight_update session, closed even
        when a bucket fails, then the prefix cache is flushed once."""
        if "weights" in self._released:
            raise RuntimeError("weights are released; call resume(('weights',)) before update_weights")
        start = time.perf_counter()
        nbytes = count = pushed = 0
        self._leader_call("begin_weight_update")
        done = False
        try:
            for bucket in buckets(named_tensors, self._bucket_bytes):
                bucket = [(name, self._on_device(t.detach())) for name, t in bucket]
                self._push(bucket)
                nbytes += sum(t.numel() * t.element_size() for _, t in bucket)
                count, pushed = count + len(bucket), pushed + 1
            done = True
        finally:
            # closing is tried also after a failed bucket; its own error then must not hide the first one
            self._leader_call("end_weight_update", raise_errors=done)
        self._flush()
        self._weights_stale = False
        seconds = time.perf_counter() - start
        self.last_sync = {"seconds": seconds, "bytes": nbytes, "tensors": count, "buckets": pushed,
                          "gb_per_s": nbytes / max(seconds, 1e-9) / 1e9}

    def _push(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        if self._group is None:
            self._check(self._engine.update_weights_from_tensor(named_tensors=bucket, load_format=None,
                                                                flush_cache=False), "update_weights_from_tensor")
            return
        d, role = self._dist, self.role
        serialize = self._sgl["serialize"]
        handles = [(name, serialize(t)) for name, t in bucket]  # CUDA-IPC handles of this rank's copy
        gathered = [None] * len(role.group) if role.is_leader else None
        d.gather_object(handles, gathered, dst=role.leader, group=self._group)
        result = [None]
        if role.is_leader:
            wrap = self._sgl["LocalSerializedTensor"]
            named = [(name, wrap(values=[part[k][1] for part in gathered])) for k, (name, _) in enumerate(bucket)]
            try:
                result = [self._engine.update_weights_from_tensor(named_tensors=named, load_format=None,
                                                                  flush_cache=False)]
            except Exception as exc:
                result = [(False, repr(exc))]
        # also the barrier that keeps every rank's tensors alive until SGLang has read them
        d.broadcast_object_list(result, src=role.leader, group=self._group)
        self._check(result[0], "update_weights_from_tensor")

    def _leader_call(self, method: str, raise_errors: bool = True) -> None:
        """Call an Engine method that answers (success, message) on the leader; every rank of the group learns
        the answer, so all of them raise together instead of some waiting in the next gather."""
        result: list = [(True, "")]
        if self.role.is_leader:
            try:
                result = [getattr(self._engine, method)()]
            except Exception as exc:
                result = [(False, repr(exc))]
        if self._group is not None:
            self._dist.broadcast_object_list(result, src=self.role.leader, group=self._group)
        if raise_errors:
            self._check(result[0], method)

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        todo = [t for t in _known(tags) if t not in self._released]
        if todo and self.role.is_leader:
            if self._tags_supported:
                self._engine.release_memory_occupation(tags=[TAGS[t] for t in todo])
            elif not self._released:  # an SGLang without tags frees everything at once
                self._engine.release_memory_occupation()
        self._released.update(TAGS if not self._tags_supported and todo else todo)

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        todo = [t for t in _known(tags) if t in self._released]
        if todo and self.role.is_leader:
            if self._tags_supported:
                self._engine.resume_memory_occupation(tags=[TAGS[t] for t in todo])
            else:  # no multi-stage wake-up: the KV cache comes back with the weights
                self._engine.resume_memory_occupation()
        if todo and not self._tags_supported:
            todo = list(self._released)
        self._released.difference_update(todo)
        if "weights" in todo:
            self._weights_stale = True

    def flush_cache(self) -> None:
        if self._released:
            return  # nothing cached while released; SGLang flushes the KV cache when releasing it
        self._flush()

    def _flush(self) -> None:
        if self.role.is_leader:
            result = self._engine.flush_cache()
            if getattr(result, "success", True) is False:
                raise RuntimeError(f"SGLang flush_cache failed: {getattr(result, 'message', result)}")

    def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    # -- helpers --------------------------------------------------------------------------------------------------

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and tensor.device.type != "cuda":
            return tensor.to(self.device, non_blocking=True)
        return tensor

    @staticmethod
    def _check(result: Any, what: str) -> None:
        """SGLang answers (success, message) for weight calls."""
        if isinstance(result, tuple) and result and result[0] is False:
            raise RuntimeError(f"SGLang {what} failed: {result[1] if len(result) > 1 else ''}")


# ---- process-level helpers --------------------------------------------------------------------------------------


def _import_sglang() -> dict:
    """The few SGLang objects used, imported now; ImportError carries the install command (load_engine_class)."""
    try:
        from sglang.srt.entrypoints.engine import Engine
        from sglang.srt.sampling.sampling_params import SamplingParams as SGLSamplingParams
        from sglang.srt.utils import MultiprocessingSerializer
    except ImportError as exc:
        raise EngineUnavailable(f"rollout engine 'sglang' cannot be imported ({exc}). {INSTALL_HINT}") from exc
    try:  # 0.5.x layout first, then the 0.4.x one
        from sglang.srt.model_executor.model_runner_components.weight_updater import LocalSerializedTensor
    except ImportError:
        from sglang.srt.model_executor.model_runner import LocalSerializedTensor
    try:
        from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions
    except ImportError:
        from sglang.srt.patch_torch import monkey_patch_torch_reductions

    def serialize(tensor):
        # IPC handles name the GPU by UUID, as SGLang's readers number devices differently. The patch is
        # process-wide and handles CUDA tensors only, which is why update_weights moves tensors to the GPU first.
        monkey_patch_torch_reductions()
        return MultiprocessingSerializer.serialize(tensor)

    return {"Engine": Engine, "serialize": serialize, "LocalSerializedTensor": LocalSerializedTensor,
            "sampling_fields": set(inspect.signature(SGLSamplingParams).parameters)}


def _known(tags: Iterable[str]) -> list[str]:
    tags = list(tags)
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise ValueError(f"unknown memory tags {unknown}; strive's are {list(TAGS)}")
    return tags


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


def _physical_gpu(device: torch.device) -> str:
    """This process's GPU as the node names it (an entry of the node-wide CUDA_VISIBLE_DEVICES)."""
    index = torch.cuda.current_device() if device.type == "cuda" and torch.cuda.is_available() else _index(device)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index].strip() if index < len(visible) else str(index)


def _node_identity() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:
        pass
    return socket.gethostname()


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:
        pass
    return socket.gethostbyname(socket.gethostname())


def _engine_ports() -> tuple[int, int]:
    """SGLang's port and nccl_port for one engine: free ones, distinct from each other."""
    port = _free_port()
    nccl = _free_port()
    while nccl == port:
        nccl = _free_port()
    return port, nccl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
