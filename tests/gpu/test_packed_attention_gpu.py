"""Packed attention on CUDA: torch's varlen flash kernel (and SDPA per sequence) against the padded forward, bf16."""

import pytest
import torch

from strive.models.attention import resolve_backend
from strive.models.forward import PolicyForward
from strive.models.loading import load_causal_lm
from tests.unit.test_attention import varied_batch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ["varlen", "sdpa_loop"])
def test_packed_equals_padded_on_cuda(tiny_qwen_dir, backend):
    device = torch.device("cuda")
    assert resolve_backend("auto", device, torch.bfloat16) in ("varlen", "flash_attn")
    batch = [x.to(device) for x in varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])]
    results = []
    for packed in (None, backend):
        model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16", device=device)
        logp, _ = PolicyForward(model, packed_backend=packed)(*batch)
        logp.sum().backward()
        results.append((logp.detach().float(), model.lm_head.weight.grad.float()))
    (lp0, g0), (lp1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(g1, g0, atol=2e-2, rtol=5e-2)


@pytest.mark.parametrize("packed", [None, "varlen"])
def test_compiled_layers_under_checkpointing_equal_eager(tiny_qwen_dir, packed):
    """use_torch_compile's in-place layer compile, recomputed under activation checkpointing: same log-probs and
    gradients as eager (bf16 tolerance), and the layers really run compiled."""
    from torch._dynamo.utils import counters

    from strive.models.forward import decoder_layers, enable_activation_checkpointing
    from strive.workers.fsdp import compile_in_place

    device = torch.device("cuda")
    batch = [x.to(device) for x in varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])]
    results = []
    counters.clear()
    for compiled in (False, True):
        model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16", device=device)
        enable_activation_checkpointing(model)
        wrapper = PolicyForward(model, packed_backend=packed).train()
        if compiled:
            compile_in_place(decoder_layers(model))
        logp, _ = wrapper(*batch)
        logp.sum().backward()
        results.append((logp.detach().float(), model.model.layers[0].mlp.up_proj.weight.grad.float()))
    (lp0, g0), (lp1, g1) = results
    assert counters["stats"]["unique_graphs"] >= 1 and counters["aot_autograd"]["ok"] >= 1
    torch.testing.assert_close(lp1, lp0, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(g1, g0, atol=2e-2, rtol=5e-2)


def test_varlen_aten_equals_varlen_attn():
    """`varlen_aten` (the flash kernel through its aten op, for the C++ wrapper) against torch's varlen_attn, which
    calls the same kernel: equal outputs and gradients on packed sequences with grouped K/V heads."""
    import torch.nn.functional as F

    from strive.models import attention

    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 130, 1, 64, 77])
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32).to(device)
    N, D = int(lengths.sum()), 64
    base = [torch.randn(N, h, D, generator=g, dtype=torch.bfloat16).to(device) for h in (14, 2, 2)]  # q, k, v
    results = []
    for impl in (attention._varlen_causal, attention._flash_varlen):
        q, k, v = (x.clone().requires_grad_() for x in base)
        out = impl(q, k, v, cu, int(lengths.max()), D ** -0.5)
        (out.float() * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("grad", [True, False])
def test_cpp_wrapper_compiles_packed_layers(tiny_qwen_dir, grad):
    """Layers compiled with Inductor's C++ wrapper (and the checkpoint that keeps attention outputs) run packed
    attention through `varlen_aten`, in an update's forward and backward and in a forward-only pass (where torch's
    varlen_attn failed: its List[int] argument), with the padded eager forward's log-probs and gradients."""
    from strive.models.forward import decoder_layers, enable_activation_checkpointing
    from strive.workers.fsdp import compile_in_place

    device = torch.device("cuda")
    backend = resolve_backend("varlen", device, torch.bfloat16, cpp_wrapper=True)
    assert backend == "varlen_aten"
    batch = [x.to(device) for x in varied_batch(260, [12, 3, 7, 1, 9], [8, 2, 0, 5, 8])]
    results = []
    torch._dynamo.reset()
    for compiled in (False, True):
        model = load_causal_lm(tiny_qwen_dir, dtype="bfloat16", device=device)
        enable_activation_checkpointing(model, keep_attention=True)
        wrapper = PolicyForward(model, packed_backend=backend if compiled else None).train(grad)
        if compiled:
            compile_in_place(decoder_layers(model), cpp_wrapper=True)
        with torch.set_grad_enabled(grad):
            logp, _ = wrapper(*batch)
        if grad:
            logp.sum().backward()
        weight = model.model.layers[0].mlp.up_proj.weight
        results.append((logp.detach().float(), weight.grad.float() if grad else None))
    (lp0, g0), (lp1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=2e-2, rtol=2e-2)
    if grad:
        torch.testing.assert_close(g1, g0, atol=2e-2, rtol=5e-2)
