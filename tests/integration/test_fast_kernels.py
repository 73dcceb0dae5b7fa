"""The fast path's Triton kernels against the torch code they replace (strive/engines/fast/kernels.py).

On CUDA they run compiled; elsewhere under TRITON_INTERPRET=1 (set here before triton is imported, so run this
file in its own process when another test imported triton first). Skipped where triton is not installed.

    pytest tests/integration/test_fast_kernels.py -q
"""

import importlib.util
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.mark.parametrize("dtype,temperature", [(torch.float32, 1.0), (torch.bfloat16, 0.7)])
def test_sample_plain_matches_the_torch_sampler(dtype, temperature):
    from strive.engines.fast.kernels import sample_plain
    from strive.engines.fast.sampling import SamplerKind, sample

    gen = torch.Generator().manual_seed(0)
    b, vocab = 12, 5003  # not a multiple of the kernel's block
    logits = (torch.randn(b, vocab, generator=gen) * 3).to(dtype).to(DEVICE)
    logits[0, 17] = 40.0  # one row nearly deterministic
    u = torch.rand(b, generator=gen).to(DEVICE)
    u[1] = 1.0 - 2**-24  # the last uniform the host draws: must stay inside the vocabulary
    temp = torch.tensor([temperature], device=DEVICE)
    token, logprob = sample_plain(logits, u, temp)
    ref_token, ref_logprob = sample(logits, u, SamplerKind(), temp, torch.ones(1, device=DEVICE))
    assert token.dtype == torch.long and token[0].item() == 17 and 0 <= token[1].item() < vocab
    keep = torch.arange(b, device=DEVICE) != 1  # row 1 sits on the last boundary: the summation order decides
    assert torch.equal(token[keep], ref_token[keep])
    logprob, ref_logprob = logprob[keep], ref_logprob[keep]
    torch.testing.assert_close(logprob, ref_logprob, atol=1e-4, rtol=1e-5)
    exact = torch.log_softmax(logits.double() / temperature, -1).gather(-1, token[:, None])[keep, 0]  # float64
    torch.testing.assert_close(logprob.double(), exact, atol=1e-4, rtol=1e-5)


def test_rope_to_cache_matches_the_torch_ops():
    from strive.engines.fast.kernels import rope_to_cache
    from strive.engines.fast.model import rope

    gen = torch.Generator().manual_seed(1)
    b, heads, kv_heads, d, slots, length = 5, 6, 2, 16, 8, 32
    dt = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # the interpreter's bf16 conversions are not the GPU's
    q = torch.randn(b, heads * d, generator=gen).to(dt).to(DEVICE)
    kv = torch.randn(b, 2 * kv_heads * d, generator=gen).to(dt).to(DEVICE)
    k, v = kv[:, :kv_heads * d], kv[:, kv_heads * d:]  # views with a row stride of 2·KVH·D, as from one buffer
    angles = torch.arange(length)[:, None] * torch.rand(d // 2, generator=gen)[None]  # (L, D/2)
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(dt).to(DEVICE)
    sin = torch.cat((-angles.sin(), angles.sin()), -1).to(dt).to(DEVICE)  # signed, as model.rope_table
    pos = torch.tensor([0, 3, 31, 7, 12], device=DEVICE)
    rows = torch.tensor([4, 0, 2, 7, 1], device=DEVICE)
    k_cache = torch.zeros(slots, kv_heads, length, d, dtype=dt, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    q_out = rope_to_cache(q, k, v, cos, sin, pos, rows, k_cache, v_cache, kv_heads, d)

    c, s = cos[pos][:, None, :], sin[pos][:, None, :]  # (b, 1, D)
    x = torch.cat((q.view(b, heads, d), k.reshape(b, kv_heads, d)), 1)  # (b, H + KVH, D)
    swapped = torch.cat((x[..., d // 2:], x[..., :d // 2]), -1)
    # model.rope's rounding: x·cos rounded to bf16, then + swap(x)·sin in fp32, rounded once
    qk = ((x * c).float() + swapped.float() * s.float()).to(dt)
    torch.testing.assert_close(qk, rope(x, c, s), atol=2**-6, rtol=2**-7)  # the torch op, up to its rounding
    ref_k = torch.zeros_like(k_cache)
    ref_v = torch.zeros_like(v_cache)
    ref_k[rows, :, pos] = qk[:, heads:]
    ref_v[rows, :, pos] = v.reshape(b, kv_heads, d)
    assert q_out.shape == (b, kv_heads, heads // kv_heads, d)
    assert torch.equal(q_out.reshape(b, heads, d), qk[:, :heads])
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)


@pytest.mark.parametrize("model", ["tiny_model_dir", "tiny_qwen_dir"])
def test_fast_path_with_kernels_equals_the_torch_ops(request, model):
    """The decode loop with both kernels in place (forced on here; on by default only on CUDA) gives the tokens
    and log-probs of the torch ops, greedy and sampled."""
    from strive.engines.base import EngineSpec, SamplingParams
    from strive.engines.fast import kernels as fast_kernels
    from strive.engines.fast.engine import FastHFEngine

    model_dir = request.getfixturevalue(model)
    prompts = [[3, 9, 27, 81], [5], list(range(40, 70)), [7, 7, 7]]
    engine = FastHFEngine(EngineSpec(model_path=model_dir, dtype="float32", device=DEVICE, max_num_seqs=4,
                                     engine_kwargs={"fast": "on", "fast_kernels": False}))
    fast = engine.fast
    runs = {}
    for use in (False, True):
        fast.kernels = fast.net.kernels = fast_kernels if use else None
        runs[use] = [engine.generate(prompts, SamplingParams(max_new_tokens=12, ignore_eos=True, seed=5, **p))
                     for p in (dict(do_sample=False), dict(temperature=0.9))]
    for plain, kernel in zip(runs[False], runs[True]):
        assert [c.token_ids for c in kernel] == [c.token_ids for c in plain]
        for a, b in zip(kernel, plain):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups,head_dim,splits", [(7, 64, 1), (6, 128, 3), (1, 32, 2), (3, 64, 0)])
def test_decode_attention_matches_masked_softmax_in_float64(groups, head_dim, splits):
    """Each row attends to exactly its own slot's positions [0, pos]: stale values beyond pos (here huge) and other
    slots never leak in; split or not, the result is the float64 softmax's."""
    from strive.engines.fast.kernels import decode_attention

    gen = torch.Generator().manual_seed(2)
    b, kv_heads, slots, length, span = 5, 2, 6, 200, 192
    dt = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    q = torch.randn(b, kv_heads, groups, head_dim, generator=gen).to(dt).to(DEVICE)
    k_cache = (torch.randn(slots, kv_heads, length, head_dim, generator=gen) * 2).to(dt).to(DEVICE)
    v_cache = torch.randn(slots, kv_heads, length, head_dim, generator=gen).to(dt).to(DEVICE)
    pos = torch.tensor([0, 63, 64, 191, 100], device=DEVICE)  # block edges, the span's last position
    for r in range(b):  # garbage after each row's position must be ignored
        k_cache[r, :, pos[r] + 1:] = 1e4
        v_cache[r, :, pos[r] + 1:] = 1e4
    out = decode_attention(q, k_cache, v_cache, pos, span, head_dim ** -0.5, splits=splits)
    assert out.shape == q.shape and out.dtype == dt
    for r in range(b):
        n = int(pos[r]) + 1
        k, v = k_cache[r, :, :n].double(), v_cache[r, :, :n].double()  # (KVH, n, D)
        weights = torch.softmax(q[r].double() @ k.transpose(1, 2) * head_dim ** -0.5, -1)  # (KVH, G, n)
        tol = dict(atol=2e-2, rtol=2e-2) if dt == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[r].double(), weights @ v, **tol)


def test_silu_mul_matches_torch():
    from strive.engines.fast.kernels import silu_mul

    gen = torch.Generator().manual_seed(3)
    dt = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    gate_up = (torch.randn(3, 4, 2 * 1100, generator=gen) * 4).to(dt).to(DEVICE)  # not a multiple of the block
    out = silu_mul(gate_up)
    ref = torch.nn.functional.silu(gate_up[..., :1100]) * gate_up[..., 1100:]
    assert out.shape == (3, 4, 1100)
    tol = dict(atol=1e-5, rtol=1e-5) if dt == torch.float32 else dict(atol=2**-6, rtol=2**-7)
    torch.testing.assert_close(out, ref, **tol)
