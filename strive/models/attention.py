"""Packed (padding-free) attention without an N × N mask.

With `use_remove_padding=True` a micro-batch's real tokens are packed into one row of N tokens. Handed to
transformers' SDPA path, such a row gets a block-diagonal N × N mask, so attention costs N² instead of Σ len²
and the mask itself is N² memory: on one H200 that made the packed path 3.7× slower than the padded one. Here the
packed row's sequence boundaries (`cu_seqlens`, from the per-row lengths) go to a kernel that attends within each
sequence only. Backends (`actor_rollout_ref.model.packed_attention`, `critic.model.packed_attention`):

- `varlen`: `torch.nn.attention.varlen.varlen_attn`, flash kernels shipped inside torch (CUDA only, bf16/fp16);
  where the layers are compiled with Inductor's C++ wrapper, the same kernel through its aten op (`varlen_aten`);
- `flash_attn`: flash-attn's `flash_attn_varlen_func`, where that package is installed (CUDA only);
- `sdpa_loop`: `scaled_dot_product_attention` once per sequence, causal, no mask (any device; the CPU choice);
- `auto` (default): `flash_attn` if installed, else `varlen` on CUDA in bf16/fp16, else `sdpa_loop`; on CUDA a
  micro-batch small enough to be bound by kernel launches runs padded instead (`CUDA_PADDED_UP_TO`).

It is wired in through transformers' own extension point: the model's attention implementation becomes
`strive_packed` (`AttentionInterface` + `AttentionMaskInterface`). A packed forward passes `cu_seq_lens_q` (and
the backend) as keyword arguments, which transformers forwards to every attention call; a padded forward passes an
attention mask and runs transformers' own SDPA with it, exactly as before.

    pytest tests/unit/test_attention.py -q
    python bench/train_kernels.py            # padded vs packed with each backend, forward + backward
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Optional

import torch
import torch.nn.functional as F

from strive.models.attention_names import BACKENDS

IMPLEMENTATION = "strive_packed"
CUDA_PADDED_UP_TO = 8192
"""Under `auto` on CUDA, a micro-batch of at most this many padded tokens (rows × width) runs padded. At that size a
step is bound by kernel launches, not the GPU, and the varlen op's Python-side autograd costs more than the padding
saves (one H200, Qwen2.5-0.5B shape: 4 × 1024 tokens 0.095 s padded vs 0.106 s packed; 12 rows of 7.5k real tokens
0.148 s padded vs 0.127 s packed; bench/train_kernels.py)."""


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype, key: str = "packed_attention",
                    cpp_wrapper: bool = False) -> str:
    """The backend `name` (the value of config key `key`) stands for on this device and compute dtype; an error
    naming the key for one that cannot run there. cpp_wrapper (layers compiled with Inductor's C++ wrapper): `varlen`
    becomes `varlen_aten`, the same flash kernel called without varlen_attn's custom op (`_flash_varlen`)."""
    resolved = _resolve(name, device, dtype, key)
    return "varlen_aten" if cpp_wrapper and resolved == "varlen" else resolved


def _resolve(name: str, device: torch.device, dtype: torch.dtype, key: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{key}={name!r}: choose one of {', '.join(BACKENDS)}")
    half = dtype in (torch.bfloat16, torch.float16)
    if name == "auto":
        if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attn"
        return "varlen" if device.type == "cuda" and half and _varlen() is not None else "sdpa_loop"
    if name in ("varlen", "flash_attn") and not (device.type == "cuda" and half):
        raise ValueError(f"{key}={name} needs CUDA and a bf16/fp16 compute dtype (here: {device.type}, {dtype}); "
                         "use sdpa_loop or auto")
    if name == "varlen" and _varlen() is None:
        raise ValueError(f"{key}=varlen needs torch.nn.attention.varlen (torch ≥ 2.10); use auto")
    if name == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(f"{key}=flash_attn needs the flash-attn package (pip install flash-attn); use auto")
    return name


def padded_up_to(name: str, device: torch.device) -> int:
    """Micro-batches of at most this many padded tokens run padded under the backend choice `name` (0: never)."""
    return CUDA_PADDED_UP_TO if name == "auto" and device.type == "cuda" else 0


def use_packed_attention(model: torch.nn.Module) -> None:
    """Switch a transformers model to the `strive_packed` attention implementation (padded calls keep SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, packed_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, _padding_mask)
    model.set_attn_implementation(IMPLEMENTATION)


def packed_kwargs(lengths: torch.Tensor, backend: str, longest: Optional[int] = None) -> dict:
    """The keyword arguments a packed forward passes down to attention; lengths (B,) real tokens per row, longest
    their max where the caller knows it (reading it from a device tensor waits for the device)."""
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (B + 1,)
    longest = int(lengths.max()) if longest is None else longest
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest,
            "packed_backend": backend}


def _padding_mask(*args, attention_mask: Optional[torch.Tensor] = None, **kwargs):
    """Mask for `strive_packed`: none for a packed (or unpadded) row, transformers' SDPA mask for a padded batch."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def packed_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: Optional[torch.Tensor], scaling: Optional[float] = None,
                             dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query (1, H, N, D), key/value (1, Hkv, N, D) → (1, N, H, D), None."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    backend = kwargs.get("packed_backend", "sdpa_loop")
    if backend == "sdpa_loop":
        out = _sdpa_loop(query[0], key[0], value[0], cu, scaling)  # (H, N, D)
        return out.transpose(0, 1).unsqueeze(0), None
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (N, H, D), (N, Hkv, D)
    longest = int(kwargs["max_length_q"])
    if backend == "flash_attn":
        from flash_attn import flash_attn_varlen_func

        out = flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=True, softmax_scale=scaling)
    elif backend == "varlen_aten":
        out = _flash_varlen(q, k, v, cu, longest, scaling)
    else:
        out = _varlen_causal(q, k, v, cu, longest, scaling)
    return out.unsqueeze(0), None  # (1, N, H, D)


def _sdpa_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
               scaling: Optional[float]) -> torch.Tensor:
    """Causal SDPA per sequence: q (H, N, D), k/v (Hkv, N, D) → (H, N, D).

    Grouped-query attention as a 4-D batch: K/V head j and its G query heads are batch entry j, K/V expanded (a view,
    no copy) over G. 4-D inputs take the CPU's flash kernel, which saves only the output and the log-normaliser for
    backward. 3-D inputs with K/V copied per query head took the math kernel, which saves each sequence's (H, n, n)
    attention weights: in the bf16 demo that put the update's peak 0.4 GB higher and was no faster
    (bench/README.md, "CPU: the demo step side by side on a CPU with bf16 units").

    The sequences are cut with one `split` per tensor, whose backward concatenates the sequences' gradients once.
    Slicing each sequence out instead made backward zero-fill a full (Hkv, G, N, D) gradient per sequence and add
    it up: work growing with sequences × tokens (64 sequences of ~140 tokens: 0.74 s per layer against 0.46 s)."""
    hkv, n, d = k.shape
    groups = q.shape[0] // hkv
    q4 = q.view(hkv, groups, n, d)  # (Hkv, G, N, D): query head j·G + g reads K/V head j
    k4, v4 = (x[:, None].expand(hkv, groups, n, d) for x in (k, v))  # (Hkv, G, N, D), views
    bounds = cu.tolist()
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    outs = [F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scaling)
            for qi, ki, vi in zip(q4.split(sizes, 2), k4.split(sizes, 2), v4.split(sizes, 2))]  # (Hkv, G, n_i, D)
    return torch.cat(outs, dim=2).view(q.shape)


def _varlen_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, longest: int,
                   scaling: Optional[float]) -> torch.Tensor:
    """torch's varlen flash attention, causal: q (N, H, D), k/v (N, Hkv, D) → (N, H, D)."""
    fn, params = _varlen()
    if "enable_gqa" not in params and k.shape[1] != q.shape[1]:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    extra = {"enable_gqa": True} if "enable_gqa" in params else {}
    # torch 2.10 spells causality is_causal=True; later releases a (left, right) window of (-1, 0)
    extra.update({"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True})
    return fn(q, k, v, cu, cu, longest, longest, scale=scaling, **extra)


def _flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, longest: int,
                  scaling: Optional[float]) -> torch.Tensor:
    """torch's flash kernel, causal, as the aten op itself: q (N, H, D), k/v (N, Hkv, D) → (N, H, D); the kernel
    takes grouped K/V heads as they are. It is the kernel varlen_attn runs on CUDA (torch 2.13 calls it from its
    Python custom op `torch_attn::_varlen_attn`), but every argument is a tensor, int, float or bool, which Inductor's
    C++ wrapper can pass: the custom op's causal window is a List[int], which it cannot ("arg type List[int] is not
    yet supported by custom_op_wrapper"). Its backward is aten's own (C++) derivative. Used where the layers are
    compiled with the C++ wrapper; not measured on a GPU yet (bench/README.md)."""
    out = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, longest, longest, 0.0, True, False, scale=scaling)
    return out[0]  # (output, log-sum-exp, rng state, unused, debug mask)


@functools.lru_cache(maxsize=None)
def _varlen():
    """(varlen_attn, its parameter names) where this torch has it, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)
