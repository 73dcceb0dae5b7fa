"""The vLLM rollout engine: `vllm.LLM` in this process, token ids in, token ids and log-probs out.

One `LLM` per rank, built from the EngineSpec (dummy weights are fine: the trainer pushes real ones). With
tensor parallelism t, t consecutive ranks each hold one shard of one engine: `distributed_executor_backend=
"external_launcher"` builds vLLM's groups from the trainer's process group (as verl does); `generate` gathers the
group's prompts so every shard runs the same requests, with the group's first seed and params, and each rank keeps
its own rows. It must behave like the hf engine (`strive/engines/hf.py`), which the conformance suite checks;
what that took:

- In-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0, as verl does): `collective_rpc` then calls our
  worker-side functions directly, so a weight bucket reaches the model without being serialised.
- Stopping: vLLM's own EOS handling is switched off (`ignore_eos=True` on every request) and strive's stop set,
  `stop_token_ids` + `EngineSpec.eos_token_ids`, is passed as `stop_token_ids`; with `SamplingParams.ignore_eos`
  that set is empty. So EOS means the spec's ids, exactly as in the hf engine, and the stop token is kept.
- Log-probs: `logprobs_mode="processed_logprobs"` gives log_softmax(logits / T) of the sampled token (T = 1 for
  greedy), but vLLM takes it after top-k/top-p, renormalised. strive's definition is before the filters, so a
  worker-side hook (`_unfiltered_logprobs`) makes the sampler report the log-softmax of the temperature-scaled
  logits it receives; the filters and the sampling itself are untouched. Without top-k/top-p both agree.
- n samples are n requests of one row each (vLLM refuses n > 1 for greedy; prefix caching shares the prompt).
  With `SamplingParams.seed` row r gets vLLM seed seed · 2^20 + r: every row of a call draws from its own
  stream, and a call can be replayed.
- Weights: one `update_weights` call is one sync and one vLLM layerwise-reload session (`initialize_layerwise_reload`,
  `model.load_weights` per bucket, `finalize_layerwise_reload`, the calls vLLM's own weight-transfer engines make),
  closed in `finally`, then one prefix-cache reset. A bucket may end in the middle of a fused layer (q/k/v
  → qkv_proj): the layer is processed once all its parts arrived. On CPU a linear layer's weight is repacked
  for oneDNN when processed; a tied lm_head shares the embedding's weight but has its own packed copy, so it is
  processed again after every sync.
- release/resume: `LLM.sleep(level=2)` / `wake_up(tags)` on GPU (weights are pushed again after resume, so level
  2 discards them instead of copying them to host memory; the cache alone sleeps at level 1). The tags asleep are
  tracked here, not read from wake_up's answer (None before vLLM 0.32, "fully awake" since), so every step sleeps
  again. quantization (fp8) is CUDA only. vLLM's CPU backend has no sleep mode: there both are
  no-ops (said once in the log), and only strive's bookkeeping runs: generate refuses after release, and after
  resume until every weight has been pushed again, as in the hf engine.
- CPU: every process that runs vLLM must first ask Linux for AMX tile state (done below, at import). vLLM's CPU
  worker sets torch to one thread and disables `torch.set_num_threads` for the whole process; the engine puts
  both back, since a colocated trainer shares the process. On CPU `gpu_memory_utilization` would be a fraction of
  all host RAM (vLLM's rule), so the KV cache is sized for max_num_seqs sequences of max_model_len instead
  (`engine_kwargs.kv_cache_memory_bytes` overrides).

    pytest -k vllm tests/integration tests/e2e/test_vllm_vs_hf.py     # where vllm is installed (docs/vllm.md)
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import time
import weakref
from dataclasses import replace
from typing import Iterable, Optional

import torch


def request_amx_permission() -> bool:
    """arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): Linux hands out AMX tile state only on request, and
    vLLM's CPU kernels use AMX where the CPU has it (without it they die with SIGILL). Once per process is enough."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        return ctypes.CDLL(None).syscall(158, 0x1023, 18) == 0
    except (OSError, AttributeError):
        return False


AMX_PERMITTED = request_amx_permission()  # before vLLM loads its kernels
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import vllm  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from strive.engines.base import Completion, EngineSpec, SamplingParams  # noqa: E402
from strive.engines.sglang_glue import buckets  # noqa: E402  (pure: torch-free weight bucketing)
from strive.models.loading import DTYPES, load_hf_config, resolve_model_path, torch_dtype  # noqa: E402
from strive.user_code import environ  # noqa: E402

log = logging.getLogger(__name__)
RELEASED_MESSAGE = "weights were released; call update_weights after resume"
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
"""HF projections that vLLM fuses into one layer (qkv_proj, gate_up_proj): a sync must bring all or none."""


class VLLMEngine:
    """RolloutEngine on one `vllm.LLM` per rank (with TP > 1, each one shard of its group's engine)."""

    def __init__(self, spec: EngineSpec, dist=None):
        """`dist` (torch.distributed) is replaced only by tests."""
        self.on_cpu = current_platform.is_cpu()
        if spec.quantization and self.on_cpu:
            raise ValueError(f"actor_rollout_ref.rollout.quantization={spec.quantization} needs vLLM on CUDA; "
                             "this vLLM runs on the CPU")
        self._dist = dist if dist is not None else torch.distributed
        self.group, self.group_rank, seed = tp_group(self._dist, spec.tensor_parallel_size, spec.seed)
        self.spec = replace(spec.with_token_ids(), seed=seed)  # one seed per TP group: its ranks sample alike
        self.hf_config = load_hf_config(resolve_model_path(spec.model_path), trust_remote_code=spec.trust_remote_code)
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        _LIVE_ENGINES[0] += 1  # before LLM(): an engine collected while this one starts must not tear it down
        try:
            with environ(self._launcher_env()):
                self.llm = vllm.LLM(**self._llm_kwargs())
        except BaseException:
            _LIVE_ENGINES[0] -= 1
            raise
        finally:
            torch.set_num_threads = set_threads  # see the module docstring (CPU)
            torch.set_num_threads(threads)
        _shut_down_with_others_alive(self.llm)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.unfiltered_logprobs = all(self.llm.collective_rpc(_unfiltered_logprobs))
        if not self.unfiltered_logprobs:
            log.warning("vLLM's sampler has no hook for unfiltered log-probs here: with top-k/top-p the rollout "
                        "log-probs are renormalised over the kept tokens")
        self.param_names: set[str] = set(self.llm.collective_rpc(_parameter_names)[0])
        self.tied = bool(getattr(self.hf_config, "tie_word_embeddings", False))
        self._released = False
        self._stale: set[str] = set()  # vLLM parameters re-allocated by resume and not pushed yet
        self._said_no_sleep = False
        self._asleep: set[str] = set()  # vLLM memory tags asleep now (GPU sleep mode), whatever wake_up returns
        self._level = 0  # the sleep level they were put to sleep with
        self.last_sync: dict = {}
        self._weight_dtype = known_dtype(spec.dtype)  # None: "auto", vLLM decides

    def _llm_kwargs(self) -> dict:
        spec = self.spec
        kwargs = dict(model=resolve_model_path(spec.model_path), dtype=spec.dtype, seed=spec.seed,
                      tensor_parallel_size=spec.tensor_parallel_size, load_format=spec.load_format,
                      gpu_memory_utilization=spec.gpu_memory_utilization, enforce_eager=spec.enforce_eager,
                      max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
                      max_model_len=spec.max_model_len, trust_remote_code=spec.trust_remote_code,
                      hf_overrides=dict(spec.override_config), logprobs_mode="processed_logprobs",
                      enable_prefix_caching=spec.enable_prefix_caching,
                      enable_chunked_prefill=spec.enable_chunked_prefill)
        if spec.quantization:
            kwargs["quantization"] = spec.quantization
        if spec.tensor_parallel_size > 1:
            # every rank of the TP group holds one shard; vLLM builds its groups from this process group
            kwargs["distributed_executor_backend"] = "external_launcher"
        if self.on_cpu:
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(spec, self.hf_config)
            # A prompt prefilled in pieces makes vLLM rewind its seeded generator, which a CPU generator cannot
            # do ("CPU Generator does not use offset"): prefill whole prompts, a step's budget at least one.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(spec.max_num_batched_tokens, max_len(spec, self.hf_config))
        elif spec.free_cache_engine:
            kwargs["enable_sleep_mode"] = True
        kwargs.update(spec.engine_kwargs)
        return kwargs

    def _launcher_env(self) -> dict:
        """vLLM's external launcher reads RANK and LOCAL_RANK (torchrun's names) while it starts. The process group
        exists already; LOCAL_RANK is the device this process uses (Ray shows each worker its own GPU as cuda:0)."""
        if self.spec.tensor_parallel_size == 1:
            return {}
        device = torch.device(self.spec.device)
        local = device.index if device.index is not None else 0
        return {"RANK": str(self._dist.get_rank()), "LOCAL_RANK": str(local)}

    # ---- generation -------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """With tensor parallelism every rank of the group runs the group's prompts, with the params of the
        group's first rank (vLLM's TP ranks must schedule the same requests), and keeps the rows it brought."""
        if self._released or self._stale or self._asleep:
            pending = f" ({len(self._stale)} tensors not pushed yet)" if self._stale and not self._released else ""
            raise RuntimeError(RELEASED_MESSAGE + pending + (f" (asleep: {sorted(self._asleep)})"
                                                             if self._asleep and not self._released else ""))
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if self.group is None:
            return self._generate_here(prompts, params)
        parts: list = [None] * self.spec.tensor_parallel_size
        self._dist.all_gather_object(parts, ([list(p) for p in prompts], params), group=self.group)
        rows = [len(part[0]) * part[1].n for part in parts]
        out = self._generate_here([p for part, _ in parts for p in part], parts[0][1])
        start = sum(rows[: self.group_rank])
        return out[start: start + rows[self.group_rank]]

    def _generate_here(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        rows = [i for i in range(len(prompts)) for _ in range(params.n)]  # prompt-major, one request per row
        limits = [min(params.max_new_tokens, self.max_model_len - len(prompts[i])) for i in rows]
        todo = [r for r, limit in enumerate(limits) if limit > 0]
        requests = [{"prompt_token_ids": list(prompts[rows[r]])} for r in todo]
        outputs = self.llm.generate(requests, [self._vllm_params(params, limits[r], r) for r in todo],
                                    use_tqdm=False) if todo else []
        out = [Completion([], [], "length") for _ in rows]  # rows with no room left under max_model_len
        for r, request_output in zip(todo, outputs):
            c = request_output.outputs[0]
            ids = list(c.token_ids)
            logprobs = list(c.logprobs.logprobs) if ids else []
            if len(logprobs) != len(ids):
                raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(ids)} tokens")
            out[r] = Completion(ids, logprobs, "stop" if c.finish_reason == "stop" else "length")
        return out

    def _vllm_params(self, params: SamplingParams, max_tokens: int, row: int):
        stop = [] if params.ignore_eos else list(dict.fromkeys([*params.stop_token_ids, *self.spec.eos_token_ids]))
        seed = None if params.seed is None else ((params.seed << 20) + row) % 2**63
        sampling = dict(temperature=params.temperature, top_p=params.top_p,
                        top_k=params.top_k if params.top_k > 0 else 0)
        if params.greedy:
            sampling = dict(temperature=0.0)
        return vllm.SamplingParams(max_tokens=max_tokens, ignore_eos=True, stop_token_ids=stop,
                                   seed=seed, logprobs=0, flat_logprobs=True, detokenize=False, **sampling)

    # ---- weights ----------------------------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One weight sync, in HF names: one vLLM layerwise-reload session around all of it (closed even when a
        bucket fails), the tensors loaded in buckets of update_weights_bucket_megabytes, then the prefix cache
        reset once (see the module docstring)."""
        if self._released:
            raise RuntimeError("weights are released; call resume(('weights',)) before update_weights")
        t0 = time.perf_counter()
        s = {"bytes": 0, "tensors": 0, "names": set(), "loaded": set()}
        self.llm.collective_rpc(_begin_reload)
        done = False
        try:
            for batch in buckets(self._renamed(named_tensors, s), self.spec.update_weights_bucket_megabytes * 2**20):
                for loaded in self.llm.collective_rpc(_load_weights, args=(batch,)):
                    s["loaded"].update(loaded)
            done = True
        finally:
            try:
                self.llm.collective_rpc(_finish_reload)
            except Exception:
                if done:  # otherwise the bucket's error is the one to see
                    raise
        if "kv_cache" not in self._asleep:  # a sleeping cache was discarded; it holds nothing old
            self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        self._stale -= s["loaded"]
        self.last_sync = {"seconds": time.perf_counter() - t0, "bytes": s["bytes"], "tensors": s["tensors"]}
        missing = partial_fused_layers(s["names"])
        if missing:
            self._stale |= self.param_names  # the parts not pushed now hold garbage
            raise ValueError(f"update_weights: vLLM fuses these with tensors that were pushed, so they must be "
                             f"pushed too: {missing[:8]}{' ...' if len(missing) > 8 else ''}")

    def _renamed(self, named_tensors, s: dict):
        """The pairs as vLLM loads them: tied lm_head as the embedding, the engine's dtype, each name once."""
        for name, tensor in named_tensors:
            s["bytes"] += tensor.numel() * tensor.element_size()
            s["tensors"] += 1
            if self.tied and name == "lm_head.weight":
                name = "model.embed_tokens.weight"  # vLLM skips lm_head.* of a tied model; it is the embedding
            if self._weight_dtype is not None and tensor.is_floating_point() and tensor.dtype != self._weight_dtype:
                # vLLM would cast while copying too, but warns once per tensor (hundreds of lines per sync)
                tensor = tensor.to(self._weight_dtype)
            if name not in s["names"]:
                s["names"].add(name)
                yield name, tensor

    # ---- memory -----------------------------------------------------------------------------------------------

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """vLLM sleeps as a whole: level 2 drops weights and cache (strive pushes weights again), level 1 (the
        cache alone asked for) keeps a host copy of the weights. Both tags are asleep after either."""
        tags = _known(tags)
        if not tags:
            return
        if self._sleep_mode() and not self._asleep:
            self.llm.sleep(level=2 if "weights" in tags else 1)
            self._asleep = {"weights", "kv_cache"}
            self._level = 2 if "weights" in tags else 1
        self._released = self._released or "weights" in tags

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Wake what `tags` name, and the weights too where they were only moved to the host (level 1) while strive
        still counts them as held. wake_up's answer (None in older vLLM, "fully awake" in 0.32) is not used."""
        tags = _known(tags)
        wake = set(tags) & self._asleep
        if wake and not self._released and self._level == 1:
            wake |= {"weights"} & self._asleep
        if wake:
            self.llm.wake_up(tags=sorted(wake))
            self._asleep -= wake
        if "weights" in tags and self._released:
            self._stale = set(self.param_names)
            self._released = False

    def flush_cache(self) -> None:
        if not self._asleep:  # a sleeping cache holds nothing
            self.llm.reset_prefix_cache()

    def _sleep_mode(self) -> bool:
        if self.on_cpu and not self._said_no_sleep:
            log.warning("vLLM has no sleep mode on CPU: release/resume keep weights and KV cache in memory")
            self._said_no_sleep = True
        return not self.on_cpu and self.spec.free_cache_engine


def _known(tags) -> list[str]:
    tags = list(tags)
    unknown = [t for t in tags if t not in ("weights", "kv_cache")]
    if unknown:
        raise ValueError(f"unknown memory tags {unknown}; strive's are ['weights', 'kv_cache']")
    return tags


def tp_group(dist, tp: int, seed: int):
    """This rank's tensor-parallel group (tp consecutive ranks, the layout vLLM's external launcher builds), its
    index in it, and the seed of the group's first rank. (None, 0, seed) without tensor parallelism."""
    if tp == 1:
        return None, 0, seed
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"rollout.tensor_model_parallel_size={tp} with vLLM needs the trainer's process group "
                         "(one rank per GPU); without one, use tensor_model_parallel_size=1")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world % tp:
        raise ValueError(f"rollout.tensor_model_parallel_size={tp} must divide the number of ranks ({world})")
    mine = None
    for start in range(0, world, tp):  # every rank creates every group, in the same order
        group = dist.new_group(list(range(start, start + tp)), backend="gloo")
        if start <= rank < start + tp:
            mine = group
    seeds: list = [None] * tp
    dist.all_gather_object(seeds, seed, group=mine)
    return mine, rank % tp, seeds[0]


_LIVE_ENGINES = [0]
"""In-process vLLM engines of this process that are not shut down yet."""


def _shut_down_with_others_alive(llm) -> None:
    """vLLM shuts an in-process engine down when its client is collected, and that shutdown also destroys the
    process-wide distributed groups that every other engine of the process uses. Replace the finaliser with one
    that keeps them while another strive engine lives (two engines in a process: tests, a hf/vllm comparison)."""
    client = llm.llm_engine.engine_core
    finalizer = getattr(client, "_finalizer", None)
    if finalizer is None or finalizer.detach() is None:  # not in-process: nothing of this process to keep
        _LIVE_ENGINES[0] -= 1
        return
    client._finalizer = weakref.finalize(client, _shutdown_core, client.engine_core)


def _shutdown_core(core) -> None:
    import vllm.v1.engine.core as core_module

    _LIVE_ENGINES[0] -= 1
    if _LIVE_ENGINES[0] <= 0:
        core.shutdown()
        return
    cleanup = core_module.cleanup_dist_env_and_memory
    core_module.cleanup_dist_env_and_memory = lambda *args, **kwargs: None
    try:
        core.shutdown()
    finally:
        core_module.cleanup_dist_env_and_memory = cleanup


def known_dtype(name) -> Optional[torch.dtype]:
    """The torch dtype strive's name stands for; None for names vLLM resolves itself ("auto")."""
    return torch_dtype(name) if name in DTYPES else None


def max_len(spec: EngineSpec, hf_config) -> int:
    """The longest sequence the engine serves: max_model_len, else the model's context length."""
    cfg = getattr(hf_config, "text_config", None) or hf_config
    return spec.max_model_len or getattr(cfg, "max_position_embeddings", 4096)


def cpu_kv_cache_bytes(spec: EngineSpec, hf_config) -> int:
    """KV cache for max_num_seqs sequences of max_model_len tokens, at most gpu_memory_utilization of host RAM."""
    cfg = getattr(hf_config, "text_config", None) or hf_config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    dtype = known_dtype(spec.dtype)
    itemsize = dtype.itemsize if dtype is not None else 2
    per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    wanted = spec.max_num_seqs * (max_len(spec, hf_config) + 128) * per_token
    return int(min(wanted, spec.gpu_memory_utilization * host))


def partial_fused_layers(names: set[str]) -> list[str]:
    """Names missing from groups vLLM fuses (q/k/v, gate/up) of which some but not all were pushed."""
    missing: set[str] = set()
    for name in names:
        head, _, param = name.rpartition(".")
        parent, _, leaf = head.rpartition(".")
        for group in FUSED:
            if leaf in group:
                missing |= {f"{parent}.{x}.{param}" for x in group} - names
    return sorted(missing)


# ---- worker side: run inside vLLM's worker through collective_rpc (module-level, so they pickle by name) ------


def _unfiltered_logprobs(worker) -> bool:
    """Make the sampler return log_softmax of the logits it gets (temperature applied, top-k/top-p not yet)."""
    inner = getattr(getattr(getattr(worker, "model_runner", None), "sampler", None), "topk_topp_sampler", None)
    if inner is None or not hasattr(inner, "forward"):
        return False
    filtered_forward = inner.forward
    inner.logprobs_mode = "raw_logprobs"  # the inner sampler's own (filtered) log-softmax is not needed

    def forward(logits, generators, k, p):
        logprobs = logits.log_softmax(dim=-1, dtype=torch.float32)  # before the filters modify logits in place
        sampled, _ = filtered_forward(logits, generators, k, p)
        return sampled, logprobs

    inner.forward = forward
    return True


def _parameter_names(worker) -> list[str]:
    return [name for name, _ in worker.model_runner.get_model().named_parameters()]


def _begin_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

    with set_current_vllm_config(worker.vllm_config):
        initialize_layerwise_reload(worker.model_runner.get_model())


def _load_weights(worker, weights: list) -> set[str]:
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(worker.vllm_config), torch.no_grad():
        return set(worker.model_runner.get_model().load_weights(iter(weights)) or ())


def _finish_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

    model, runner = worker.model_runner.get_model(), worker.model_runner
    with set_current_vllm_config(worker.vllm_config), torch.no_grad():
        finalize_layerwise_reload(model, worker.vllm_config.model_config)
        # a tied lm_head shares the embedding's weight but was not reloaded itself: process every module that
        # shares its weight again (on CPU that rebuilds its packed GEMM weight from the new values)
        sharing: dict[int, list] = {}
        for module in model.modules():
            if isinstance(getattr(module, "weight", None), torch.nn.Parameter):
                sharing.setdefault(id(module.weight), []).append(module)
        for modules in sharing.values():
            for module in modules if len(modules) > 1 else ():
                if hasattr(getattr(module, "quant_method", None), "process_weights_after_loading"):
                    module.quant_method.process_weights_after_loading(module)
    for reset in ("reset_lora_state", "reset_encoder_cache", "reset_mm_cache"):
        if hasattr(runner, reset):
            getattr(runner, reset)()
