"""The reference rollout engine: a plain transformers model with its own decode loop.

It exists so that rollout runs wherever torch runs (CPU tests, a GPU without vLLM/SGLang) and so that the other
engines have something exact to be checked against. What it chose:

- Its own loop instead of `model.generate`: generate keeps per-step scores (B × T × V) to return log-probs, and
  its sampler renormalises after top-k/top-p. Here the log-prob of a sampled token is log_softmax(logits / T) at
  that token, the same quantity the trainer recomputes, and only (B,) values are kept per step.
- Left padding, position ids = cumsum(mask) - 1, one prefill per prompt with a DynamicCache, copied to its n
  samples' rows, then one token per step; finished rows keep feeding the pad token until every row of the chunk is
  done. A chunk holds whole prompts (max_num_seqs // n of them, at least one).
- Sampling runs on the device with a torch.Generator: seeded from SamplingParams.seed when given (a call can be
  replayed), else from one generator seeded with EngineSpec.seed at start.
- release("weights") swaps every parameter's storage for an empty tensor (identity and weight tying survive);
  resume re-allocates it uninitialised, and generate refuses to run until every parameter has been pushed again.
- Attention runs on SDPA's flash / memory-efficient / math kernels, not cuDNN (SDPA_BACKENDS below).
- Nothing is preallocated: the KV cache lives only inside one chunk of generate, so gpu_memory_utilization,
  enforce_eager and free_cache_engine mean nothing here; max_num_seqs bounds the chunk size.
- It knows nothing of the fast decode path (strive/engines/fast/: preallocated KV cache, CUDA graphs, continuous
  batching). `FastHFEngine` there extends this class, keeping its weights handling; which of the two a run with
  rollout.name=hf gets is decided and printed by `strive.engines.base.start_engine` (engine_kwargs.hf.fast).

    pytest tests/integration -k engine
"""

from __future__ import annotations

import gc
import inspect
import time
from typing import Callable, Iterable, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from strive.engines.base import Completion, EngineSpec, SamplingParams, StopCheck
from strive.models.loading import load_causal_lm

RELEASED_MESSAGE = "weights were released; call update_weights after resume"

# cuDNN's SDPA builds a plan for every new (batch, kv length) shape: a decode loop meets a new one each step, which
# tripled the time of a first 256-token rollout on an H200 (13.6 s vs 3.9 s); the other kernels need no plan.
# It lives here, not in the fast package: the fast path builds on this module anyway (FastHFEngine extends
# HFEngine), while this module must not import the fast path.
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class HFEngine:
    """RolloutEngine on a transformers causal LM that this object owns (no sharding, no tensor parallelism)."""

    def __init__(self, spec: EngineSpec):
        if spec.tensor_parallel_size != 1:
            raise ValueError(f"the hf engine runs on one device; tensor_parallel_size={spec.tensor_parallel_size}")
        if spec.load_format not in ("auto", "dummy", "safetensors"):
            raise ValueError(f"load_format={spec.load_format!r}: the hf engine knows 'auto', 'safetensors' (both read "
                             "the weights at model.path) and 'dummy'")
        self.spec = spec.with_token_ids()
        self.device = torch.device(spec.device)
        self.model = load_causal_lm(spec.model_path, dtype=spec.dtype, override_config=spec.override_config,
                                    trust_remote_code=spec.trust_remote_code, device=self.device,
                                    random_init=spec.load_format == "dummy")
        # no requires_grad_(False): on CPU it sends bf16 linears down a oneDNN path that kept ~0.25 GB per prompt
        # of Qwen2.5-0.5B alive during prefill (18 GB for 64 prompts); inference_mode already keeps no graph
        self.model.eval()
        # transformers 5.2x renamed forward's `past_key_values` to `cache`; older releases only know the first
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self._shapes = {name: p.shape for name, p in self.model.named_parameters()}
        self._released = False
        self._stale: set[str] = set()  # parameters re-allocated by resume and not yet pushed
        self._generator = torch.Generator(device=self.device).manual_seed(spec.seed)
        self.last_sync: dict = {}

    # ---- generation -------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        return self.generate_until(prompts, params, None, 1)

    def generate_until(self, prompts: list[list[int]], params: SamplingParams,
                       should_stop: Optional[Callable[[], bool]], every: int) -> list[Completion]:
        """Interruptible (base.py): `generate`, asking `should_stop()` every `every` decode steps."""
        rows = self._rows(prompts, params)
        if not rows:
            return []
        generator = self._generator
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        out: list[Completion] = []
        n, stop = params.n, StopCheck(should_stop, every)
        per_chunk = max(1, self.spec.max_num_seqs // n)  # whole prompts: their n samples share one prefill
        unique = rows[::n]
        with torch.inference_mode(), sdpa_kernel(SDPA_BACKENDS):
            for start in range(0, len(unique), per_chunk):
                chunk = unique[start:start + per_chunk]
                if stop.fired:  # told to stop in an earlier chunk: these never started
                    out += [Completion([], [], "abort") for _ in range(len(chunk) * n)]
                    continue
                out += self._generate_chunk(chunk, n, params, generator, stop)
                self._empty_cache()
        return out

    def _rows(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """The prompts repeated n times each, prompt-major; refuses to run on released or half-pushed weights."""
        if self._released or self._stale:
            pending = f" ({len(self._stale)} tensors not pushed yet)" if self._stale and not self._released else ""
            raise RuntimeError(RELEASED_MESSAGE + pending)
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        return [list(p) for p in prompts for _ in range(params.n)]

    def _generate_chunk(self, prompts: list[list[int]], n: int, params: SamplingParams, generator,
                        stop: StopCheck) -> list[Completion]:
        """n completions of each prompt (prompt-major). Each prompt is prefilled once; its n samples then share
        (a copy of) its cache, so a group of n costs one prefill, not n."""
        dev, pad = self.device, self.spec.pad_token_id
        limits = torch.tensor([self._max_new(len(p), params) for p in prompts], device=dev)
        limits = limits.repeat_interleave(n)  # (B,) B = prompts × n
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=dev)  # (U, L)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)  # (U, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (U, L)
        stop_ids = list(params.stop_token_ids) + list(self.spec.eos_token_ids)
        stop_ids = torch.tensor([] if params.ignore_eos else stop_ids, dtype=torch.long, device=dev)

        done = limits <= 0  # (B,)
        stopped = torch.zeros_like(done)  # (B,)
        lengths = torch.zeros_like(limits)  # (B,)
        tokens, logprobs = [], []  # S × (B,)
        cache = self._new_cache()
        for step in range(int(limits.max())):
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                logits_to_keep=1, **{self._cache_arg: cache}).logits[:, -1]  # (U or B, V)
            if step == 0 and n > 1:  # after the prefill: every prompt's row becomes its n samples' rows
                logits = logits.repeat_interleave(n, dim=0)  # (B, V)
                cache.batch_repeat_interleave(n)
                mask, positions = mask.repeat_interleave(n, dim=0), positions.repeat_interleave(n, dim=0)
            token, logprob = sample(logits, params, generator)  # (B,), (B,)
            token = torch.where(done, torch.full_like(token, pad), token)
            tokens.append(token)
            logprobs.append(logprob)
            lengths += (~done).long()
            hit = ~done & torch.isin(token, stop_ids)  # (B,)
            stopped |= hit
            done |= hit | (lengths >= limits)
            if bool(done.all()) or stop.after(1):
                break
            input_ids = token[:, None]  # (B, 1)
            positions = positions[:, -1:] + 1  # (B, 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)  # (B, L + s)
        del cache
        return _completions(tokens, logprobs, lengths, stopped, done)

    def _max_new(self, prompt_len: int, params: SamplingParams) -> int:
        if self.spec.max_model_len is None:
            return max(0, params.max_new_tokens)
        return max(0, min(params.max_new_tokens, self.spec.max_model_len - prompt_len))

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    # ---- weights and memory -----------------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy (name, tensor) pairs named as in the HF state_dict into the model; tied aliases are copied once."""
        if self._released:
            raise RuntimeError("weights are released; call resume(('weights',)) before update_weights")
        t0 = time.perf_counter()
        targets = self.model.state_dict(keep_vars=True)
        canonical = _canonical_names(self.model)
        seen, unknown, nbytes, count = set(), [], 0, 0
        with torch.no_grad():
            for name, tensor in named_tensors:
                target = targets.get(name)
                if target is None:
                    unknown.append(name)
                    continue
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ValueError(f"update_weights: {name} has shape {tuple(tensor.shape)}, the model's is "
                                     f"{tuple(target.shape)}")
                nbytes += tensor.numel() * tensor.element_size()
                count += 1
                key = canonical.get(name, name)
                if key in seen:  # tied alias of a tensor already copied in this call
                    continue
                seen.add(key)
                target.data.copy_(tensor)  # casts dtype, moves device
                self._stale.discard(key)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if unknown:
            raise KeyError(f"update_weights: the model has no tensors named {unknown[:8]}"
                           f"{' ...' if len(unknown) > 8 else ''} ({len(unknown)} unknown)")
        self._empty_cache()  # the gathered buckets are garbage now (a sync is one call)
        self.last_sync = {"seconds": time.perf_counter() - t0, "bytes": nbytes, "tensors": count}

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Give memory back: "weights" empties every parameter's storage; the KV cache only lives inside generate."""
        if "weights" in tags and not self._released:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)
            self._released = True
        self._empty_cache()

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Re-allocate parameter storage (uninitialised): the caller pushes weights next with update_weights."""
        if "weights" in tags and self._released:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    p.data = torch.empty(self._shapes[name], dtype=p.dtype, device=p.device)
            self._stale = set(self._shapes)
            self._released = False

    def flush_cache(self) -> None:
        self._empty_cache()

    def _empty_cache(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def sample(logits: torch.Tensor, params: SamplingParams,
           generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs under log_softmax(logits / T), not renormalised after top-k/top-p."""
    logits = logits.float()  # (B, V)
    if params.greedy:
        token = logits.argmax(-1)  # (B,)
        return token, torch.log_softmax(logits, -1).gather(-1, token[:, None])[:, 0]
    scaled = logits / params.temperature  # (B, V)
    filtered = scaled
    if params.top_k > 0:
        kth = torch.topk(scaled, min(params.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = filtered.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)  # (B, V)
        before = probs.cumsum(-1) - probs  # (B, V) mass strictly ahead of each token
        drop_sorted = before >= params.top_p
        drop_sorted[:, 0] = False  # always keep the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V)
        filtered = filtered.masked_fill(drop, float("-inf"))
    token = torch.multinomial(filtered.softmax(-1), 1, generator=generator)[:, 0]  # (B,)
    return token, torch.log_softmax(scaled, -1).gather(-1, token[:, None])[:, 0]


def _completions(tokens: list, logprobs: list, lengths: torch.Tensor, stopped: torch.Tensor,
                 done: torch.Tensor) -> list[Completion]:
    """Rows not done when the loop ended were stopped by generate_until's check: 'abort'."""
    if not tokens:
        return [Completion([], [], "length") for _ in range(len(lengths))]
    ids = torch.stack(tokens, dim=1).tolist()  # (B, S)
    lps = torch.stack(logprobs, dim=1).tolist()  # (B, S)
    out = []
    for row_ids, row_lps, n, stop, end in zip(ids, lps, lengths.tolist(), stopped.tolist(), done.tolist()):
        out.append(Completion(row_ids[:n], row_lps[:n], "stop" if stop else "length" if end else "abort"))
    return out


def _canonical_names(model: torch.nn.Module) -> dict[str, str]:
    """Every state_dict name → the name of the tensor it shares storage with (tied embeddings map to one name)."""
    first: dict[int, str] = {}
    canonical = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        canonical[name] = first.setdefault(id(tensor), name)
    return canonical
