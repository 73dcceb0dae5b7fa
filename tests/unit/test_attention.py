"""Packed attention (strive/models/attention.py): equal to the padded forward, per-sequence, never an N × N mask."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from strive.models import attention
from strive.models.attention import resolve_backend
from strive.models.forward import PolicyForward
from strive.models.loading import load_causal_lm


def varied_batch(vocab: int, prompt_lens, resp_lens, P: int = 12, T: int = 8, seed: int = 0):
    """Left-padded prompts and right-padded responses of the given lengths (B = len(prompt_lens))."""
    g = torch.Generator().manual_seed(seed)
    B = len(prompt_lens)
    ids = torch.zeros(B, P + T, dtype=torch.long)
    am = torch.zeros(B, P + T, dtype=torch.long)
    rmask = torch.zeros(B, T)
    for i, (p, r) in enumerate(zip(prompt_lens, resp_lens)):
        ids[i, P - p: P + r] = torch.randint(0, vocab - 3, (p + r,), generator=g)
        am[i, P - p: P + r] = 1
        rmask[i, :r] = 1
    return ids, am, (am.cumsum(-1) - 1).clamp(min=0), rmask


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_equals_padded_in_fp32_values_and_gradients(arch, tiny_model_dir, tiny_qwen_dir):
    path = tiny_model_dir if arch == "llama" else tiny_qwen_dir
    batch = varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])
    results = []
    for backend in (None, "sdpa_loop"):
        torch.manual_seed(0)
        model = load_causal_lm(path, dtype="float32")
        wrapper = PolicyForward(model, packed_backend=backend)
        logp, ent = wrapper(*batch, temperature=0.9, with_entropy=True)
        (logp.sum() + 0.1 * ent.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), ent.detach(), grads))
    (lp0, en0, g0), (lp1, en1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(en1, en0, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 5
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_packed_equals_padded_in_bf16(tiny_qwen_dir):
    batch = varied_batch(260, [12, 4, 9], [8, 3, 6])
    model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16")
    with torch.no_grad():
        padded, _ = PolicyForward(model)(*batch)
        packed, _ = PolicyForward(model, packed_backend="sdpa_loop")(*batch)
    torch.testing.assert_close(packed, padded, atol=2e-2, rtol=2e-2)


def test_packed_attention_runs_per_sequence_without_a_mask(tiny_model_dir, monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.shape[-2], attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    ids, am, pos, rmask = varied_batch(260, [12, 3, 7], [8, 2, 4])
    with torch.no_grad():
        PolicyForward(model, packed_backend="sdpa_loop")(ids, am, pos, rmask)
    layers = model.config.num_hidden_layers
    assert len(calls) == 3 * layers  # one call per sequence per layer
    assert sorted({n for n, _ in calls}) == [5, 11, 20]  # each sequence's own length, never the packed 36
    assert all(mask is None for _, mask in calls)


def test_backend_choice_and_errors():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, torch.bfloat16) == "sdpa_loop"
    assert resolve_backend("sdpa_loop", cpu, torch.float32) == "sdpa_loop"
    with pytest.raises(ValueError, match="packed_attention=varlen needs CUDA"):
        resolve_backend("varlen", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="choose one of auto, varlen, flash_attn, sdpa_loop"):
        resolve_backend("dense", cpu, torch.float32)


def test_auto_runs_small_cuda_micro_batches_padded(tiny_model_dir, monkeypatch):
    from strive.models import forward as fw
    from strive.models.attention import CUDA_PADDED_UP_TO, padded_up_to

    assert padded_up_to("auto", torch.device("cpu")) == 0  # the CPU is never launch-bound here: always packed
    assert padded_up_to("varlen", torch.device("cuda")) == 0  # an explicit backend is always honoured
    assert padded_up_to("auto", torch.device("cuda")) == CUDA_PADDED_UP_TO
    seen = []
    real = fw.response_hidden
    monkeypatch.setattr(fw, "response_hidden", lambda *a: seen.append(a[5]) or real(*a))  # a[5]: packed_backend
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    wrapper = PolicyForward(model, packed_backend="sdpa_loop", padded_up_to=3 * 20)
    wrapper(*varied_batch(260, [12, 3, 7], [8, 2, 4]))  # 3 rows × 20 = 60 tokens: padded
    wrapper(*varied_batch(260, [12, 3, 7, 5], [8, 2, 4, 1]))  # 80 tokens: packed
    assert seen == [None, "sdpa_loop"]


def test_sdpa_loop_grouped_query_attention_against_float64_and_without_saved_weights():
    """The CPU path's grouped-query attention: K/V head j serves query heads j·G … j·G+G-1 (checked against a float64
    per-sequence reference with K/V repeated), and backward keeps no (n, n) attention weights of any sequence
    (the math kernel's, which cost the bf16 demo 0.4 GB of peak memory)."""
    g = torch.Generator().manual_seed(0)
    H, Hkv, D, lens = 8, 2, 16, [40, 24]
    N = sum(lens)
    q, k, v = (torch.randn(h, N, D, generator=g, requires_grad=True) for h in (H, Hkv, Hkv))
    cu = torch.tensor([0, lens[0], N])
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        out = attention._sdpa_loop(q, k, v, cu, None)  # (H, N, D)
    assert not [s for s in shapes if len(s) >= 2 and s[-1] == s[-2] and s[-1] in lens], shapes
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    kr, vr = k64.repeat_interleave(H // Hkv, 0), v64.repeat_interleave(H // Hkv, 0)  # (H, N, D)
    ref = torch.cat([F.scaled_dot_product_attention(q64[:, a:b], kr[:, a:b], vr[:, a:b], is_causal=True)
                     for a, b in ((0, lens[0]), (lens[0], N))], dim=1)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q64, k64, v64))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_cpp_wrapper_takes_varlens_kernel_through_its_aten_op():
    """Under the C++ wrapper, `varlen` (and `auto` on CUDA without flash-attn) resolve to `varlen_aten`; other
    backends and the CPU are unchanged. Resolving touches no CUDA runtime, so this runs anywhere."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_backend("varlen", cuda, torch.bfloat16) == "varlen"
    assert resolve_backend("varlen", cuda, torch.bfloat16, cpp_wrapper=True) == "varlen_aten"
    assert resolve_backend("sdpa_loop", cuda, torch.bfloat16, cpp_wrapper=True) == "sdpa_loop"
    assert resolve_backend("auto", cpu, torch.bfloat16, cpp_wrapper=True) == "sdpa_loop"
    auto = resolve_backend("auto", cuda, torch.bfloat16, cpp_wrapper=True)
    assert auto == ("flash_attn" if importlib.util.find_spec("flash_attn") else "varlen_aten")


def test_varlen_aten_traces_whole_with_only_scalar_arguments():
    """`varlen_aten` on meta tensors (shapes only; the kernel itself is CUDA-only, tests/gpu has its numbers):
    dynamo and AOT autograd trace packed attention with grouped K/V heads, forward and backward, as one graph each,
    and the attention ops in them take no list argument (Inductor's C++ wrapper has none for a custom op: torch's
    varlen_attn, whose window is a List[int], failed there)."""
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return gm

    H, Hkv, N, D = 4, 2, 37, 64
    q, k, v = (torch.randn(1, h, N, D, device="meta", dtype=torch.bfloat16, requires_grad=True) for h in (H, Hkv, Hkv))
    cu = torch.tensor([0, 5, 20, 37], dtype=torch.int32).to("meta")

    def packed(q, k, v, cu):
        out, _ = attention.packed_attention_forward(None, q, k, v, None, scaling=D ** -0.5, cu_seq_lens_q=cu,
                                                    max_length_q=17, packed_backend="varlen_aten")
        return out  # (1, N, H, D)

    torch._dynamo.reset()
    out = torch.compile(packed, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)(q, k, v, cu)
    out.sum().backward()
    assert out.shape == (1, N, H, D) and q.grad.shape == q.shape and k.grad.shape == k.shape
    calls = [n for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    attn = [n for n in calls if "flash_attention" in str(n.target) or "torch_attn" in str(n.target)]
    assert {str(n.target) for n in attn} == {"aten._flash_attention_forward.default",
                                             "aten._flash_attention_backward.default"}
    assert not [a for n in attn for a in (*n.args, *n.kwargs.values()) if isinstance(a, (list, tuple))]


def test_sdpa_loop_backward_work_does_not_grow_with_sequences():
    """The per-sequence attention's backward makes a constant number of full-size (packed N) gradient buffers, not
    one per sequence (slicing each sequence out zero-filled a full gradient per sequence and added them up)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class FullSize(TorchDispatchMode):
        def __init__(self, numels):
            super().__init__()
            self.numels, self.count = numels, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            self.count += sum(isinstance(o, torch.Tensor) and o.numel() in self.numels for o in outs)
            return out

    counts = []
    for n_seq in (3, 12):
        lengths = torch.full((n_seq,), 5)
        cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        N, D = int(lengths.sum()), 8
        q, k, v = (torch.randn(h, N, D, requires_grad=True) for h in (4, 2, 2))  # (H, N, D), grouped K/V
        out = attention._sdpa_loop(q, k, v, cu, None)
        mode = FullSize({4 * N * D, 2 * N * D})
        with mode:
            out.sum().backward()
        counts.append(mode.count)
    assert counts[1] == counts[0], counts  # 13 and 13; slicing made 25 and 79
