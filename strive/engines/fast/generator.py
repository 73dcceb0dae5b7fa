"""The hf engine's fast decode loop: the same transformers weights, a preallocated KV cache, decode steps replayed
as CUDA graphs, sampling on the device, and continuous batching.

Why: `model.generate` spends ~20 ms per decode step at batch 256 on an H100/H200 for a 0.5B model whose
memory-bandwidth floor is under 1 ms (../shared/GPU.md): the time goes to launching hundreds of small kernels from
Python, a cache that grows by concatenation and a host sync per step. This loop keeps the hf engine's contract and
weights (FastHFEngine, engine.py, owns the model, update_weights and release/resume of weights through HFEngine;
this object only reads the modules) and removes those costs. FastHFEngine builds it; a run with rollout.name=hf
gets FastHFEngine when `engine_kwargs.hf.fast` says so (options.py; the run prints which path it took):
    actor_rollout_ref.rollout.engine_kwargs.hf.fast=auto|on|off    (auto: on for CUDA + Llama/Qwen2)
    ...hf.fast_sync_every=8    ...hf.fast_compile=false    ...hf.fast_kernels=true
    ...hf.fast_prefill_tokens=N    (default: rollout.max_num_batched_tokens where EngineSpec has it, else 16384)

What it chose:
- KV cache: per layer K and V of shape (slots, kv_heads, max_len, head_dim) in the model dtype (model.py says
  why this order). max_len = max_model_len (or, when unset, the longest prompt + max_new_tokens seen so far), rounded
  up to 64. slots = max_num_seqs on CPU; on CUDA as many as fit, up to max_num_seqs, in gpu_memory_utilization ×
  total memory minus what torch has already allocated minus an estimate of the step's workspace; an error if not
  even one sequence fits.
- Continuous batching over slots, with host checks every fast_sync_every steps (batching.py): the device
  keeps each slot's state (next token, position, count, done flags, output tokens and log-probs), the host only
  refills finished slots and collects their outputs.
- CUDA graphs (CUDA and not enforce_eager): one graph per (batch bucket, attention span) for the model step, span
  being the cache prefix attended (256, 512, ... up to max_len, so early steps read less of the cache), and one per
  (batch bucket, sampler kind) for sampling and bookkeeping; all share one memory pool. Each is captured when a
  step first needs it (mid-generate too: the slot state is saved around the capture's warm-up run), so a call
  captures only the shapes it uses (a full batch of equal lengths: 2-3 graphs). update_weights copies into the
  same parameter storage, so graphs are reused as they are. When a parameter's storage moves (resume of "weights"
  allocates new storage) or the cache is re-created (resume of "kv_cache", a longer max_len), the graphs are
  dropped and captured again as needed: keeping the old addresses would need CUDA virtual-memory tricks
  (what SGLang's torch_memory_saver does); a capture costs a warm-up step plus the capture (stats and
  bench/rollout_gpu.py report the time). If a capture fails on some torch/driver, the path logs it once
  (stats["graph_error"]) and runs without graphs.
- Sampling: sampling.py (uniforms from (seed, completion index, token index), inverse CDF on the device).
- fast_kernels (CUDA, head_dim a power of 2; default on when triton imports): Triton kernels (kernels.py)
  for the decode layer's RoPE + KV-cache writes, its attention (each slot's own length, no mask) and SiLU·up, and
  for the plain sampler (no top-k/top-p); off: the torch ops.
- The model's q/k/v and gate/up parameters are packed into one buffer each (views, no second copy; model.py)
  when the path is built, and again after HFEngine re-allocates them.
- fast_compile: torch.compile (inductor) fuses the element-wise work of the decode layer and of the sampler before
  capture. It compiles a few times per function (the first batch bucket, then a dynamic batch size, and batch 1:
  dynamo specialises sizes 0/1) during the first capture; later captures reuse the code. Off by default.

    pytest tests/integration/test_fast_engine.py -q            # CPU: the same code without graphs
    pytest tests/gpu/test_fast_engine_gpu.py -q                # CUDA graphs, bf16
    python bench/rollout_gpu.py                                # throughput against model.generate
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.nn.attention import sdpa_kernel

from strive.engines.base import Completion, EngineSpec, SamplingParams, StopCheck
from strive.engines.fast.batching import SlotScheduler, bucket, span_buckets
from strive.engines.fast.model import FastModel, out_and_mlp, qkv
from strive.engines.fast.options import FastOptions
from strive.engines.fast.sampling import SamplerKind, row_keys, sample, uniforms
from strive.engines.hf import SDPA_BACKENDS

ALIGN = 64
"""max_len and every attention span are multiples of this (SDPA's memory-efficient kernel wants masks aligned)."""
log = logging.getLogger(__name__)


def load_kernels():
    """strive.engines.fast.kernels, or None where triton is not installed (the torch ops run instead)."""
    try:
        from strive.engines.fast import kernels as fast_kernels
    except ImportError as exc:
        log.warning("fast rollout: Triton kernels unavailable (%s); using the torch ops", exc)
        return None
    return fast_kernels


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass
class _Runtime:
    """What the decode loop owns on the device: the KV cache, per-slot state, and the CUDA graphs over both."""

    caches: list  # per layer (K, V), each (S, KVH, L, D)
    cos: torch.Tensor  # (L, D)
    sin: torch.Tensor  # (L, D) signed, see model.rope
    positions: torch.Tensor  # (L,) 0..L-1
    rows: torch.Tensor  # (S,) 0..S-1
    tok: torch.Tensor  # (S,) next input token
    pos: torch.Tensor  # (S,) its position
    n_gen: torch.Tensor  # (S,) tokens generated
    limit: torch.Tensor  # (S,) tokens allowed
    done: torch.Tensor  # (S,) bool
    stopped: torch.Tensor  # (S,) bool: ended by EOS / a stop token
    u: torch.Tensor  # (S, L) uniforms per token
    out_tok: torch.Tensor  # (S, L)
    out_lp: torch.Tensor  # (S, L)
    stop_table: torch.Tensor  # (V,) bool
    temperature: torch.Tensor  # (1,)
    top_p: torch.Tensor  # (1,)
    logits: torch.Tensor  # (S, V) model dtype
    graphs: dict = field(default_factory=dict)
    pool: object = None
    signature: tuple = ()

    @property
    def slots(self) -> int:
        return self.tok.shape[0]

    def state(self) -> tuple:
        """What a decode or sampling step changes, besides the KV cache and the logits."""
        return self.tok, self.pos, self.n_gen, self.done, self.stopped, self.out_tok, self.out_lp

    @property
    def max_len(self) -> int:
        return self.u.shape[1]


def record(rt: _Runtime, rows: torch.Tensor, token: torch.Tensor, logprob: torch.Tensor) -> None:
    """Append each still-running row's token and log-prob, update its count and done flags, feed the token back.
    Rows already done only get scratch writes (beyond their count, at a clamped position)."""
    done = rt.done[rows]
    active = ~done
    n = rt.n_gen[rows]
    col = n.clamp(max=rt.max_len - 1)
    rt.out_tok[rows, col] = token
    rt.out_lp[rows, col] = logprob
    n = n + active
    hit = active & rt.stop_table[token]
    rt.n_gen[rows] = n
    rt.stopped[rows] = rt.stopped[rows] | hit
    rt.done[rows] = done | hit | (n >= rt.limit[rows])
    rt.tok[rows] = token
    rt.pos[rows] = (rt.pos[rows] + 1).clamp(max=rt.max_len - 1)


class FastGenerator:
    """Generates for FastHFEngine on its model; owns only the KV cache, slot state and graphs (`_Runtime`)."""

    def __init__(self, model, spec: EngineSpec, opts: FastOptions):
        self.model, self.spec, self.opts = model, spec, opts
        self.net = FastModel(model)
        self.net.pack()
        self.device = torch.device(spec.device)
        self.use_graphs = self.device.type == "cuda" and not spec.enforce_eager
        self._sample = sample
        head_dim = self.net.dims.head_dim
        pow2 = head_dim & (head_dim - 1) == 0  # the RoPE kernel's tl.arange over head_dim needs a power of 2
        use_kernels = self.device.type == "cuda" and opts.kernels and not opts.compile and pow2
        self.kernels = load_kernels() if use_kernels else None
        self.net.kernels = self.kernels
        if opts.compile:
            self.net.qkv_fn = torch.compile(qkv)
            self.net.mlp_fn = torch.compile(out_and_mlp)
            self._sample = torch.compile(sample)
        self._rt: Optional[_Runtime] = None
        self._kv_released = False
        self._last_len = 0
        self._seeds = torch.Generator().manual_seed(spec.seed)
        self._capture_stream = None
        self.stats = {"captures": 0, "capture_seconds": 0.0, "host_checks": 0, "decode_steps": 0, "prefills": 0,
                      "moves": 0}

    # ---- generate ----------------------------------------------------------------------------------------------

    def generate(self, rows: list[list[int]], limits: list[int], params: SamplingParams,
                 stop: Optional[StopCheck] = None) -> list[Completion]:
        """Completions of `rows` (prompt-major, n already expanded), at most limits[i] tokens each; `stop` ends
        the call early (generate_until), the unfinished ones coming back as 'abort'."""
        results: list = [Completion([], [], "length") if lim <= 0 else None for lim in limits]
        todo = [i for i, lim in enumerate(limits) if lim > 0]
        if not todo:
            return results
        kind = SamplerKind.of(params, self.net.dims.vocab)
        seed = params.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._seeds))
        keys = None if kind.greedy else row_keys(seed, list(range(len(rows))))
        if not self.net.packed():  # the parameters got new storage (resume of weights): pack them again
            self.net.pack()
        with torch.inference_mode(), sdpa_kernel(SDPA_BACKENDS):
            rt = self._runtime(max(len(rows[i]) + limits[i] for i in todo))
            self._configure(rt, params)
            signature = tuple(p.data_ptr() for p in self.model.parameters())
            if rt.signature != signature:  # parameters moved (resume of weights): graphs would read freed memory
                rt.graphs.clear()
                rt.pool = None
                rt.signature = signature
            SlotScheduler(self, rt, rows, limits, keys, kind, results, stop or StopCheck()).run(todo)
        return results

    def _configure(self, rt: _Runtime, params: SamplingParams) -> None:
        rt.stop_table.zero_()
        if not params.ignore_eos:
            vocab = rt.stop_table.shape[0]
            ids = [i for i in list(params.stop_token_ids) + list(self.spec.eos_token_ids) if 0 <= i < vocab]
            if ids:
                rt.stop_table[torch.tensor(ids, device=self.device)] = True
        rt.temperature.fill_(1.0 if params.greedy else params.temperature)
        rt.top_p.fill_(params.top_p)

    def prefill(self, rt: _Runtime, chunk: list[tuple[int, int]], rows, limits, keys, kind: SamplerKind) -> None:
        """Prompts of the (slot, row) pairs into their slots, and their first token sampled and recorded."""
        dev, pad = self.device, self.spec.pad_token_id
        prompts = [rows[r] for _, r in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=dev)  # (n, P)
        lengths = torch.tensor([len(p) for p in prompts], device=dev)  # (n,)
        slots = torch.tensor([s for s, _ in chunk], device=dev)  # (n,)
        rt.limit[slots] = torch.tensor([limits[r] for _, r in chunk], device=dev)
        if keys is not None:
            steps = max(limits[r] for _, r in chunk)
            rt.u[slots, :steps] = uniforms(keys[[r for _, r in chunk]], steps).to(dev)
        rt.n_gen[slots] = 0
        rt.done[slots] = False
        rt.stopped[slots] = False
        rt.pos[slots] = lengths - 1  # record() advances it to the first generated token's position
        logits = self.net.prefill(rt.caches, ids, lengths, slots, rt.cos, rt.sin)  # (n, V)
        token, logprob = sample(logits, rt.u[slots, 0], kind, rt.temperature, rt.top_p)  # eager: shapes vary
        record(rt, slots, token, logprob)
        self.stats["prefills"] += 1

    def decode(self, rt: _Runtime, steps: int, b: int, max_pos: int, kind: SamplerKind) -> None:
        """`steps` decode steps of rows [0, b); max_pos is the largest next-input position among busy slots."""
        self.stats["decode_steps"] += steps
        graphs = None
        if self.use_graphs:
            graphs = self._graphs_for(rt, b, bucket(span_buckets(rt.max_len), max_pos + steps), kind)
        if graphs is not None:
            for _ in range(steps):
                graphs[0].replay()
                graphs[1].replay()
            return
        for step in range(steps):
            self._model_step(rt, b, min(rt.max_len, _round_up(max_pos + step + 1, ALIGN)))
            self._sample_step(rt, b, kind)

    def _model_step(self, rt: _Runtime, b: int, span: int) -> None:
        self.net.decode(rt.caches, rt.tok[:b], rt.pos[:b], rt.rows[:b], span, rt.cos, rt.sin, rt.positions,
                        rt.logits[:b])

    def _sample_step(self, rt: _Runtime, b: int, kind: SamplerKind) -> None:
        rows = rt.rows[:b]
        u = rt.u[rows, rt.n_gen[:b].clamp(max=rt.max_len - 1)]  # (b,)
        if self.kernels is not None and kind == SamplerKind():  # plain sampling: one kernel, two passes
            token, logprob = self.kernels.sample_plain(rt.logits[:b], u, rt.temperature)
        else:
            token, logprob = self._sample(rt.logits[:b], u, kind, rt.temperature, rt.top_p)
        record(rt, rows, token, logprob)

    def move(self, rt: _Runtime, src: list[int], dst: list[int], span: int) -> None:
        """Copy slots src → dst: the first `span` cache positions and every piece of slot state."""
        src_t, dst_t = torch.tensor(src, device=self.device), torch.tensor(dst, device=self.device)
        for k_cache, v_cache in rt.caches:
            k_cache[dst_t, :, :span] = k_cache[src_t, :, :span]
            v_cache[dst_t, :, :span] = v_cache[src_t, :, :span]
        for t in (rt.tok, rt.pos, rt.n_gen, rt.limit, rt.done, rt.stopped, rt.u, rt.out_tok, rt.out_lp):
            t[dst_t] = t[src_t]
        self.stats["moves"] += len(src)

    # ---- CUDA graphs -------------------------------------------------------------------------------------------

    def _graphs_for(self, rt: _Runtime, b: int, span: int, kind: SamplerKind):
        """The (model, sampler) graphs for this step shape, captured on first use; None where capturing fails on
        this setup: then it says so once and the loop goes on without graphs (same kernels, one launch each)."""
        try:
            model = self._graph(rt, ("model", b, span), lambda: self._model_step(rt, b, span))
            return model, self._graph(rt, ("sample", b, kind), lambda: self._sample_step(rt, b, kind))
        except Exception as exc:  # e.g. an op that cannot be captured on this torch/driver
            self.use_graphs = False
            rt.graphs.clear()
            rt.pool = None
            self.stats["graph_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("fast rollout: CUDA graph capture failed (%s); continuing without CUDA graphs",
                        self.stats["graph_error"], exc_info=True)
            return None

    def _graph(self, rt: _Runtime, key: tuple, fn):
        """rt.graphs[key], capturing fn first if needed. Capture may happen mid-generate: the warm-up run advances
        the slots' state, so it is saved and put back (the model step's warm-up only rewrites the K/V that its next
        replay writes again, and logits that the replay overwrites)."""
        graph = rt.graphs.get(key)
        if graph is None:
            start = time.perf_counter()
            saved = [t.clone() for t in rt.state()]
            try:
                graph = self._capture(rt, fn)
            finally:
                for t, s in zip(rt.state(), saved):
                    t.copy_(s)
            rt.graphs[key] = graph
            self.stats["captures"] += 1
            self.stats["capture_seconds"] += time.perf_counter() - start
        return graph

    def _capture(self, rt: _Runtime, fn) -> "torch.cuda.CUDAGraph":
        """fn's kernels as a CUDA graph in the runtime's pool (all of this object's CUDA-graph calls are here).
        capture_begin/end on a side stream rather than `with torch.cuda.graph(...)`, which runs gc.collect() and
        empty_cache() before every capture: a second or more per RL step when every step captures again."""
        if rt.pool is None:
            rt.pool = torch.cuda.graph_pool_handle()
        if self._capture_stream is None:  # one stream for every capture: a pool's blocks are reused per stream
            self._capture_stream = torch.cuda.Stream(self.device)
        main, side = torch.cuda.current_stream(self.device), self._capture_stream
        side.wait_stream(main)
        with torch.cuda.stream(side):
            fn()  # warm-up outside the capture: cuBLAS workspaces, compilation, autotuning
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin(rt.pool)
            try:
                fn()
            finally:
                graph.capture_end()
        main.wait_stream(side)
        return graph

    # ---- memory ------------------------------------------------------------------------------------------------

    def _runtime(self, need: int) -> _Runtime:
        """The runtime, (re-)allocated when absent or too short for prompt + completion lengths up to `need`."""
        rt = self._rt
        if rt is not None and rt.max_len >= need:
            return rt
        length = _round_up(self.spec.max_model_len or need, ALIGN)
        length = max(length, rt.max_len if rt is not None else 0, _round_up(need, ALIGN))
        self._free()
        self._rt = self._allocate(length)
        self._kv_released = False  # generate after release without resume: allocated here, resume has nothing to do
        return self._rt

    def _allocate(self, max_len: int) -> _Runtime:
        d, dev, dtype = self.net.dims, self.device, self.net.dtype
        slots = self._plan_slots(max_len)
        cos, sin = self.net.rope_table(max_len, dev)

        def zeros(*shape, dt=torch.long):
            return torch.zeros(*shape, dtype=dt, device=dev)

        caches = [(zeros(slots, d.kv_heads, max_len, d.head_dim, dt=dtype),
                   zeros(slots, d.kv_heads, max_len, d.head_dim, dt=dtype)) for _ in range(d.layers)]
        self._last_len = max_len
        return _Runtime(caches=caches, cos=cos, sin=sin, positions=torch.arange(max_len, device=dev),
                        rows=torch.arange(slots, device=dev), tok=zeros(slots), pos=zeros(slots),
                        n_gen=zeros(slots), limit=zeros(slots), done=zeros(slots, dt=torch.bool).fill_(True),
                        stopped=zeros(slots, dt=torch.bool), u=zeros(slots, max_len, dt=torch.float32).fill_(0.5),
                        out_tok=zeros(slots, max_len), out_lp=zeros(slots, max_len, dt=torch.float32),
                        stop_table=zeros(d.vocab, dt=torch.bool), temperature=zeros(1, dt=torch.float32),
                        top_p=zeros(1, dt=torch.float32), logits=zeros(slots, d.vocab, dt=dtype))

    def _plan_slots(self, max_len: int) -> int:
        """max_num_seqs on CPU; on CUDA as many slots as gpu_memory_utilization leaves room for, up to that."""
        if self.device.type != "cuda":
            return self.spec.max_num_seqs
        d, elt = self.net.dims, torch.finfo(self.net.dtype).bits // 8
        per_slot = (2 * d.layers * d.kv_heads * max_len * d.head_dim * elt  # K and V
                    + max_len * 16  # u, out_tok, out_lp
                    + d.vocab * (elt + 24))  # the logits row and the sampler's (b, V) temporaries
        prefill = self.opts.prefill_tokens * elt * (4 * d.hidden + 3 * d.intermediate
                                                    + 2 * (d.heads + 2 * d.kv_heads) * d.head_dim)
        total = torch.cuda.get_device_properties(self.device).total_memory
        allocated = torch.cuda.memory_allocated(self.device)
        budget = self.spec.gpu_memory_utilization * total - allocated - prefill
        slots = min(self.spec.max_num_seqs, int(budget // per_slot))
        if slots < 1:
            gib = 2**30
            raise RuntimeError(
                f"fast rollout: the KV cache cannot hold one sequence of {max_len} tokens ({per_slot / gib:.2f} GiB "
                f"with its workspace): gpu_memory_utilization={self.spec.gpu_memory_utilization} × "
                f"{total / gib:.1f} GiB − {allocated / gib:.2f} GiB already allocated − {prefill / gib:.2f} GiB "
                f"prefill workspace leaves {budget / gib:.2f} GiB. Raise gpu_memory_utilization, lower "
                "max_model_len or fast_prefill_tokens, or release other memory first")
        return slots

    def _free(self) -> None:
        self._rt = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self, tags: tuple[str, ...]) -> None:
        """"kv_cache": free the cache, the slot state and the graphs (their pool); "weights": drop the packed buffers
        (FastHFEngine empties the parameters next; generate packs the pushed weights again)."""
        if "weights" in tags:
            self.net.unpack()
        if "kv_cache" in tags:
            self._free()
            self._kv_released = True

    def resume(self, tags: tuple[str, ...]) -> None:
        """"kv_cache": allocate the cache again (new addresses, so graphs are captured again at the next generate)."""
        if "kv_cache" in tags and self._kv_released:
            self._kv_released = False
            if self._last_len:
                with torch.inference_mode():
                    self._rt = self._allocate(self._last_len)

    @property
    def cache_shape(self) -> Optional[tuple[int, ...]]:
        """(slots, kv_heads, max_len, head_dim) of each layer's K and V, None while not allocated."""
        return None if self._rt is None else tuple(self._rt.caches[0][0].shape)
