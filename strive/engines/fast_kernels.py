"""Triton kernels for the fast rollout path's decode step, used on CUDA when triton is importable.

Why: a captured decode step is ~20 kernels per layer plus a sampler of ~8 passes over the (b, V) logits; on an
H100 (bench/rollout_profile.py) the step is launch- and pass-bound, not bandwidth-bound. Two kernels here each
replace a chain of small ones with the same arithmetic:
- `sample_plain`: sampling at temperature T without top-k/top-p (the rollout default) in two passes over the
  logits per row: an online max / sum of exp(z − max), then the count of vocabulary entries whose cumulative mass
  stays below u × total, which is the inverse-CDF index `fast_sampling._inverse_cdf` finds with a cumsum and a
  searchsorted (eight kernels and five fp32 (b, V) temporaries there).
- `rope_to_cache`: RoPE of q and k for one decode token per slot, k and v written into the KV cache at
  (slot, position), q written as the (b, KV heads, G, D) query block the attention call reads (seven kernels
  there: two cats, a multiply, an addcmul, two index_puts and a copy). It rounds x·cos to the model dtype before
  adding swap_halves(x)·sin, as `fast_model.rope` does.
Both are checked against the torch code they replace (tests/integration/test_fast_kernels.py; on CPU under
TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SAMPLE_BLOCK = 4096


@triton.jit
def _sample_kernel(logits_ptr, stride, u_ptr, temp_ptr, token_ptr, logprob_ptr, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride
    inv_t = 1.0 / tl.load(temp_ptr)
    offs = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):  # pass 1: max and Σ exp(z − max), online
        z = tl.load(base + start + offs, mask=start + offs < V, other=float("-inf")).to(tl.float32) * inv_t
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    target = tl.load(u_ptr + row) * s
    acc = tl.zeros((), tl.float32)
    below = tl.zeros((), tl.int32)
    for start in range(0, V, BLOCK):  # pass 2: how many entries have cumulative mass < u · total
        z = tl.load(base + start + offs, mask=start + offs < V, other=float("-inf")).to(tl.float32) * inv_t
        p = tl.exp(z - m)
        c = acc + tl.cumsum(p, 0)
        below += tl.sum(((c < target) & (start + offs < V)).to(tl.int32), 0)
        acc += tl.sum(p, 0)
    token = tl.minimum(below, V - 1)
    z_tok = tl.load(base + token).to(tl.float32) * inv_t
    tl.store(token_ptr + row, token.to(tl.int64))
    tl.store(logprob_ptr + row, z_tok - (m + tl.log(s)))


def sample_plain(logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (b,) int64 and their log-probs (b,) under log_softmax(logits / T): logits (b, V), u (b,), T (1,)."""
    b, vocab = logits.shape
    token = torch.empty(b, dtype=torch.long, device=logits.device)
    logprob = torch.empty(b, dtype=torch.float32, device=logits.device)
    _sample_kernel[(b,)](logits, logits.stride(0), u, temperature, token, logprob, vocab, BLOCK=SAMPLE_BLOCK)
    return token, logprob


@triton.jit
def _rope_cache_kernel(q_ptr, k_ptr, v_ptr, q_stride, kv_stride, cos_ptr, sin_ptr, pos_ptr, slot_ptr,
                       kc_ptr, vc_ptr, c_slot, c_head, c_pos, q_out_ptr,
                       HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr):
    i = tl.program_id(0)  # decode row
    h = tl.program_id(1)  # head: < HEADS a query head, else a KV head
    half: tl.constexpr = D // 2
    d = tl.arange(0, D)
    swap = tl.where(d < half, d + half, d - half)
    pos = tl.load(pos_ptr + i).to(tl.int64)
    cos = tl.load(cos_ptr + pos * D + d).to(tl.float32)
    sin = tl.load(sin_ptr + pos * D + d).to(tl.float32)
    if h < HEADS:
        src = q_ptr + i.to(tl.int64) * q_stride + h * D
    else:
        src = k_ptr + i.to(tl.int64) * kv_stride + (h - HEADS) * D
    x = tl.load(src + d)
    xs = tl.load(src + swap).to(tl.float32)
    rotated = ((x.to(tl.float32) * cos).to(x.dtype).to(tl.float32) + xs * sin).to(x.dtype)
    if h < HEADS:  # (b, HEADS, D) is (b, KV_HEADS, G, D) laid out contiguously
        tl.store(q_out_ptr + (i.to(tl.int64) * HEADS + h) * D + d, rotated)
    else:
        kh = h - HEADS
        slot = tl.load(slot_ptr + i).to(tl.int64)
        at = slot * c_slot + kh * c_head + pos * c_pos + d
        tl.store(kc_ptr + at, rotated)
        tl.store(vc_ptr + at, tl.load(v_ptr + i.to(tl.int64) * kv_stride + kh * D + d))


def rope_to_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  pos: torch.Tensor, slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  kv_heads: int, head_dim: int) -> torch.Tensor:
    """q (b, H·D), k and v (b, KVH·D) from the projections; cos, sin (L, D); pos, slots (b,); caches (S, KVH, L, D).
    Writes RoPE(k) and v at cache[slot, :, pos]; returns RoPE(q) as (b, KVH, G, D)."""
    b = q.shape[0]
    heads = q.shape[1] // head_dim
    assert q.stride(1) == 1 and k.stride(1) == 1 and v.stride(1) == 1 and k.stride(0) == v.stride(0)
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1
    q_out = torch.empty(b, heads * head_dim, dtype=q.dtype, device=q.device)
    _rope_cache_kernel[(b, heads + kv_heads)](
        q, k, v, q.stride(0), k.stride(0), cos, sin, pos, slots, k_cache, v_cache, k_cache.stride(0),
        k_cache.stride(1), k_cache.stride(2), q_out, HEADS=heads, KV_HEADS=kv_heads, D=head_dim)
    return q_out.view(b, kv_heads, heads // kv_heads, head_dim)
