"""The LM head and the log-softmax in one autograd step, chunk by chunk, with a hand-written backward.

Autograd's version of "logits = h·Wᵀ; log p(y) = z_y − logsumexp(z); H = −Σ p log p" (strive.algos.logits, under
activation checkpointing per chunk) passes over each chunk's (n, V) logits about a dozen times in fp32: the cast,
the logsumexp, the entropy's softmax and product, then in backward the whole forward again and the backward of
each of those ops (a zero-filled scatter for the gather, one more for the sum). Here:

- forward keeps only three numbers per token: log p(y), the log-normaliser and the entropy;
- backward recomputes one chunk's logits and writes the gradient of the logits in one expression,
      ∂/∂z_k [g_lp · log p_y + g_H · H] = g_lp · (1[k = y] − p_k) − g_H · p_k · (log p_k + H),   z = logits / T,
  divided by T, then the two matrix products (grad of h, grad of W accumulated over chunks).

On CUDA, with `compile=True`, the per-chunk elementwise work (the statistics; the gradient of the logits) is one
torch.compile'd function each, so the fp32 logits never reach memory. Elsewhere it runs eagerly, in place.
The numbers are the same as the autograd version's: logits in the weight's dtype, then fp32 (tests compare both
with float64 references). One exception, on the CPU: an fp16 head, and a bf16 head on a CPU without bf16 units
(strive.config.cpu_dtype.cpu_has_bf16), does its three matrix products in fp32 (one fp32 copy of the weight per
call, the weight's gradient accumulated in fp32), because such CPUs run a bf16 (n, V)·(V, H) product up to ~100×
slower than fp32 (bench/head_kernels.py; 13.8 s vs 0.1 s for 256 tokens of SmolLM2's head on the 2-core AVX2
machine). A CPU with bf16 units keeps bf16 products, which there are 2-4× faster than fp32 and need no copy
(bench/README.md, "The head on a CPU with bf16 units").

Shapes: hidden (N, H), weight (V, H), labels (N,) → log-probs (N,), entropy (N,) fp32.
Exercised by: pytest tests/unit/test_head.py
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch


def _stats(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
           with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, V) logits → log p(label) (n,), logsumexp of z = logits / T (n,), entropy (n,; empty if not asked).
    In place on its own fp32 buffers (eagerly: at most three (n, V) of them alive)."""
    z = logits.float()  # (n, V)
    if temperature != 1.0:
        z.div_(temperature)
    top = z.amax(-1, keepdim=True)  # (n, 1)
    z.sub_(top)  # shifted: max 0, so exp never overflows and the entropy's two terms stay small
    e = z.exp()  # (n, V)
    total = e.sum(-1)  # (n,)
    lse = total.log()  # (n,) shifted logsumexp
    logp = z.gather(-1, labels[:, None])[:, 0] - lse  # (n,)
    if not with_entropy:
        return logp, lse + top[:, 0], z.new_empty(0)
    p = e.div_(total[:, None])  # (n, V)
    ent = lse - (p * z).sum(-1)  # (n,) H = logsumexp − Σ p·z, shift-invariant
    return logp, lse + top[:, 0], ent


def _grad_logits(logits: torch.Tensor, labels: torch.Tensor, lse: torch.Tensor, ent: Optional[torch.Tensor],
                 g_lp: torch.Tensor, g_ent: Optional[torch.Tensor], temperature: float) -> torch.Tensor:
    """∂loss/∂logits (n, V) in the logits' dtype, from the upstream gradients of log p(y) and of H (module doc).
    In place on its own fp32 buffers (two (n, V))."""
    z = logits.float()  # (n, V)
    if temperature != 1.0:
        z.div_(temperature)
    logp = z.sub_(lse[:, None])  # (n, V) log p_k
    p = logp.exp()  # (n, V)
    if g_ent is None:
        grad = p.mul_(-g_lp[:, None])  # (n, V)
    else:  # −p · (g_lp + g_H · (log p + H))
        grad = logp.add_(ent[:, None]).mul_(g_ent[:, None]).add_(g_lp[:, None]).mul_(p).neg_()
    grad.scatter_add_(1, labels[:, None], g_lp[:, None])  # + g_lp at the label, still in fp32
    if temperature != 1.0:
        grad.div_(temperature)
    return grad.to(logits.dtype)


_COMPILED: dict[str, Callable] = {}


def _product_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype of the head's matrix products: fp32 for a half-precision head on a CPU that would emulate it
    (module doc), else the weight's."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16):
        return weight.dtype
    if weight.dtype == torch.bfloat16 and _cpu_has_bf16():
        return weight.dtype
    return torch.float32


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    from strive.config.cpu_dtype import cpu_has_bf16

    return cpu_has_bf16()


def _kernels(compiled: bool) -> tuple[Callable, Callable]:
    if not compiled:
        return _stats, _grad_logits
    if not _COMPILED:
        _COMPILED["stats"] = torch.compile(_stats, dynamic=True)
        _COMPILED["grad"] = torch.compile(_grad_logits, dynamic=True)
    return _COMPILED["stats"], _COMPILED["grad"]


class _LinearLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, chunk, with_entropy, entropy_grad, compiled):
        stats, _ = _kernels(compiled)
        n, mm = hidden.shape[0], _product_dtype(weight)
        w = weight.to(mm)  # (V, H); a copy only where the products run in fp32
        logp = hidden.new_empty(n, dtype=torch.float32)  # (N,)
        lse = torch.empty_like(logp)  # (N,)
        ent = torch.empty_like(logp) if with_entropy else logp.new_empty(0)  # (N,) or (0,)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            lp, ls, en = stats(hidden[s:e].to(mm) @ w.t(), labels[s:e], temperature, with_entropy)  # (n, V) logits
            logp[s:e], lse[s:e] = lp, ls
            if with_entropy:
                ent[s:e] = en
        ctx.save_for_backward(hidden, weight, labels, lse, ent)
        ctx.temperature, ctx.chunk, ctx.compiled = temperature, chunk, compiled
        ctx.entropy_grad = with_entropy and entropy_grad
        if not ctx.entropy_grad:
            ctx.mark_non_differentiable(ent)
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        hidden, weight, labels, lse, ent = ctx.saved_tensors
        _, grad_fn = _kernels(ctx.compiled)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if g_lp is None and g_ent is None or not (want_h or want_w):
            return (None,) * 8
        if g_lp is None:
            g_lp = lse.new_zeros(lse.shape)
        if not ctx.entropy_grad:
            g_ent = None
        mm = _product_dtype(weight)
        w = weight.to(mm)  # (V, H); a copy only where the products run in fp32
        grad_h = torch.empty_like(hidden) if want_h else None  # (N, H)
        grad_w = torch.zeros_like(w) if want_w else None  # (V, H), accumulated chunk by chunk
        for s in range(0, hidden.shape[0], ctx.chunk):
            e = min(hidden.shape[0], s + ctx.chunk)
            h = hidden[s:e].to(mm)  # (n, H)
            dz = grad_fn(h @ w.t(), labels[s:e], lse[s:e], ent[s:e] if g_ent is not None else None,
                         g_lp[s:e], g_ent[s:e] if g_ent is not None else None, ctx.temperature)  # (n, V)
            if want_h:
                if mm == hidden.dtype:
                    torch.mm(dz, w, out=grad_h[s:e])
                else:
                    grad_h[s:e] = dz @ w
            if want_w:
                grad_w.addmm_(dz.t(), h)
        return grad_h, grad_w.to(weight.dtype) if want_w else None, None, None, None, None, None, None


def linear_log_probs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                     chunk: int = 1024, with_entropy: bool = False, entropy_grad: bool = True,
                     compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(hidden·weightᵀ / T)[labels] (N,) and the entropy (N,; empty unless with_entropy), chunk tokens
    at a time. entropy_grad=False: the entropy is reported only and carries no gradient. compiled: the elementwise
    work through torch.compile (CUDA)."""
    return _LinearLogProbs.apply(hidden, weight, labels, float(temperature), max(1, int(chunk)), with_entropy,
                                 entropy_grad, compiled)
