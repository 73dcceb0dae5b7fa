"""The fused LM head (strive/models/head.py): values and gradients against float64 autograd references, chunked or
not, with and without the entropy's gradient; bf16 against the autograd head it replaces; the compiled kernels on
CUDA against the eager ones."""

import pytest
import torch
from torch import nn

from strive.models.forward import _autograd_head
from strive.models import head
from strive.models.head import linear_log_probs


def _inputs(N=7, H=16, V=50, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, H, generator=g) * scale).to(dtype)
    w = torch.randn(V, H, generator=g).to(dtype) / H ** 0.5
    y = torch.randint(0, V, (N,), generator=g)
    return h, w, y


def _reference(h, w, y, temperature):
    """float64 autograd: log p(y) and H = −Σ p log p of z = h·wᵀ / T."""
    z = (h @ w.t()) / temperature  # (N, V)
    logp_all = torch.log_softmax(z, -1)  # (N, V)
    return logp_all.gather(-1, y[:, None])[:, 0], -(logp_all.exp() * logp_all).sum(-1)


def _grads(fn, h, w, y, temperature, g_lp, g_ent, **kw):
    h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    logp, ent = fn(h, w, y, temperature, **kw)
    loss = (logp * g_lp).sum() + ((ent * g_ent).sum() if g_ent is not None else 0.0)
    loss.backward()
    return logp.detach(), ent.detach(), h.grad, w.grad


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize("entropy_grad", [True, False])
def test_values_and_gradients_match_float64(temperature, chunk, entropy_grad):
    h, w, y = _inputs()
    g_lp = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(1))
    g_ent = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(2)) if entropy_grad else None
    want = _grads(_reference, h.double(), w.double(), y, temperature, g_lp.double(),
                  None if g_ent is None else g_ent.double())
    got = _grads(lambda *a, **k: linear_log_probs(*a, chunk=chunk, with_entropy=True, entropy_grad=entropy_grad),
                 h, w, y, temperature, g_lp, g_ent)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)


def test_entropy_without_gradient_is_not_differentiable():
    h, w, y = _inputs()
    logp, ent = linear_log_probs(h.requires_grad_(True), w, y, with_entropy=True, entropy_grad=False)
    assert logp.requires_grad and not ent.requires_grad
    logp, ent = linear_log_probs(h, w, y, with_entropy=False)
    assert ent.numel() == 0


def test_only_what_needs_a_gradient_gets_one():
    """A frozen head (LoRA keeps the head frozen) gets no gradient; the hidden states still do."""
    h, w, y = _inputs()
    h.requires_grad_(True)
    logp, _ = linear_log_probs(h, w, y, chunk=2)
    logp.sum().backward()
    assert h.grad is not None and w.grad is None


def test_large_logits_stay_finite():
    """Logits in the thousands (a shift-free logsumexp or entropy would overflow or cancel)."""
    h, w, y = _inputs(scale=3000.0)
    want_lp, want_ent = _reference(h.double(), w.double(), y, 1.0)
    logp, ent = linear_log_probs(h, w, y, with_entropy=True)
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(logp.double(), want_lp, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ent.double(), want_ent, atol=1e-4, rtol=1e-4)


class _Head(nn.Module):
    """A bias-free head whose weight is any tensor (a leaf needing grad here), for the autograd path."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x @ self.weight.t()


def _bf16_pair(device, compiled=False, old_dtype=torch.bfloat16):
    """The fused head and the autograd head it replaces, bf16 inputs, same upstream gradients. old_dtype: the
    autograd head runs on the same bf16 values cast to this dtype."""
    h, w, y = _inputs(N=37, H=64, V=1000, dtype=torch.bfloat16, scale=1.0)
    h, w, y = h.to(device), w.to(device), y.to(device)
    g_lp, g_ent = torch.randn(37, device=device), torch.randn(37, device=device)
    old = _grads(lambda h_, w_, y_, t: _autograd_head(_Head(w_), h_, y_, t, 8, True, True),
                 h.to(old_dtype), w.to(old_dtype), y, 0.9, g_lp, g_ent)
    new = _grads(lambda h_, w_, y_, t: linear_log_probs(h_, w_, y_, t, chunk=8, with_entropy=True, compiled=compiled),
                 h, w, y, 0.9, g_lp, g_ent)
    return old, new


def test_bf16_on_a_cpu_without_bf16_units_computes_in_fp32(monkeypatch):
    """On a CPU without bf16 units a bf16 head multiplies in fp32 (head.py's doc): the numbers of the fp32 autograd
    head on the same bf16 values, gradients back in bf16."""
    monkeypatch.setattr(head, "_cpu_has_bf16", lambda: False)
    (old_lp, old_ent, old_gh, old_gw), (lp, ent, gh, gw) = _bf16_pair("cpu", old_dtype=torch.float32)
    torch.testing.assert_close(lp, old_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, old_ent, atol=1e-5, rtol=1e-5)
    assert gh.dtype == gw.dtype == torch.bfloat16
    torch.testing.assert_close(gh, old_gh.bfloat16(), atol=1e-2, rtol=1e-2)  # one bf16 rounding apart
    torch.testing.assert_close(gw, old_gw.bfloat16(), atol=1e-2, rtol=1e-2)


def test_bf16_on_a_cpu_with_bf16_units_keeps_bf16_products(monkeypatch):
    """With bf16 units the products stay bf16, as on a GPU: the forward gives the bf16 autograd head's log-probs
    (same bf16 logits, same fp32 statistics), not the fp32 head's."""
    monkeypatch.setattr(head, "_cpu_has_bf16", lambda: True)
    (old_lp, old_ent, _, _), (lp, ent, gh, gw) = _bf16_pair("cpu")
    (fp32_lp, _, _, _), _ = _bf16_pair("cpu", old_dtype=torch.float32)
    torch.testing.assert_close(lp, old_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, old_ent, atol=1e-5, rtol=1e-5)
    assert (lp - fp32_lp).abs().max() > 1e-4  # bf16 logits differ from fp32 ones: the check above can tell them apart
    assert gh.dtype == gw.dtype == torch.bfloat16
    assert head._product_dtype(torch.zeros(2, 2, dtype=torch.float16)) == torch.float32  # fp16 stays emulated


def test_bf16_matches_the_autograd_head_within_bf16():
    (old_lp, old_ent, old_gh, old_gw), (lp, ent, gh, gw) = _bf16_pair("cpu")
    torch.testing.assert_close(lp, old_lp, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(ent, old_ent, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gh.float(), old_gh.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gw.float(), old_gw.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_kernels_match_eager_on_cuda():
    (old_lp, old_ent, old_gh, old_gw), (lp, ent, gh, gw) = _bf16_pair("cuda", compiled=True)
    torch.testing.assert_close(lp, old_lp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ent, old_ent, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gh.float(), old_gh.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gw.float(), old_gw.float(), atol=2e-2, rtol=2e-2)
