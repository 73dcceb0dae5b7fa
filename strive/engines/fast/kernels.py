"""Triton kernels for the fast rollout path's decode step, used on CUDA when triton is importable.

Why: a captured decode step is ~20 kernels per layer plus a sampler of ~8 passes over the (b, V) logits; on an
H100 (bench/rollout_profile.py) the step is launch- and pass-bound, not bandwidth-bound. Each kernel here replaces
a chain of small ones with the same arithmetic:
- `sample_plain`: sampling at temperature T without top-k/top-p (the rollout default): the inverse-CDF index that
  `sampling._inverse_cdf` finds with a cumsum and a searchsorted (eight kernels and five fp32 (b, V)
  temporaries there) as the count of vocabulary entries whose cumulative mass stays below u × total. Pass 1 splits
  each row's vocabulary into SAMPLE_CHUNKS chunks, one program each (an online max / sum of exp(z − max)); pass 2,
  one program per row, merges them, finds the chunk where the cumulative mass crosses u × total and counts inside
  it: the logits are read about 1 + 1/SAMPLE_CHUNKS times.
- `rope_to_cache`: RoPE of q and k for one decode token per slot, k and v written into the KV cache at
  (slot, position), q written as the (b, KV heads, G, D) query block the attention call reads (seven kernels
  there: two cats, a multiply, an addcmul, two index_puts and a copy). It rounds x·cos to the model dtype before
  adding swap_halves(x)·sin, as `model.rope` does.
- `decode_attention`: one query token per slot against that slot's own cache prefix [0, pos], the G query heads
  of a KV head as one (G, D) block (flash-decoding: online softmax over blocks of BLOCK_N positions). It replaces
  the mask construction and SDPA's memory-efficient kernel, which reads the whole span of every slot and works on
  query tiles of 32-64 rows where G is 6-7. When b × KV heads programs would leave the GPU's SMs idle (the small
  batches at a rollout's tail, long contexts) the positions are split among programs and a second kernel merges
  the partial softmaxes.
- `silu_mul`: silu(gate) · up from the packed gate|up GEMM output (model.py packs the two projections), with
  torch's roundings (silu rounded to the model dtype, then the product).
All are checked against the torch code they replace (tests/integration/test_fast_kernels.py; on CPU under
TRITON_INTERPRET=1).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

SAMPLE_BLOCK = 2048
SAMPLE_CHUNKS = 16
"""The vocabulary of a row is cut into this many chunks, one program each, for the first pass (one program per row
left most SMs idle at b = 256 and read the logits at a fraction of the bandwidth)."""


@triton.jit
def _sample_partials_kernel(logits_ptr, stride, temp_ptr, stat_ptr, V, chunk, CHUNKS: tl.constexpr,
                            BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1)
    base = logits_ptr + row.to(tl.int64) * stride
    inv_t = 1.0 / tl.load(temp_ptr)
    offs = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    end = tl.minimum(c * chunk + chunk, V)
    for start in range(c * chunk, end, BLOCK):  # this chunk's max and Σ exp(z − max), online
        z = tl.load(base + start + offs, mask=start + offs < end, other=float("-inf")).to(tl.float32) * inv_t
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    tl.store(stat_ptr + (row * CHUNKS + c) * 2, m)  # an empty chunk: max −inf, sum 0
    tl.store(stat_ptr + (row * CHUNKS + c) * 2 + 1, s)


@triton.jit
def _sample_pick_kernel(logits_ptr, stride, u_ptr, temp_ptr, stat_ptr, token_ptr, logprob_ptr, V, chunk,
                        CHUNKS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride
    inv_t = 1.0 / tl.load(temp_ptr)
    cs = tl.arange(0, CHUNKS)
    m_c = tl.load(stat_ptr + (row * CHUNKS + cs) * 2)
    m = tl.max(m_c, 0)
    w = tl.load(stat_ptr + (row * CHUNKS + cs) * 2 + 1) * tl.exp(m_c - m)  # each chunk's mass, scaled by e^−m
    total = tl.sum(w, 0)
    target = tl.load(u_ptr + row) * total
    cum = tl.cumsum(w, 0)
    hit = tl.minimum(tl.sum((cum < target).to(tl.int32), 0), CHUNKS - 1)  # the chunk where the CDF crosses u
    acc = tl.sum(tl.where(cs < hit, w, 0.0), 0)  # mass of the chunks before it
    offs = tl.arange(0, BLOCK)
    below = tl.zeros((), tl.int32)
    end = tl.minimum(hit * chunk + chunk, V)
    for start in range(hit * chunk, end, BLOCK):  # entries of that chunk whose cumulative mass stays below
        keep = start + offs < end
        z = tl.load(base + start + offs, mask=keep, other=float("-inf")).to(tl.float32) * inv_t
        p = tl.exp(z - m)
        below += tl.sum(((acc + tl.cumsum(p, 0) < target) & keep).to(tl.int32), 0)
        acc += tl.sum(p, 0)
    token = tl.minimum(hit * chunk + below, V - 1)
    z_tok = tl.load(base + token).to(tl.float32) * inv_t
    tl.store(token_ptr + row, token.to(tl.int64))
    tl.store(logprob_ptr + row, z_tok - (m + tl.log(total)))


def sample_plain(logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (b,) int64 and their log-probs (b,) under log_softmax(logits / T): logits (b, V), u (b,), T (1,)."""
    b, vocab = logits.shape
    chunk = triton.cdiv(triton.cdiv(vocab, SAMPLE_CHUNKS), SAMPLE_BLOCK) * SAMPLE_BLOCK
    stat = torch.empty(b, SAMPLE_CHUNKS, 2, dtype=torch.float32, device=logits.device)
    token = torch.empty(b, dtype=torch.long, device=logits.device)
    logprob = torch.empty(b, dtype=torch.float32, device=logits.device)
    _sample_partials_kernel[(b, SAMPLE_CHUNKS)](logits, logits.stride(0), temperature, stat, vocab, chunk,
                                                CHUNKS=SAMPLE_CHUNKS, BLOCK=SAMPLE_BLOCK)
    _sample_pick_kernel[(b,)](logits, logits.stride(0), u, temperature, stat, token, logprob, vocab, chunk,
                              CHUNKS=SAMPLE_CHUNKS, BLOCK=SAMPLE_BLOCK)
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


# ---- decode attention ------------------------------------------------------------------------------------------

ATTN_BLOCK = 64


@triton.jit
def _decode_attn_kernel(q_ptr, kc_ptr, vc_ptr, pos_ptr, out_ptr, part_ptr, stat_ptr, c_slot, c_head, c_pos,
                        scale, chunk, KV_HEADS: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                        D: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, PRECISION: tl.constexpr):
    i = tl.program_id(0)  # decode row = cache slot
    kh = tl.program_id(1)
    split = tl.program_id(2)
    g = tl.arange(0, GP)
    d = tl.arange(0, D)
    n = tl.arange(0, BLOCK_N)
    head_row = (i.to(tl.int64) * KV_HEADS + kh) * G  # q and out are (b, KVH, G, D), contiguous
    q = tl.load(q_ptr + (head_row + g)[:, None] * D + d[None, :], mask=(g < G)[:, None], other=0.0)
    length = tl.load(pos_ptr + i).to(tl.int32) + 1
    start = split * chunk
    end = tl.minimum(start + chunk, length)
    base = i.to(tl.int64) * c_slot + kh * c_head
    m = tl.full((GP,), float("-inf"), tl.float32)
    total = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    for lo in range(start, end, BLOCK_N):  # every block holds at least one valid position, so m stays finite
        cols = lo + n
        valid = cols < end
        at = base + cols[:, None].to(tl.int64) * c_pos + d[None, :]
        k = tl.load(kc_ptr + at, mask=valid[:, None], other=0.0)  # (BLOCK_N, D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (GP, BLOCK_N) fp32
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        v = tl.load(vc_ptr + at, mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        total = total * alpha + tl.sum(p, 1)
        m = m_new
    rows = (head_row + g)[:, None] * D + d[None, :]
    if SPLITS == 1:
        tl.store(out_ptr + rows, (acc / total[:, None]).to(out_ptr.dtype.element_ty), mask=(g < G)[:, None])
    else:  # partial results: (b, KVH, SPLITS, GP, D) accumulators, (b, KVH, SPLITS, GP, 2) max and sum
        part = (i.to(tl.int64) * KV_HEADS + kh) * SPLITS + split
        tl.store(part_ptr + (part * GP + g)[:, None] * D + d[None, :], acc)
        tl.store(stat_ptr + (part * GP + g) * 2, m)
        tl.store(stat_ptr + (part * GP + g) * 2 + 1, total)


@triton.jit
def _merge_splits_kernel(part_ptr, stat_ptr, out_ptr, KV_HEADS: tl.constexpr, G: tl.constexpr,
                         GP: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
    i = tl.program_id(0)
    kh = tl.program_id(1)
    g = tl.arange(0, GP)
    d = tl.arange(0, D)
    first = (i.to(tl.int64) * KV_HEADS + kh) * SPLITS
    m = tl.full((GP,), float("-inf"), tl.float32)
    for s in range(SPLITS):  # split 0 always holds position 0, so m is finite after the first round
        m = tl.maximum(m, tl.load(stat_ptr + ((first + s) * GP + g) * 2))
    total = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    for s in range(SPLITS):  # an empty split has max −inf and sum 0: weight 0
        w = tl.exp(tl.load(stat_ptr + ((first + s) * GP + g) * 2) - m)
        total += w * tl.load(stat_ptr + ((first + s) * GP + g) * 2 + 1)
        acc += w[:, None] * tl.load(part_ptr + ((first + s) * GP + g)[:, None] * D + d[None, :])
    head_row = (i.to(tl.int64) * KV_HEADS + kh) * G
    tl.store(out_ptr + (head_row + g)[:, None] * D + d[None, :], (acc / total[:, None]).to(out_ptr.dtype.element_ty),
             mask=(g < G)[:, None])


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def attention_splits(programs: int, span: int, device: torch.device) -> int:
    """How many programs share one (slot, KV head): enough for two per SM, at most one per block of the span."""
    return max(1, min(triton.cdiv(2 * _sm_count(device), programs), triton.cdiv(span, ATTN_BLOCK)))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor, span: int,
                     scale: float, splits: int = 0) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v over positions [0, pos[r]] of slot r: q (b, KVH, G, D) contiguous, caches
    (S, KVH, L, D) with slot r = decode row r, pos (b,) < span ≤ L. Returns (b, KVH, G, D) in q's dtype.
    splits 0: chosen here."""
    b, kv_heads, groups, head_dim = q.shape
    assert q.is_contiguous() and k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1
    splits = splits or attention_splits(b * kv_heads, span, q.device)
    chunk = triton.cdiv(triton.cdiv(span, splits), ATTN_BLOCK) * ATTN_BLOCK  # positions per split, whole blocks
    out = torch.empty_like(q)
    gp = max(16, triton.next_power_of_2(groups))  # tl.dot wants at least 16 rows
    part = stat = out
    if splits > 1:
        part = torch.empty(b, kv_heads, splits, gp, head_dim, dtype=torch.float32, device=q.device)
        stat = torch.empty(b, kv_heads, splits, gp, 2, dtype=torch.float32, device=q.device)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    _decode_attn_kernel[(b, kv_heads, splits)](
        q, k_cache, v_cache, pos, out, part, stat, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), scale,
        chunk, KV_HEADS=kv_heads, G=groups, GP=gp, D=head_dim, BLOCK_N=ATTN_BLOCK, SPLITS=splits,
        PRECISION=precision)
    if splits > 1:
        _merge_splits_kernel[(b, kv_heads)](part, stat, out, KV_HEADS=kv_heads, G=groups, GP=gp, D=head_dim,
                                            SPLITS=splits)
    return out


# ---- gated MLP activation --------------------------------------------------------------------------------------

SILU_BLOCK = 1024


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, stride, width, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = cols < width
    src = gu_ptr + row.to(tl.int64) * stride + cols
    gate = tl.load(src, mask=keep, other=0.0).to(tl.float32)
    up = tl.load(src + width, mask=keep, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)  # F.silu's output, rounded to the model dtype
    tl.store(out_ptr + row.to(tl.int64) * width + cols, (act.to(tl.float32) * up.to(tl.float32)).to(up.dtype),
             mask=keep)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate_up[..., :I]) · gate_up[..., I:] for gate_up (..., 2I) with unit last stride → (..., I)."""
    width = gate_up.shape[-1] // 2
    flat = gate_up.reshape(-1, 2 * width)
    assert flat.stride(1) == 1
    out = torch.empty(flat.shape[0], width, dtype=gate_up.dtype, device=gate_up.device)
    _silu_mul_kernel[(flat.shape[0], triton.cdiv(width, SILU_BLOCK))](flat, out, flat.stride(0), width,
                                                                     BLOCK=SILU_BLOCK)
    return out.view(*gate_up.shape[:-1], width)
