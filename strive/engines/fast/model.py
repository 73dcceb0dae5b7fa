"""Llama / Qwen2 forward passes over a preallocated KV cache, computed from the transformers model's own parameters.

Why: the fast decode path (generator.py) needs a forward it can capture in a CUDA graph: fixed shapes, a cache that
does not grow, no host syncs. transformers' forward has none of these, so this module re-implements the forward
(only the forward) of the two decoder stacks strive rolls out most, on top of the model's modules: every call reads
`layer.self_attn.q_proj.weight` and friends, so weights copied in place by `update_weights` are seen at once and no
second copy of the weights exists. Supported: Llama and Qwen2 (q/k/v biases, any module bias), GQA, tied or untied
lm_head, rope_theta and every static rope_scaling type (the cos/sin table comes from the model's own rotary module).

What it chose:
- transformers' formulas, fewer kernels: RMSNorm is torch's fused rms_norm (fp32 inside; in bf16 one rounding where
  transformers has two: bit-equality with transformers in bf16 is out of reach anyway, its attention kernels
  differ); q/k/v are one GEMM and gate/up one GEMM over packed weights (below); RoPE is x·cos + rotate_half(x)·sin
  in the model dtype, rotate_half(x)·sin computed as swap_halves(x)·[-sin₁, sin₂] with one addcmul, q and k rotated
  together; the residual adds are folded into the o_proj and down_proj GEMMs (beta = 1); logits in the model dtype.
  A decode layer is ~15 kernels in torch ops, 9 with fast_kernels (norm, qkv GEMM, RoPE + cache write, attention,
  o_proj, norm, gate|up GEMM, SiLU·up, down).
- Packed projections (`pack`): each layer's q/k/v weights (and biases) are copied once into one (Σ out, in)
  buffer and the three parameters re-pointed at row ranges of it, likewise gate/up. The model keeps one copy of
  every weight (the parameters are views: update_weights' in-place copies land in the buffer, transformers'
  own forward reads the same tensors), and a decode layer runs 3 fewer GEMM launches. When a parameter's storage
  is replaced (HFEngine's release/resume of weights), `packed()` sees it and the fast path packs again.
- KV cache: per layer (slots, kv_heads, max_len, head_dim). Decode row r of a batch of b is slot r, so attention
  reads `cache[:b, :, :span]` in place: a (slot, kv_head) pair is one contiguous (max_len, head_dim) matrix and the
  view (b·kv_heads, span, head_dim) needs no copy.
- Decode attention: the G = heads / kv_heads queries that share a KV head become G query rows of one
  (slot, kv_head) problem (no K/V repetition). With fast_kernels, `kernels.decode_attention` reads only each
  slot's own positions; otherwise one SDPA call per layer with an additive mask hiding positions beyond each slot's
  own (computed once per step; with a mask SDPA runs its memory-efficient kernel on CUDA).
- Prefill: prompts right-padded to the longest of the chunk, causal SDPA: a real token attends only to earlier real
  tokens, so no padding mask is needed; padding writes cache positions ≥ the prompt length, which decode overwrites
  before it ever reads them.

    pytest tests/integration/test_fast_engine.py -q
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from strive.engines.fast.options import arch_reason

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
"""rope types whose frequencies do not depend on the sequence length (dynamic NTK and longrope do)."""


def unsupported_reason(model) -> Optional[str]:
    """Why the fast path cannot run this model, or None when it can."""
    config = model.config
    arch = arch_reason(getattr(config, "model_type", None))
    if arch:
        return arch
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("layers", "rotary_emb", "norm", "embed_tokens")):
        return "an unexpected module layout (model.model.{layers,rotary_emb,norm,embed_tokens})"
    rope_type = getattr(inner.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"rope_type {rope_type!r} (supported: {', '.join(STATIC_ROPE_TYPES)})"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers"
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        return "an lm_head with a bias"
    a, m = inner.layers[0].self_attn, inner.layers[0].mlp
    for group in ((a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj)):
        if len({module.bias is None for module in group}) > 1:
            return "projections of which only some have a bias"
    return None


@dataclass(frozen=True)
class Dims:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    intermediate: int
    eps: float
    scaling: float

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads


# ---- numerics shared by prefill and decode (any leading dims) --------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) × weight as one fused kernel, accumulating in fp32 (transformers: the same in fp32, then a cast
    and a separate × weight, i.e. two roundings in bf16 where this has one)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin, rotate_half(x)·sin computed as swap_halves(x)·[-sin₁, sin₂] (only signs move)."""
    half = x.shape[-1] // 2
    return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin_signed)


def project(x: torch.Tensor, w: tuple, dims: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input norm and the packed q|k|v projection: x (..., hidden) → views q (..., H·D), k (..., KVH·D),
    v (..., KVH·D) of one (..., (H + 2·KVH)·D) output."""
    norm_w, qkv_w, qkv_b = w
    kv = dims.kv_heads * dims.head_dim
    out = F.linear(rms_norm(x, norm_w, dims.eps), qkv_w, qkv_b)
    return out.split((dims.heads * dims.head_dim, kv, kv), dim=-1)


def qkv(x: torch.Tensor, w: tuple, cos: torch.Tensor, sin: torch.Tensor, dims: Dims):
    """Input norm, q/k/v projections and RoPE: x (..., hidden) → q (..., H, D), k (..., KVH, D), v (..., KVH, D)."""
    lead = x.shape[:-1]
    q, k, v = project(x, w, dims)
    q = q.view(*lead, dims.heads, dims.head_dim)
    k = k.view(*lead, dims.kv_heads, dims.head_dim)
    v = v.view(*lead, dims.kv_heads, dims.head_dim)
    qk = rope(torch.cat((q, k), dim=-2), cos, sin)  # (..., H + KVH, D): one RoPE for both
    return qk[..., :dims.heads, :], qk[..., dims.heads:, :], v


def add_linear_(x: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """x += inp @ weightᵀ (+ bias), in place: without a bias one GEMM accumulates into x (beta = 1), no extra add."""
    if bias is not None:
        return x.add_(F.linear(inp, weight, bias))
    x.view(-1, x.shape[-1]).addmm_(inp.reshape(-1, inp.shape[-1]), weight.t())
    return x


def out_and_mlp(x: torch.Tensor, attn: torch.Tensor, w: tuple, gated: Callable, eps: float) -> torch.Tensor:
    """Attention output projection + residual, post-attention norm, gated MLP (packed gate|up GEMM, then
    gated: (..., 2I) → act(gate)·up (..., I)) + residual; x (..., hidden) is updated in place (callers pass a
    residual stream they no longer need)."""
    o_w, o_b, norm_w, gate_up_w, gate_up_b, down_w, down_b = w
    x = add_linear_(x, attn, o_w, o_b)
    h = rms_norm(x, norm_w, eps)
    return add_linear_(x, gated(F.linear(h, gate_up_w, gate_up_b)), down_w, down_b)


# ---- packed projections ----------------------------------------------------------------------------------------


def pack_linears(modules: tuple) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One weight buffer (Σ out, in) and one bias buffer (or None) for these Linear modules, whose parameters
    become views of consecutive row ranges: the values are copied once, the old storage is freed."""
    weight = torch.cat([m.weight.data for m in modules])
    bias = None if modules[0].bias is None else torch.cat([m.bias.data for m in modules])
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight.data = weight[start:start + rows]
        if bias is not None:
            m.bias.data = bias[start:start + rows]
        start += rows
    return weight, bias


def is_packed(modules: tuple, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """Whether the modules' weights (and biases) are still the consecutive views pack_linears made of them."""
    w_at, b_at = weight.data_ptr(), None if bias is None else bias.data_ptr()
    for m in modules:
        if m.weight.data_ptr() != w_at or (b_at is not None and m.bias.data_ptr() != b_at):
            return False
        w_at += m.weight.numel() * weight.element_size()
        if b_at is not None:
            b_at += m.bias.numel() * bias.element_size()
    return True


# ---- the model -------------------------------------------------------------------------------------------------


class FastModel:
    """Forward passes over the HF model's modules; owns no parameters. `qkv_fn` / `mlp_fn` may be replaced by
    compiled versions of `qkv` / `out_and_mlp` (decode only: prefill shapes change every call)."""

    def __init__(self, model):
        self.model = model
        inner, config = model.model, model.config
        attn = inner.layers[0].self_attn
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.dims = Dims(layers=len(inner.layers), heads=heads, kv_heads=kv_heads, head_dim=attn.head_dim,
                         hidden=config.hidden_size, vocab=model.get_output_embeddings().weight.shape[0],
                         intermediate=config.intermediate_size, eps=float(inner.norm.variance_epsilon),
                         scaling=float(attn.scaling))
        self.act = inner.layers[0].mlp.act_fn
        self.silu = str(getattr(config, "hidden_act", "")).lower() in ("silu", "swish")
        self.qkv_fn = qkv
        self.mlp_fn = out_and_mlp
        self.kernels = None  # strive.engines.fast.kernels when the fast path runs its Triton kernels (CUDA)
        self._packed: list = []  # per layer ((qkv_w, qkv_b), (gate_up_w, gate_up_b))

    def _groups(self, i: int) -> tuple[tuple, tuple]:
        layer = self.model.model.layers[i]
        a, m = layer.self_attn, layer.mlp
        return (a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj)

    def packed(self) -> bool:
        """Whether every layer's projections are views of this object's packed buffers."""
        return len(self._packed) == self.dims.layers and all(
            is_packed(modules, *buffers) for i, layer in enumerate(self._packed)
            for modules, buffers in zip(self._groups(i), layer))

    def pack(self) -> None:
        """Pack q/k/v and gate/up of every layer (pack_linears), one layer at a time (peak: one layer's copy)."""
        self._packed = []
        with torch.inference_mode(False), torch.no_grad():  # inference tensors would refuse update_weights' copies
            for i in range(self.dims.layers):
                attn, mlp = self._groups(i)
                self._packed.append((pack_linears(attn), pack_linears(mlp)))

    def unpack(self) -> None:
        """Drop the references to the packed buffers (the parameters' storage was replaced or is about to be)."""
        self._packed = []

    def gated(self, gate_up: torch.Tensor) -> torch.Tensor:
        """act(gate)·up from the packed (..., 2I) output → (..., I); one kernel with fast_kernels and SiLU."""
        if self.kernels is not None and self.silu:
            return self.kernels.silu_mul(gate_up)
        half = gate_up.shape[-1] // 2
        return self.act(gate_up[..., :half]) * gate_up[..., half:]

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def attn_weights(self, i: int) -> tuple:
        return (self.model.model.layers[i].input_layernorm.weight, *self._packed[i][0])

    def mlp_weights(self, i: int) -> tuple:
        layer = self.model.model.layers[i]
        a, m = layer.self_attn, layer.mlp
        return (a.o_proj.weight, a.o_proj.bias, layer.post_attention_layernorm.weight, *self._packed[i][1],
                m.down_proj.weight, m.down_proj.bias)

    def rope_table(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin for positions [0, length), (L, D) in the model dtype, from the model's rotary module."""
        probe = torch.empty(0, dtype=self.dtype, device=device)
        positions = torch.arange(length, device=device)[None]  # (1, L)
        cos, sin = self.model.model.rotary_emb(probe, positions)  # (1, L, D)
        half = cos.shape[-1] // 2
        return cos[0].contiguous(), torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.model.model.norm.weight, self.dims.eps)

    def prefill(self, caches: list, ids: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts ids (n, P) into cache slots (n,); returns the last real token's logits (n, V)."""
        d = self.dims
        n, width = ids.shape
        x = F.embedding(ids, self.model.get_input_embeddings().weight)  # (n, P, hidden)
        cos, sin = cos[:width, None, :], sin[:width, None, :]  # (P, 1, D)
        for i, (k_cache, v_cache) in enumerate(caches):
            q, k, v = qkv(x, self.attn_weights(i), cos, sin, d)  # (n, P, H | KVH, D)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (n, heads, P, D)
            k_cache[slots, :, :width] = k
            v_cache[slots, :, :width] = v
            if d.groups > 1:
                k, v = k.repeat_interleave(d.groups, dim=1), v.repeat_interleave(d.groups, dim=1)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=d.scaling)  # (n, H, P, D)
            x = out_and_mlp(x, attn.transpose(1, 2).reshape(n, width, -1), self.mlp_weights(i), self.gated, d.eps)
        last = x[torch.arange(n, device=x.device), lengths - 1]  # (n, hidden)
        return F.linear(self._final(last), self.model.get_output_embeddings().weight)  # (n, V)

    def decode(self, caches: list, tokens: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, span: int,
               cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, logits: torch.Tensor) -> None:
        """One token per slot r < b (tokens, pos, rows: (b,)), attending to cache[r, :, :span] up to pos[r];
        writes the logits into `logits` (b, V)."""
        d = self.dims
        b = tokens.shape[0]
        x = F.embedding(tokens, self.model.get_input_embeddings().weight)  # (b, hidden)
        if self.kernels is None:  # the kernels read the (L, D) tables at pos and each slot's length themselves
            step_cos, step_sin = cos[pos][:, None, :], sin[pos][:, None, :]  # (b, 1, D)
            hidden_pos = positions[None, :span] > pos[:, None]  # (b, span)
            bias = torch.zeros(b, 1, 1, span, dtype=x.dtype, device=x.device)
            bias.masked_fill_(hidden_pos[:, None, None, :], float("-inf"))  # (b, 1, 1, span)
        for i, (k_cache, v_cache) in enumerate(caches):
            if self.kernels is not None:  # RoPE + cache writes in one kernel, attention over each slot's length
                q = self.kernels.rope_to_cache(*project(x, self.attn_weights(i), d), cos, sin, pos, rows,
                                               k_cache, v_cache, d.kv_heads, d.head_dim)  # (b, KVH, G, D)
                attn = self.kernels.decode_attention(q, k_cache, v_cache, pos, span, d.scaling)  # (b, KVH, G, D)
            else:
                q, k, v = self.qkv_fn(x, self.attn_weights(i), step_cos, step_sin, d)  # (b, H | KVH, D)
                k_cache[rows, :, pos] = k
                v_cache[rows, :, pos] = v
                q = q.reshape(b, d.kv_heads, d.groups, d.head_dim)  # the G queries of one KV head as G query rows
                attn = F.scaled_dot_product_attention(q, k_cache[:b, :, :span], v_cache[:b, :, :span],
                                                      attn_mask=bias, scale=d.scaling)  # (b, KVH, G, D)
            x = self.mlp_fn(x, attn.reshape(b, -1), self.mlp_weights(i), self.gated, d.eps)
        torch.mm(self._final(x), self.model.get_output_embeddings().weight.t(), out=logits)
